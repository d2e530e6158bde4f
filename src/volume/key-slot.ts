import { unwrapKey, wrapKey } from '../crypto/key-wrap'
import { deriveFromKeyfile, deriveFromServiceSecret, isServiceSecret, newServiceSecret } from '../crypto/secret-kdf'
import { deriveFromPassphrase } from '../crypto/passphrase-kdf'
import { normalizeRecoveryKey } from '../crypto/recovery-key'
import { AuthenticationError } from '../crypto/errors'
import { SecretKey, randomBytes } from '../crypto/secret-key'
import { CommandSlot, KeyfileSlot, KeySlot, MAX_SERVICE_BLOB, PassphraseSlot, VolumeConfig, checkUnlockCost, slotAad, slotName } from './config'
import { allowedUnwrap, runKeyService, trimLineEnd } from './key-service'
import { VolumeError } from './errors'

/**
 * What a user unlocks with. A passphrase is tried against passphrase slots only (a recovery
 * key is one), a key file's bytes against key-file slots only, and a secret a key service
 * gave back against key-service slots only.
 */
export type Credential =
  | { kind: 'passphrase', secret: Buffer }
  | { kind: 'keyfile', secret: Buffer }
  | { kind: 'service', secret: Buffer }

/** What an unlock of an ephemeral volume says (it cannot be). */
export const EPHEMERAL_MESSAGE = 'this is an ephemeral volume: its key existed only in the daemon that made it, and nothing can open it (if you did not make it with mount --ephemeral, restore sealfs.conf from a backup: an ephemeral mount would wipe it)'

/** Who a new slot is: its id, name and creation time (all authenticated with its wrap). */
export interface SlotIdentity { id: number, name: string, created: string }

/** Fills in a new slot's wrapped master key under `kek` (disposed here), binding all its fields. */
function sealSlot<S extends KeySlot> (config: VolumeConfig, slot: S, kek: SecretKey, masterKey: SecretKey): S {
  try {
    slot.wrappedKey = wrapKey(kek, masterKey, slotAad(config, slot)).toString('hex')
  } finally {
    kek.dispose()
  }
  return slot
}

/** Makes a passphrase slot: Argon2id(passphrase, salt) is the key that wraps the master key. */
export async function createPassphraseSlot (
  config: VolumeConfig, who: SlotIdentity, masterKey: SecretKey, passphrase: Buffer,
  cost: { opslimit: number, memlimit: number }, recovery = false
): Promise<PassphraseSlot> {
  const salt = randomBytes(16)
  const slot: PassphraseSlot = {
    id: who.id, slotVersion: 2, name: who.name, created: who.created, kind: 'passphrase', kdf: 'argon2id',
    opslimit: cost.opslimit, memlimit: cost.memlimit, salt: salt.toString('hex'), ...(recovery ? { recovery: true } : {}), wrappedKey: ''
  }
  return sealSlot(config, slot, await deriveFromPassphrase(passphrase, { ...cost, salt }), masterKey)
}

/** Makes a key-file slot: BLAKE2b(key file, salt) is the key that wraps the master key. */
export function createKeyfileSlot (config: VolumeConfig, who: SlotIdentity, masterKey: SecretKey, keyfile: Buffer): KeyfileSlot {
  const salt = randomBytes(16)
  const slot: KeyfileSlot = { id: who.id, slotVersion: 2, name: who.name, created: who.created, kind: 'keyfile', kdf: 'blake2b', salt: salt.toString('hex'), wrappedKey: '' }
  return sealSlot(config, slot, deriveFromKeyfile(keyfile, salt), masterKey)
}

/**
 * Makes a key-service slot: a new random secret goes to `wrapCmd` on its stdin, and what it
 * prints (the blob) is stored. The blob is then handed to `unwrapCmd` at once: a slot whose
 * service cannot give the secret back is never stored.
 */
export async function createCommandSlot (config: VolumeConfig, who: SlotIdentity, masterKey: SecretKey, wrapCmd: string, unwrapCmd: string): Promise<CommandSlot> {
  const secret = newServiceSecret()
  const line = Buffer.concat([secret, Buffer.from('\n')])
  let blob: Buffer | null = null
  try {
    blob = await runKeyService({ shell: wrapCmd }, line, MAX_SERVICE_BLOB, 'the wrap command')
    if (blob.length === 0) throw new VolumeError('key-service', 'the wrap command printed nothing')
    const back = await runKeyService({ shell: unwrapCmd }, blob, 4096, 'the unwrap command')
    const same = trimLineEnd(back).equals(secret)
    back.fill(0)
    if (!same) throw new VolumeError('key-service', 'the unwrap command did not give back what the wrap command was given')
    const salt = randomBytes(16)
    const slot: CommandSlot = {
      id: who.id, slotVersion: 2, name: who.name, created: who.created, kind: 'command', kdf: 'blake2b',
      salt: salt.toString('hex'), unwrapCmd, blob: blob.toString('base64'), wrappedKey: ''
    }
    return sealSlot(config, slot, deriveFromServiceSecret(secret, salt), masterKey)
  } finally {
    secret.fill(0)
    line.fill(0)
  }
}

/**
 * Asks a key-service slot's service for its secret: the credential that opens that slot
 * (unlockSlot with `only` = its name). Throws VolumeError('key-service') when the service
 * fails or refuses, or answers with something that is not a secret.
 */
export async function askKeyService (slot: CommandSlot): Promise<Credential> {
  const what = `key service of slot '${slotName(slot)}': the unwrap command`
  const run = allowedUnwrap(slot.unwrapCmd)
  if (run === null) {
    throw new VolumeError('key-service', `key service of slot '${slotName(slot)}': its unwrap command is neither built in nor in the local allow-list (${process.env.SEALFS_UNWRAP_COMMANDS ?? '/etc/sealfs/unwrap-commands'}), so it was not run`)
  }
  const out = await runKeyService(run, Buffer.from(slot.blob, 'base64'), 4096, what)
  const secret = Buffer.from(trimLineEnd(out))
  out.fill(0)
  if (!isServiceSecret(secret)) {
    secret.fill(0)
    throw new VolumeError('key-service', `${what} did not print a slot secret`)
  }
  return { kind: 'service', secret }
}

/** The key that opens one slot with this credential, or null if the slot is of another kind. */
async function slotKek (slot: KeySlot, credential: Credential): Promise<SecretKey | null> {
  const salt = Buffer.from(slot.salt, 'hex')
  if (slot.kind === 'keyfile') return credential.kind === 'keyfile' ? deriveFromKeyfile(credential.secret, salt) : null
  if (slot.kind === 'command') return credential.kind === 'service' && isServiceSecret(credential.secret) ? deriveFromServiceSecret(credential.secret, salt) : null
  if (credential.kind !== 'passphrase') return null
  if (slot.recovery !== true) return await deriveFromPassphrase(credential.secret, { opslimit: slot.opslimit, memlimit: slot.memlimit, salt })
  // A recovery key counts however it was typed; something that is not one cannot open it.
  const canonical = normalizeRecoveryKey(credential.secret)
  if (canonical === null) return null
  try {
    return await deriveFromPassphrase(canonical, { opslimit: slot.opslimit, memlimit: slot.memlimit, salt })
  } finally {
    canonical.fill(0)
  }
}

/**
 * Tries the slots the credential can open (only the one named `only`, if given); the first
 * that authenticates gives the master key and says which slot it was.
 */
export async function unlockSlot (config: VolumeConfig, credential: Credential, only?: string): Promise<{ masterKey: SecretKey, slot: KeySlot }> {
  if (config.ephemeral === true) {
    throw new VolumeError('ephemeral', EPHEMERAL_MESSAGE)
  }
  const slots = only === undefined ? config.slots : config.slots.filter(s => slotName(s) === only)
  if (slots.length === 0) throw new VolumeError('no-such-slot', `the volume has no key slot named '${only ?? ''}'`)
  if (credential.kind === 'passphrase') checkUnlockCost(slots, 'the volume config')
  let tried = 0
  for (const slot of slots) {
    const kek = await slotKek(slot, credential)
    if (kek === null) continue
    tried++
    try {
      return { masterKey: unwrapKey(kek, Buffer.from(slot.wrappedKey, 'hex'), slotAad(config, slot), 'key slot'), slot }
    } catch (e) {
      if (!(e instanceof AuthenticationError)) throw e
    } finally {
      kek.dispose()
    }
  }
  throw new VolumeError('wrong-passphrase', wrongCredential(credential, slots, tried, only))
}

function wrongCredential (credential: Credential, slots: KeySlot[], tried: number, only: string | undefined): string {
  const kind = credential.kind === 'keyfile' ? 'key-file' : credential.kind === 'service' ? 'key-service' : 'passphrase'
  if (tried === 0) return `the volume has no ${kind} slot${only !== undefined ? ` named '${only}'` : ''}`
  if (credential.kind === 'keyfile') return 'wrong key file (or the volume config was modified)'
  if (credential.kind === 'service') return 'the key service gave a secret that does not open its slot (or the volume config was modified)'
  const asRecovery = normalizeRecoveryKey(credential.secret)
  asRecovery?.fill(0)
  if (asRecovery !== null && slots.some(s => s.kind === 'passphrase' && s.recovery === true)) return 'wrong recovery key (or the volume config was modified)'
  return 'wrong passphrase (or the volume config was modified)'
}

/**
 * The slot, its master key rewrapped for `next` (a new master key and version), if
 * `credential` opens it in `config`; null if it does not. The slot keeps its KDF, salt and
 * fields: the same credential opens it afterwards.
 */
export async function resealSlot<S extends KeySlot> (config: VolumeConfig, next: VolumeConfig, slot: S, credential: Credential, masterKey: SecretKey): Promise<S | null> {
  const kek = await slotKek(slot, credential)
  if (kek === null) return null
  try {
    try {
      unwrapKey(kek, Buffer.from(slot.wrappedKey, 'hex'), slotAad(config, slot), 'key slot').dispose()
    } catch (e) {
      if (e instanceof AuthenticationError) return null
      throw e
    }
    const fresh: S = { ...slot, wrappedKey: '' }
    fresh.wrappedKey = wrapKey(kek, masterKey, slotAad(next, fresh)).toString('hex')
    return fresh
  } finally {
    kek.dispose()
  }
}
