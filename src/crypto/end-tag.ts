import sodium from 'sodium-native'
import { SecretKey } from './secret-key'

/** Bytes of a file's end tag, stored after its last chunk (docs/FORMAT.md §6.3). */
export const END_TAG_BYTES = 16
/** crypto_kdf subkey of a file's DEK that keys its end tag. */
const SUBKEY_ID = 1
const SUBKEY_CONTEXT = Buffer.from('sealfset', 'ascii')

/** One subkey slot, reused: JS runs one tag at a time, and the slot is zeroed after each. */
let scratch: SecretKey | null = null

/**
 * The end tag of a file of `size` plaintext bytes: BLAKE2b-128 keyed by a subkey of its DEK,
 * over its chunks' AAD prefix (volume ID || file ID) and the size (u64 BE). It is a function of
 * the size alone, so a write that does not move the end leaves it as it is, and no nonce is
 * involved; a file cut short (whole trailing chunks dropped, or its last chunk cut into) no
 * longer ends in the tag of its size. Written into `out` (END_TAG_BYTES) when given.
 */
export function endTag (dek: SecretKey, prefix: Buffer, size: number, out: Buffer = Buffer.alloc(END_TAG_BYTES)): Buffer {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError('end tag: bad size')
  if (out.length !== END_TAG_BYTES) throw new RangeError('end tag: bad buffer')
  scratch ??= SecretKey.alloc()
  const message = Buffer.alloc(prefix.length + 8)
  prefix.copy(message, 0)
  message.writeBigUInt64BE(BigInt(size), prefix.length)
  try {
    sodium.crypto_kdf_derive_from_key(scratch.bytes, SUBKEY_ID, SUBKEY_CONTEXT, dek.bytes)
    sodium.crypto_generichash(out, message, scratch.bytes)
  } finally {
    sodium.sodium_memzero(scratch.bytes)
  }
  return out
}

/** Whether `tag` is the end tag of a file of `size` bytes, compared in constant time. */
export function endTagMatches (dek: SecretKey, prefix: Buffer, size: number, tag: Buffer): boolean {
  return tag.length === END_TAG_BYTES && sodium.sodium_memcmp(endTag(dek, prefix, size), tag)
}
