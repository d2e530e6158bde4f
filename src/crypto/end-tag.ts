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
const NEXT_PERSONAL = Buffer.from('sealfs-window-v1', 'ascii')

/** The sparse flag of a file header (FLAG_SPARSE; crypto does not import the volume layer). */
const SPARSE = 1

/**
 * The nonce that follows `nonce` in a file's chain of header nonces, for a header with `flags`
 * (docs/FORMAT.md §6.4): BLAKE2b-192 of "sealfs-window-v1" (16 ASCII bytes) || nonce || flags
 * (u16 BE). Public: anyone can follow the chain forwards, nobody backwards. A header is
 * rewritten at the next nonce when a write window closes. The flags are in it so that two
 * copies of a volume that went separate ways never wrap one DEK at one nonce with two AADs.
 */
export function nextNonce (nonce: Buffer, flags: number): Buffer {
  if (nonce.length !== BINDING_BYTES) throw new RangeError('write window: bad nonce')
  const input = Buffer.alloc(NEXT_PERSONAL.length + BINDING_BYTES + 2)
  NEXT_PERSONAL.copy(input, 0)
  nonce.copy(input, NEXT_PERSONAL.length)
  input.writeUInt16BE(flags, NEXT_PERSONAL.length + BINDING_BYTES)
  const out = Buffer.alloc(BINDING_BYTES)
  sodium.crypto_generichash(out, input)
  return out
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
 * How a file's end tag stands to its header: bound to its nonce (window closed), or to the
 * next one for a header with `flags` (open; the header's own flags, or with the sparse flag
 * added: a window opened to mark the file sparse).
 */
export interface WindowedTag { epoch: number, open: boolean, flags: number }

/**
 * Opens the end tag of a file with write windows whose header holds `nonce` and `flags`:
 * closed, open, or open towards the sparse flag; null if none of these.
 */
export function openWindowedTag (key: SecretKey, prefix: Buffer, size: number, tag: Buffer, nonce: Buffer, flags: number): WindowedTag | null {
  const closed = openEndTag(key, prefix, size, tag, nonce)
  if (closed !== null) return { epoch: closed, open: false, flags }
  for (const f of (flags & SPARSE) !== 0 ? [flags] : [flags, flags | SPARSE]) {
    const open = openEndTag(key, prefix, size, tag, nextNonce(nonce, f))
    if (open !== null) return { epoch: open, open: true, flags: f }
  }
  return null
}

/** Where along its header's nonce chain a file's end tag was found (followWindowedTag). */
export interface ChainedTag { epoch: number, steps: number, flags: number, binding: Buffer }

/**
 * Follows a header's nonce chain (`nonce`, `flags`) for up to `maxSteps` links to the one the
 * end tag is bound to: 0 steps, its window closed; 1, open; more, the tag was written after
 * later windows had closed (a copy that read the header, then the end, of a file written
 * meanwhile). Each link keeps the flags, or adds the sparse flag once. Null if none is it.
 * For tools that check a volume: it costs up to maxSteps² hashes when nothing matches.
 */
export function followWindowedTag (key: SecretKey, prefix: Buffer, size: number, tag: Buffer, nonce: Buffer, flags: number, maxSteps: number): ChainedTag | null {
  const closed = openEndTag(key, prefix, size, tag, nonce)
  if (closed !== null) return { epoch: closed, steps: 0, flags, binding: nonce }
  // `plain`: the chain with the header's flags; from each of its links, a branch with the sparse flag.
  let plain = nonce
  for (let switchAt = 0; switchAt <= maxSteps; switchAt++) {
    if (switchAt > 0) {
      plain = nextNonce(plain, flags)
      const epoch = openEndTag(key, prefix, size, tag, plain)
      if (epoch !== null) return { epoch, steps: switchAt, flags, binding: plain }
    }
    if ((flags & SPARSE) !== 0) continue
    let branch = plain
    for (let k = switchAt + 1; k <= maxSteps; k++) {
      branch = nextNonce(branch, flags | SPARSE)
      const epoch = openEndTag(key, prefix, size, tag, branch)
      if (epoch !== null) return { epoch, steps: k, flags: flags | SPARSE, binding: branch }
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
