import sodium from 'sodium-native'
import { SecretKey } from './secret-key'

/** Bytes of the MAC in a file's end tag. */
const MAC_BYTES = 16
/** Bytes of a file's end tag, stored after its last chunk (docs/FORMAT.md §6.3): its write epoch (u32 BE) and a MAC. */
export const END_TAG_BYTES = 4 + MAC_BYTES
/** Chunk writes per write epoch: the epoch in the end tag is the count of chunks sealed under the DEK, in these units. */
export const EPOCH_CHUNKS = 2 ** 20
const PREFIX_BYTES = 32
/** One message buffer, reused: JS computes one tag at a time. */
const message = Buffer.alloc(PREFIX_BYTES + 8 + 4)

/** The key of a file's end tags: crypto_kdf subkey 1, context "sealfset", of its DEK. */
export function endTagKey (dek: SecretKey): SecretKey {
  return dek.derive(1, 'sealfset')
}

function macOf (key: SecretKey, prefix: Buffer, size: number, epoch: number, out: Buffer): void {
  if (!Number.isSafeInteger(size) || size < 0 || !Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) throw new RangeError('end tag: bad size or epoch')
  if (prefix.length !== PREFIX_BYTES) throw new RangeError('end tag: bad prefix')
  prefix.copy(message, 0)
  message.writeUInt32BE(Math.floor(size / 2 ** 32), PREFIX_BYTES)
  message.writeUInt32BE(size >>> 0, PREFIX_BYTES + 4)
  message.writeUInt32BE(epoch, PREFIX_BYTES + 8)
  sodium.crypto_generichash(out, message, key.bytes)
}

/**
 * The end tag of a file of `size` plaintext bytes in write epoch `epoch`: the epoch (u32 BE),
 * then BLAKE2b-128 keyed by the file's end-tag key over its chunks' AAD prefix (volume ID ||
 * file ID), the size (u64 BE) and the epoch. A function of the size and the epoch alone: a
 * write that moves neither leaves it as it is, and no nonce is involved. A file cut short
 * (whole trailing chunks dropped, or its last chunk cut into) no longer ends in the tag of its
 * size; the epoch, which an index loss cannot reset, bounds its chunk writes from below.
 * Written into `out` (END_TAG_BYTES) when given.
 */
export function endTag (key: SecretKey, prefix: Buffer, size: number, epoch: number, out: Buffer = Buffer.alloc(END_TAG_BYTES)): Buffer {
  if (out.length !== END_TAG_BYTES) throw new RangeError('end tag: bad buffer')
  macOf(key, prefix, size, epoch, out.subarray(4))
  out.writeUInt32BE(epoch, 0)
  return out
}

/** The write epoch of `tag` if it is an end tag of a file of `size` bytes (compared in constant time), else null. */
export function openEndTag (key: SecretKey, prefix: Buffer, size: number, tag: Buffer): number | null {
  if (tag.length !== END_TAG_BYTES) return null
  const epoch = tag.readUInt32BE(0)
  const want = Buffer.alloc(MAC_BYTES)
  macOf(key, prefix, size, epoch, want)
  return sodium.sodium_memcmp(want, tag.subarray(4)) ? epoch : null
}

/** With the end-tag key of `dek` (tools that walk a volume, a file at a time). */
export function withEndTagKey<T> (dek: SecretKey, use: (key: SecretKey) => T): T {
  const key = endTagKey(dek)
  try {
    return use(key)
  } finally {
    key.dispose()
  }
}
