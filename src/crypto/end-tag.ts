import sodium from 'sodium-native'
import { SecretKey } from './secret-key'

/** Bytes of the MAC in a file's end tag. */
const MAC_BYTES = 16
/** Bytes of a file's end tag, stored after its last chunk (docs/FORMAT.md §6.3): its write epoch (u32 BE) and a MAC. */
export const END_TAG_BYTES = 4 + MAC_BYTES
/** Chunk writes per write epoch: the epoch in the end tag is the count of chunks sealed under the DEK, in these units. */
export const EPOCH_CHUNKS = 2 ** 20
const PREFIX_BYTES = 32
/** Bytes of a write-window binding: a header's DEK-wrap nonce (docs/FORMAT.md §6.4). */
export const BINDING_BYTES = 24
/** One message buffer, reused: JS computes one tag at a time. */
const message = Buffer.alloc(PREFIX_BYTES + 8 + 4 + BINDING_BYTES)
/** The sparse flag of a file header (FLAG_SPARSE; crypto does not import the volume layer). */
const SPARSE = 1
/** A header nonce: a random part, the header's flags (u16 BE) and a link counter (u64 BE). */
const RANDOM_BYTES = 14
const FLAGS_AT = 14
const COUNTER_AT = 16

/**
 * The first nonce of a file's chain of header nonces, for a header with `flags` (docs/FORMAT.md
 * §6.4): 14 random bytes || flags (u16 BE) || 0 (u64 BE).
 */
export function firstNonce (flags: number): Buffer {
  const n = Buffer.alloc(BINDING_BYTES)
  sodium.randombytes_buf(n.subarray(0, RANDOM_BYTES))
  n.writeUInt16BE(flags, FLAGS_AT)
  return n
}

/**
 * The nonce `steps` links after `nonce` (before it, if negative) in its chain, for a header
 * with `flags`: its first 14 bytes || flags (u16 BE) || its counter + steps (u64 BE, mod 2^64).
 * A header is rewritten at the next link when a write window closes. The flags are in the
 * nonce so that two copies of a volume that went separate ways never wrap one DEK at one
 * nonce with two AADs: a nonce says the flags it is wrapped with, and its key says the version.
 */
export function nextNonce (nonce: Buffer, flags: number, steps = 1): Buffer {
  if (nonce.length !== BINDING_BYTES) throw new RangeError('write window: bad nonce')
  const n = Buffer.from(nonce)
  n.writeUInt16BE(flags, FLAGS_AT)
  n.writeBigUInt64BE(BigInt.asUintN(64, nonce.readBigUInt64BE(COUNTER_AT) + BigInt(steps)), COUNTER_AT)
  return n
}

/** The key of a file's end tags: crypto_kdf subkey 1, context "sealfset", of its DEK. */
export function endTagKey (dek: SecretKey): SecretKey {
  return dek.derive(1, 'sealfset')
}

function macOf (key: SecretKey, prefix: Buffer, size: number, epoch: number, binding: Buffer | null, out: Buffer): void {
  if (!Number.isSafeInteger(size) || size < 0 || !Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) throw new RangeError('end tag: bad size or epoch')
  if (prefix.length !== PREFIX_BYTES) throw new RangeError('end tag: bad prefix')
  if (binding !== null && binding.length !== BINDING_BYTES) throw new RangeError('end tag: bad binding')
  prefix.copy(message, 0)
  message.writeUInt32BE(Math.floor(size / 2 ** 32), PREFIX_BYTES)
  message.writeUInt32BE(size >>> 0, PREFIX_BYTES + 4)
  message.writeUInt32BE(epoch, PREFIX_BYTES + 8)
  if (binding !== null) binding.copy(message, PREFIX_BYTES + 12)
  sodium.crypto_generichash(out, message.subarray(0, PREFIX_BYTES + 12 + (binding === null ? 0 : BINDING_BYTES)), key.bytes)
}

/**
 * The end tag of a file of `size` plaintext bytes in write epoch `epoch`: the epoch (u32 BE),
 * then BLAKE2b-128 keyed by the file's end-tag key over its chunks' AAD prefix (volume ID ||
 * file ID), the size (u64 BE) and the epoch. A function of the size and the epoch alone: a
 * write that moves neither leaves it as it is, and no nonce is involved. A file cut short
 * (whole trailing chunks dropped, or its last chunk cut into) no longer ends in the tag of its
 * size; the epoch, which an index loss cannot reset, bounds its chunk writes from below.
 * In a file with write windows (FLAG_WRITE_WINDOW), the MAC also covers `binding`: its header's
 * DEK-wrap nonce (window closed) or the next one (open; docs/FORMAT.md §6.4); else null.
 * Written into `out` (END_TAG_BYTES) when given.
 */
export function endTag (key: SecretKey, prefix: Buffer, size: number, epoch: number, binding: Buffer | null, out: Buffer = Buffer.alloc(END_TAG_BYTES)): Buffer {
  if (out.length !== END_TAG_BYTES) throw new RangeError('end tag: bad buffer')
  macOf(key, prefix, size, epoch, binding, out.subarray(4))
  out.writeUInt32BE(epoch, 0)
  return out
}

/**
 * The write epoch of `tag` if it is an end tag of a file of `size` bytes bound to `binding`
 * (compared in constant time), else null.
 */
export function openEndTag (key: SecretKey, prefix: Buffer, size: number, tag: Buffer, binding: Buffer | null): number | null {
  if (tag.length !== END_TAG_BYTES) return null
  const epoch = tag.readUInt32BE(0)
  const want = Buffer.alloc(MAC_BYTES)
  macOf(key, prefix, size, epoch, binding, want)
  return sodium.sodium_memcmp(want, tag.subarray(4)) ? epoch : null
}

/**
 * How a file's end tag stands to its header: bound to its nonce (`steps` 0: window closed), to
 * a later link (1: a window open, its header still to move; more: a copy read the header before
 * later windows closed, or a power cut stored the tag and not the headers of windows closed
 * since), or to an earlier one (negative: a power cut stored a close's header and not the tag
 * its window had opened with; or a copy read the end first).
 * `flags`: those of the link the tag is bound to; `binding`: that link.
 */
export interface WindowedTag { epoch: number, open: boolean, steps: number, flags: number, binding: Buffer }

/**
 * Links of its header's nonce chain, after and before the header's, a reader looks for a file's
 * end tag at: a power cut stores the header and tag pages of the windows closed since their
 * last writeback in any order (fsck looks further).
 */
export const WINDOW_LINKS = 64

/**
 * Opens the end tag of a file with write windows whose header holds `nonce` and `flags`: bound
 * to the nonce, or up to `ahead` links after it, or `behind` links before it (each link with
 * the header's flags, with the sparse flag added after it, or without it before it); null if
 * none. Nearest first.
 */
export function openWindowedTag (key: SecretKey, prefix: Buffer, size: number, tag: Buffer, nonce: Buffer, flags: number, ahead = WINDOW_LINKS, behind = WINDOW_LINKS): WindowedTag | null {
  const closed = openEndTag(key, prefix, size, tag, nonce)
  if (closed !== null) return { epoch: closed, open: false, steps: 0, flags, binding: nonce }
  for (let k = 1; k <= Math.max(ahead, behind); k++) {
    const links: Array<[number, number]> = []
    if (k <= ahead) links.push([k, flags], ...((flags & SPARSE) === 0 ? [[k, flags | SPARSE] as [number, number]] : []))
    if (k <= behind) links.push([-k, flags], ...((flags & SPARSE) !== 0 ? [[-k, flags & ~SPARSE] as [number, number]] : []))
    for (const [steps, f] of links) {
      const binding = nextNonce(nonce, f, steps)
      const epoch = openEndTag(key, prefix, size, tag, binding)
      if (epoch !== null) return { epoch, open: steps > 0, steps, flags: f, binding }
    }
  }
  return null
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
