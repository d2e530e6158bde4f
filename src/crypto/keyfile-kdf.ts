import sodium from 'sodium-native'
import { SecretKey } from './secret-key'

const DOMAIN = Buffer.from('sealfs-keyfile-v1\0', 'ascii')
/** Key files are read whole; a larger file is not a key file we made (ours are 32 bytes). */
export const MAX_KEYFILE_BYTES = 64 * 1024

/**
 * The key-encryption key of a key-file slot: BLAKE2b-256 of the file's bytes, keyed by the
 * slot's 16-byte salt. No stretching: the key files sealfs makes hold 32 random bytes.
 */
export function deriveFromKeyfile (keyfile: Buffer, salt: Buffer): SecretKey {
  if (salt.length !== sodium.crypto_generichash_KEYBYTES_MIN) throw new RangeError('key-file salt must be 16 bytes')
  const key = SecretKey.alloc()
  const msg = Buffer.concat([DOMAIN, keyfile])
  try {
    sodium.crypto_generichash(key.bytes, msg, salt)
  } finally {
    msg.fill(0)
  }
  return key
}
