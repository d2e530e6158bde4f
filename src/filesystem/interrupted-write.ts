import fs from 'fs'
import { CHUNK_OVERHEAD, NONCE_BYTES } from '../crypto/chunk-cipher'
import { END_TAG_BYTES, openEndTag, openWindowedTag, withEndTagKey } from '../crypto/end-tag'
import { AuthenticationError } from '../crypto/errors'
import { SecretKey } from '../crypto/secret-key'
import { FLAG_END_TAG, FLAG_SPARSE, FLAG_WRITE_WINDOW, HEADER_BYTES } from '../volume/file-header'
import { FileLayout } from '../volume/file-layout'
import { Volume } from '../volume/volume'
import { InterruptedWrite } from '../volume/write-journal'
import { readFullAtSync, writeAllAtSync } from './fd-io'

/** A backing file opened with its identity: what a journal record is checked against. */
export interface IdentifiedFile {
  fd: number
  fileId: Buffer
  dek: SecretKey
  /** Its header says it is sparse (an all-zero chunk is a hole). */
  sparse: boolean
  /** Its header says it has an end tag. */
  endTags: boolean
  /** With write windows: its header's DEK-wrap nonce (its end tag is bound to it or the next). */
  nonce: Buffer | null
}

/**
 * What a write the volume's last stop interrupted left in its file:
 * - 'whole': the file authenticates where the write went (it finished, or never began);
 * - 'stale': the file is not as this write left it (a later write went over the chunks it
 *   wrote): the record is not used, so that it never rolls back what came after it;
 * - 'torn': the write tore the file, and the record can put the old bytes back (`repair`:
 *   'restored');
 * - 'invalid': the record does not authenticate as this file's (planted, or from before a
 *   re-encryption): it is not used.
 */
export type Settled = 'whole' | 'stale' | 'torn' | 'restored' | 'invalid'

/**
 * Checks the file against the record of a write that was running when the volume stopped
 * and, if the write tore it (a chunk it went over, or the end it moved, no longer
 * authenticates) and `repair`, puts the old sealed chunks, end tag and size back: the file is
 * then as before the write, but for chunks the write covered whole, which are old, new or
 * (torn) EIO. Only bytes that authenticate as this file's own are written back, and only
 * where the write's own nonces are on disk (a kill stops a pwrite after a prefix of it).
 * Synchronous: it runs once per torn file after a crash (at its open, or in fsck).
 */
export function settleInterruptedWrite (volume: Volume, file: IdentifiedFile, rec: InterruptedWrite, repair: boolean): Settled {
  const layout = new FileLayout(volume.chunks, file.endTags)
  const prefix = volume.aadPrefix(file.fileId)
  const { chunkSize: C, stride } = volume.chunks
  const indexOf = (position: number): number => (position - HEADER_BYTES) / stride
  const opens = (index: number, sealed: Buffer): boolean => {
    if (sealed.length <= CHUNK_OVERHEAD || sealed.length > stride) return false
    const plain = Buffer.alloc(sealed.length - CHUNK_OVERHEAD)
    try {
      volume.chunks.openSync(file.dek, prefix, index, sealed, plain, file.sparse)
      return true
    } catch (e) {
      if (!(e instanceof AuthenticationError)) throw e
      return false
    } finally {
      plain.fill(0)
    }
  }
  const tagOpens = (plainSize: number, tag: Buffer): boolean => withEndTagKey(file.dek, k => file.nonce === null
    ? openEndTag(k, prefix, plainSize, tag, null) !== null
    : openWindowedTag(k, prefix, plainSize, tag, file.nonce, FLAG_END_TAG | FLAG_WRITE_WINDOW | (file.sparse ? FLAG_SPARSE : 0)) !== null)
  const nonceAt = (position: number): Buffer => {
    const nonce = Buffer.alloc(NONCE_BYTES)
    return readFullAtSync(file.fd, nonce, position) === NONCE_BYTES ? nonce : Buffer.alloc(0)
  }

  // The record: each old chunk is this file's, at its place; the old end authenticates.
  const oldPlain = rec.oldBackingSize === null ? null : layout.exactPlainSize(rec.oldBackingSize)
  if (oldPlain !== null && oldPlain < 0) return 'invalid'
  for (const e of rec.extents) {
    const i = indexOf(e.position)
    if (!Number.isInteger(i) || !opens(i, e.sealed)) return 'invalid'
    if (oldPlain !== null && e.position + e.sealed.length > layout.backingSize(oldPlain) - layout.tail) return 'invalid'
  }
  if (oldPlain !== null && oldPlain > 0 && file.endTags && !tagOpens(oldPlain, rec.oldEndTag)) return 'invalid'

  // This write's doing: the run's first nonce is on disk, and each chunk it recorded holds the
  // write's new nonce or (not reached) its old one. Anything else came after it. (A kill can
  // stop the pwrite inside a nonce, at a page boundary: the new nonce's start, the old's rest.)
  const oldNonceAt = (position: number): Buffer | null => {
    const e = rec.extents.find(x => x.position === position)
    if (e !== undefined) return e.sealed.subarray(0, NONCE_BYTES)
    if (rec.oldBackingSize !== null && file.endTags && position === rec.oldBackingSize - END_TAG_BYTES) return rec.oldEndTag.subarray(0, NONCE_BYTES)
    return null
  }
  const written = (now: Buffer, fresh: Buffer, old: Buffer | null): boolean => {
    if (now.equals(fresh)) return true
    if (old === null || now.length !== NONCE_BYTES) return false
    for (let j = 1; j < NONCE_BYTES; j++) {
      if (now.subarray(0, j).equals(fresh.subarray(0, j)) && now.subarray(j).equals(old.subarray(j))) return true
    }
    return false
  }
  // A write that moved the end leaves the file between its old size and its new one; outside
  // that, the end has moved again since (a later append, say, which the old end must not undo).
  const size = fs.fstatSync(file.fd).size
  if (rec.oldBackingSize !== null && rec.newBackingSize !== null &&
      (size < Math.min(rec.oldBackingSize, rec.newBackingSize) || size > Math.max(rec.oldBackingSize, rec.newBackingSize))) return 'stale'
  if (!written(nonceAt(rec.runPosition), rec.runNonce, oldNonceAt(rec.runPosition))) return 'stale'
  for (const e of rec.extents) {
    const now = nonceAt(e.position)
    const old = e.sealed.subarray(0, NONCE_BYTES)
    if (!written(now, e.newNonce, old) && !now.equals(old)) return 'stale'
  }

  // The file now: the chunks at the record's places open at their lengths for the file's
  // size, and (if the write moved the end) the end authenticates.
  const plainNow = layout.exactPlainSize(size)
  let whole = plainNow >= 0
  for (const e of rec.extents) {
    if (!whole) break
    const i = indexOf(e.position)
    const len = Math.min(C, plainNow - i * C)
    const sealed = Buffer.alloc(Math.max(0, len) + CHUNK_OVERHEAD)
    whole = len > 0 && readFullAtSync(file.fd, sealed, e.position) === sealed.length && opens(i, sealed)
  }
  if (whole && rec.oldBackingSize !== null && file.endTags && plainNow > 0) {
    const tag = Buffer.alloc(END_TAG_BYTES)
    whole = readFullAtSync(file.fd, tag, size - END_TAG_BYTES) === END_TAG_BYTES && tagOpens(plainNow, tag)
  }
  if (whole && rec.oldBackingSize !== null && !file.endTags && plainNow > 0) {
    // No end tag (a volume from before them): the end the write moved is its last chunk.
    const last = Math.ceil(plainNow / C) - 1
    const sealed = Buffer.alloc(plainNow - last * C + CHUNK_OVERHEAD)
    whole = readFullAtSync(file.fd, sealed, layout.chunkOffset(last)) === sealed.length && opens(last, sealed)
  }
  if (whole) return 'whole'
  if (!repair) return 'torn'

  for (const e of rec.extents) writeAllAtSync(file.fd, e.sealed, e.position)
  if (rec.oldBackingSize !== null) {
    if (oldPlain !== null && oldPlain > 0 && file.endTags) writeAllAtSync(file.fd, rec.oldEndTag, rec.oldBackingSize - END_TAG_BYTES)
    fs.ftruncateSync(file.fd, rec.oldBackingSize)
  }
  // Durable before the record goes (the caller zeroes it next).
  fs.fdatasyncSync(file.fd)
  return 'restored'
}
