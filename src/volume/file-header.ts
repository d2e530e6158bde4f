import { WRAPPED_KEY_BYTES } from '../crypto/key-wrap'

export const FILE_ID_BYTES = 16
const MAGIC = Buffer.from('SLFS', 'ascii')
const HEADER_VERSION = 1
/**
 * Every regular file's backing file starts with this header, then its chunks:
 *   0   4  magic "SLFS"
 *   4   2  header version (u16 BE) = 1
 *   6   2  flags (u16 BE): bit 0 = sparse (all-zero chunks are holes); bit 1 = end tag
 *          (the chunks are followed by the file's end tag); bit 2 = write windows (the end
 *          tag is bound to the DEK wrap's nonce); other bits zero
 *   8  16  file ID (random)
 *  24   4  master-key version that wrapped the DEK (u32 BE)
 *  28  72  wrapped DEK
 */
export const HEADER_BYTES = 28 + WRAPPED_KEY_BYTES

export const FLAG_SPARSE = 1
/** The file ends in its end tag (docs/FORMAT.md §6.3); set in every file of a volume with `endTags`, in none of an older one. */
export const FLAG_END_TAG = 2
/**
 * The end tag's MAC covers the header's DEK-wrap nonce (window closed) or the next in its chain
 * (a write window open: docs/FORMAT.md §6.4), so that a copy taken while the file was written
 * shows it. Only with FLAG_END_TAG; in every file of a volume with `writeWindows`.
 */
export const FLAG_WRITE_WINDOW = 4
const KNOWN_FLAGS = FLAG_SPARSE | FLAG_END_TAG | FLAG_WRITE_WINDOW

/** The nonce of a wrapped DEK (its first 24 bytes): what a file's end tag is bound to. */
export function headerNonce (wrappedDek: Buffer): Buffer {
  return wrappedDek.subarray(0, 24)
}

export interface FileHeader {
  fileId: Buffer
  keyVersion: number
  /** Authenticated with the DEK (part of its wrap's AAD). */
  flags: number
  wrappedDek: Buffer
}

export function encodeHeader (h: FileHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES)
  MAGIC.copy(b, 0)
  b.writeUInt16BE(HEADER_VERSION, 4)
  b.writeUInt16BE(h.flags, 6)
  h.fileId.copy(b, 8)
  b.writeUInt32BE(h.keyVersion, 24)
  h.wrappedDek.copy(b, 28)
  return b
}

/** Parses a header; null if the bytes cannot be one (the caller reports the file as damaged). */
export function decodeHeader (b: Buffer): FileHeader | null {
  const flags = b.length < HEADER_BYTES ? 0 : b.readUInt16BE(6)
  if (b.length < HEADER_BYTES || !b.subarray(0, 4).equals(MAGIC) || b.readUInt16BE(4) !== HEADER_VERSION || (flags & ~KNOWN_FLAGS) !== 0) return null
  if ((flags & FLAG_WRITE_WINDOW) !== 0 && (flags & FLAG_END_TAG) === 0) return null
  return {
    fileId: Buffer.from(b.subarray(8, 24)),
    keyVersion: b.readUInt32BE(24),
    flags: b.readUInt16BE(6),
    wrappedDek: Buffer.from(b.subarray(28, HEADER_BYTES))
  }
}
