import { unwrapKey, wrapKey } from '../crypto/key-wrap'
import { deriveFromPassphrase } from '../crypto/passphrase-kdf'
import { AuthenticationError } from '../crypto/errors'
import { SecretKey, randomBytes } from '../crypto/secret-key'
import { PassphraseSlot, VolumeConfig, slotAad } from './config'
import { VolumeError } from './errors'

/** Makes a passphrase slot: Argon2id(passphrase, salt) is the key that wraps the master key. */
export async function createPassphraseSlot (
  config: VolumeConfig, id: number, masterKey: SecretKey, passphrase: Buffer, cost: { opslimit: number, memlimit: number }
): Promise<PassphraseSlot> {
  const salt = randomBytes(16)
  const slot: PassphraseSlot = { id, kind: 'passphrase', kdf: 'argon2id', opslimit: cost.opslimit, memlimit: cost.memlimit, salt: salt.toString('hex'), wrappedKey: '' }
  const kek = await deriveFromPassphrase(passphrase, { ...cost, salt })
  try {
    slot.wrappedKey = wrapKey(kek, masterKey, slotAad(config, slot)).toString('hex')
  } finally {
    kek.dispose()
  }
  return slot
}

/** Tries each passphrase slot; the first that authenticates gives the master key. */
export async function unlockWithPassphrase (config: VolumeConfig, passphrase: Buffer): Promise<SecretKey> {
  for (const slot of config.slots) {
    if (slot.kind !== 'passphrase') continue
    const kek = await deriveFromPassphrase(passphrase, { opslimit: slot.opslimit, memlimit: slot.memlimit, salt: Buffer.from(slot.salt, 'hex') })
    try {
      return unwrapKey(kek, Buffer.from(slot.wrappedKey, 'hex'), slotAad(config, slot), 'key slot')
    } catch (e) {
      if (!(e instanceof AuthenticationError)) throw e
    } finally {
      kek.dispose()
    }
  }
  throw new VolumeError('wrong-passphrase', 'wrong passphrase (or the volume config was modified)')
}
