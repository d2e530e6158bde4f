import { unwrapKey, wrapKey } from '../crypto/key-wrap'
import { SecretKey } from '../crypto/secret-key'

/** The AAD of a wrapped DEK: binds it to its volume, its file, the master-key version and the header flags (docs/FORMAT.md §6). */
function dekAad (volumeId: Buffer, fileId: Buffer, keyVersion: number, flags: number): Buffer {
  const v = Buffer.alloc(6)
  v.writeUInt32BE(keyVersion, 0)
  v.writeUInt16BE(flags, 4)
  return Buffer.concat([Buffer.from('sealfs-dek-v1', 'ascii'), volumeId, fileId, v])
}

/**
 * A file's DEK wrapped under the DEK-wrap key of master-key version `keyVersion`, with a random
 * nonce or `nonce` (a link of the header's nonce chain: docs/FORMAT.md §6.4).
 */
export function wrapDek (kek: SecretKey, dek: SecretKey, volumeId: Buffer, fileId: Buffer, keyVersion: number, flags: number, nonce?: Buffer): Buffer {
  return wrapKey(kek, dek, dekAad(volumeId, fileId, keyVersion, flags), nonce)
}

/** Throws AuthenticationError if `wrapped` is not this file's DEK under `kek` at that version and flags. */
export function unwrapDek (kek: SecretKey, wrapped: Buffer, volumeId: Buffer, fileId: Buffer, keyVersion: number, flags: number): SecretKey {
  return unwrapKey(kek, wrapped, dekAad(volumeId, fileId, keyVersion, flags), 'file header')
}
