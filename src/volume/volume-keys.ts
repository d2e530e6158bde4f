import { unwrapKey, wrapKey } from '../crypto/key-wrap'
import { SecretKey } from '../crypto/secret-key'
import { NAME_KEYS, NameKeysField, RotationField, VolumeConfig } from './config'
import { VolumeError } from './errors'

/**
 * Subkeys of a master key (libsodium crypto_kdf ids and contexts; docs/FORMAT.md §4). In a
 * format-1 volume the name, link and xattr keys are subkeys of the master key too; in a
 * format-2 volume they are kept in the config, wrapped under `nameKeyWrap`.
 */
const SUBKEYS = {
  dekWrap: [1, 'sealfsdk'],
  nameEnc: [2, 'sealfsnm'],
  nameMac: [3, 'sealfsnm'],
  link: [4, 'sealfslk'],
  xattr: [5, 'sealfsxa'],
  nameKeyWrap: [6, 'sealfsnk'],
  retiredWrap: [7, 'sealfsrt'],
  rotationJournal: [8, 'sealfsrj']
} as const

type NameKeyName = typeof NAME_KEYS[number]

function derive (masterKey: SecretKey, [id, ctx]: readonly [number, string]): SecretKey {
  return masterKey.derive(id, ctx)
}

function nameKeyAad (config: VolumeConfig, which: NameKeyName): Buffer {
  return Buffer.from(`sealfs-namekey-v1\nvolumeId=${config.volumeId}\nmasterKeyVersion=${config.masterKeyVersion}\nkey=${which}\n`, 'ascii')
}

/** Binds the retired key to its volume, both versions, and whether the rotation re-encrypts (which an edit must not turn off). */
function retiredAad (config: VolumeConfig, fromVersion: number, reencrypt: boolean): Buffer {
  return Buffer.from(`sealfs-retired-v1\nvolumeId=${config.volumeId}\nmasterKeyVersion=${config.masterKeyVersion}\nfromVersion=${fromVersion}\n${reencrypt ? 'reencrypt=true\n' : ''}`, 'ascii')
}

/** The key that authenticates a rotation's journal (docs/FORMAT.md §2.2). */
export function rotationJournalKey (masterKey: SecretKey): SecretKey {
  return derive(masterKey, SUBKEYS.rotationJournal)
}

/** The DEK-wrap key of a master key: what wraps every file's data key of its version. */
export function dekWrapKey (masterKey: SecretKey): SecretKey {
  return derive(masterKey, SUBKEYS.dekWrap)
}

/**
 * The keys of names, symlink targets and xattrs of the volume `config` describes, opened with
 * its current master key. Throws VolumeError('damaged-config') if the config's wrapped name
 * keys do not authenticate (the master key opened a slot, so the config was modified).
 */
export function openNameKeys (config: VolumeConfig, masterKey: SecretKey): Record<NameKeyName, SecretKey> {
  if (config.nameKeys === undefined) {
    return { nameEnc: derive(masterKey, SUBKEYS.nameEnc), nameMac: derive(masterKey, SUBKEYS.nameMac), link: derive(masterKey, SUBKEYS.link), xattr: derive(masterKey, SUBKEYS.xattr) }
  }
  const kek = derive(masterKey, SUBKEYS.nameKeyWrap)
  const out: Partial<Record<NameKeyName, SecretKey>> = {}
  try {
    for (const k of NAME_KEYS) out[k] = unwrapKey(kek, Buffer.from(config.nameKeys[k], 'hex'), nameKeyAad(config, k), 'name key')
    return out as Record<NameKeyName, SecretKey>
  } catch {
    for (const k of Object.values(out)) k.dispose()
    throw new VolumeError('damaged-config', 'the volume config\'s name keys do not authenticate (the config was modified)')
  } finally {
    kek.dispose()
  }
}

/** The `nameKeys` field of `next` (its volume ID and master-key version), wrapping `keys` under `masterKey`. */
export function wrapNameKeys (next: VolumeConfig, masterKey: SecretKey, keys: Record<NameKeyName, SecretKey>): NameKeysField {
  const kek = derive(masterKey, SUBKEYS.nameKeyWrap)
  try {
    const out: Partial<NameKeysField> = {}
    for (const k of NAME_KEYS) out[k] = wrapKey(kek, keys[k], nameKeyAad(next, k)).toString('hex')
    return out as NameKeysField
  } finally {
    kek.dispose()
  }
}

/** The `rotation` field of `next`: the retired version's DEK-wrap key, wrapped under `next`'s master key. */
export function wrapRetiredKey (next: VolumeConfig, masterKey: SecretKey, fromVersion: number, retired: SecretKey, reencrypt: boolean): RotationField {
  const kek = derive(masterKey, SUBKEYS.retiredWrap)
  try {
    return { fromVersion, retiredKey: wrapKey(kek, retired, retiredAad(next, fromVersion, reencrypt)).toString('hex'), ...(reencrypt ? { reencrypt: true as const } : {}) }
  } finally {
    kek.dispose()
  }
}

/** The retired DEK-wrap key of an unfinished rotation. */
export function openRetiredKey (config: VolumeConfig, masterKey: SecretKey): SecretKey {
  const r = config.rotation
  if (r === undefined) throw new Error('no rotation in progress')
  const kek = derive(masterKey, SUBKEYS.retiredWrap)
  try {
    return unwrapKey(kek, Buffer.from(r.retiredKey, 'hex'), retiredAad(config, r.fromVersion, r.reencrypt === true), 'retired key')
  } catch {
    throw new VolumeError('damaged-config', 'the volume config\'s unfinished rotation does not authenticate (the config was modified)')
  } finally {
    kek.dispose()
  }
}
