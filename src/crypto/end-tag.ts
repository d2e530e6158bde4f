import sodium from 'sodium-native'
import { SecretKey } from './secret-key'

/** Bytes of a file's end tag, stored after its last chunk (docs/FORMAT.md §6.3). */
export const END_TAG_BYTES = 16
const PREFIX_BYTES = 32
/** One message buffer, reused: JS computes one tag at a time. */
const message = Buffer.alloc(PREFIX_BYTES + 8)

/** The key of a file's end tags: crypto_kdf subkey 1, context "sealfset", of its DEK. */
export function endTagKey (dek: SecretKey): SecretKey {
  return dek.derive(1, 'sealfset')
}

/**
 * The end tag of a file of `size` plaintext bytes: BLAKE2b-128 keyed by its end-tag key, over
 * its chunks' AAD prefix (volume ID || file ID) and the size (u64 BE). It is a function of
 * the size alone, so a write that does not move the end leaves it as it is, and no nonce is
 * involved; a file cut short (whole trailing chunks dropped, or its last chunk cut into) no
 * longer ends in the tag of its size. Written into `out` (END_TAG_BYTES) when given.
 */
export function endTag (key: SecretKey, prefix: Buffer, size: number, out: Buffer = Buffer.alloc(END_TAG_BYTES)): Buffer {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError('end tag: bad size')
  if (out.length !== END_TAG_BYTES || prefix.length !== PREFIX_BYTES) throw new RangeError('end tag: bad buffer')
  prefix.copy(message, 0)
  message.writeUInt32BE(Math.floor(size / 2 ** 32), PREFIX_BYTES)
  message.writeUInt32BE(size >>> 0, PREFIX_BYTES + 4)
  sodium.crypto_generichash(out, message, key.bytes)
  return out
}

/** Whether `tag` is the end tag of a file of `size` bytes, compared in constant time. */
export function endTagMatches (key: SecretKey, prefix: Buffer, size: number, tag: Buffer): boolean {
  return tag.length === END_TAG_BYTES && sodium.sodium_memcmp(endTag(key, prefix, size), tag)
}

/** endTag, or endTagMatches, from the DEK (tools that walk a volume, a file at a time). */
export function withEndTagKey<T> (dek: SecretKey, use: (key: SecretKey) => T): T {
  const key = endTagKey(dek)
  try {
    return use(key)
  } finally {
    key.dispose()
  }
}
