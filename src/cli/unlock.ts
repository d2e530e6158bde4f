import { CommandSlot, readConfigFile, slotName } from '../volume/config'
import { VolumeError } from '../volume/errors'
import { Credential, askKeyService } from '../volume/key-slot'
import { checkDir } from '../volume/volume'
import { CliError } from './exit-codes'
import { CredentialOptions, readCredential, readPassphrase } from './passphrase'

/** A credential, and the one slot it is for (if only one is to be tried). */
export interface UnlockChoice { credential: Credential, slot?: string }

/**
 * The credential to unlock `cipher` with. One given on the command line (--passfile,
 * --extpass, --keyfile) is used as it is. Else the volume's key-service slots are asked
 * first, without asking the user, the way clevis unlocks a LUKS volume by itself: the first
 * service that answers gives the credential for its slot. If none answers, the terminal
 * prompt; without a terminal, the reason the services failed.
 */
export async function chooseCredential (cipher: string, o: CredentialOptions, slot?: string): Promise<UnlockChoice> {
  if (o.passfile !== undefined || o.extpass !== undefined || o.keyfile !== undefined) return { credential: await readCredential(o), slot }
  checkDir(cipher)
  const { config, trusted } = readConfigFile(cipher)
  const services = config.slots.filter((s): s is CommandSlot => s.kind === 'command' && (slot === undefined || slotName(s) === slot))
  let failure: VolumeError | null = null
  if (services.length > 0 && !trusted) {
    failure = new VolumeError('key-service', `the key-service slots of ${cipher} were not tried: its sealfs.conf is owned by another user or writable by others (sealfs runs only commands from a config of yours or root's)`)
  } else {
    for (const s of services) {
      try {
        return { credential: await askKeyService(s), slot: slotName(s) }
      } catch (e) {
        if (!(e instanceof VolumeError)) throw e
        failure = e
      }
    }
  }
  if (failure !== null && slot !== undefined) throw failure  // that slot was the only one to try
  try {
    return { credential: { kind: 'passphrase', secret: await readPassphrase({}, false) }, slot }
  } catch (e) {
    // No terminal to fall back to: the key service's failure is the reason to report.
    if (failure !== null && e instanceof CliError && e.message.startsWith('no terminal')) throw failure
    throw e
  }
}
