import { CommandSlot, VolumeConfig, readConfig, slotName } from '../volume/config'
import { VolumeError } from '../volume/errors'
import { Credential, EPHEMERAL_MESSAGE, askKeyService } from '../volume/key-slot'
import { checkDir } from '../volume/volume'
import { CliError } from './exit-codes'
import { CredentialOptions, readCredential, readPassphrase } from './passphrase'

/** A credential, and the one slot it is for (if only one is to be tried). */
export interface UnlockChoice { credential: Credential, slot?: string }

/**
 * The credential to unlock `cipher` with. One given on the command line (--passfile,
 * --extpass, --keyfile) is used as it is. Else the volume's key-service slots are asked
 * first, without asking the user, the way clevis unlocks a LUKS volume by itself: the first
 * service that answers gives the credential for its slot (a slot's unwrap command runs only
 * if allowed: see allowedUnwrap). If none answers, the terminal prompt, which says so;
 * without a terminal, the reason the services failed. `services` false: straight to the prompt
 * (what is wanted is the user's own passphrase slot).
 */
export async function chooseCredential (cipher: string, o: CredentialOptions, slot?: string, checked?: VolumeConfig, services = true): Promise<UnlockChoice> {
  if (o.passfile !== undefined || o.extpass !== undefined || o.keyfile !== undefined) return { credential: await readCredential(o), slot }
  checkDir(cipher)
  // The config the caller already checked (a pinned volume ID), not a second read of it.
  const config = checked ?? readConfig(cipher)
  if (config.ephemeral === true) throw new VolumeError('ephemeral', EPHEMERAL_MESSAGE)
  const serviceSlots = services ? config.slots.filter((s): s is CommandSlot => s.kind === 'command' && (slot === undefined || slotName(s) === slot)) : []
  let failure: VolumeError | null = null
  for (const s of serviceSlots) {
    try {
      return { credential: await askKeyService(s), slot: slotName(s) }
    } catch (e) {
      if (!(e instanceof VolumeError)) throw e
      failure = e
    }
  }
  if (failure !== null && slot !== undefined) throw failure  // that slot was the only one to try
  let passphrase: Buffer
  try {
    passphrase = await readPassphrase({}, false, failure !== null ? 'Passphrase (no key service answered)' : 'Passphrase')
  } catch (e) {
    // No terminal to fall back to: the key service's failure is the reason to report.
    if (failure !== null && e instanceof CliError && e.message.startsWith('no terminal')) throw failure
    throw e
  }
  return { credential: { kind: 'passphrase', secret: passphrase }, slot }
}
