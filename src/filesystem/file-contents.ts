import { Placement, SYNC_RUN_MAX } from '../crypto/chunk-cipher'
import { SecretKey } from '../crypto/secret-key'
import { FLAG_SPARSE, HEADER_BYTES } from '../volume/file-header'
import { Volume } from '../volume/volume'
import { fdatasyncFd, ftruncateFd, writeFullAt } from './fd-io'
import { FsError } from './fs-error'
import { ChunkRangeLock, WHOLE_FILE } from './chunk-range-lock'
import { requestBuffers } from './request-buffers'

/** Chunk writes under one DEK are stopped here, well inside GCM's 2^32 random-nonce bound. */
export const CHUNK_WRITE_LIMIT = 2 ** 31

/** Plaintext size of a backing regular file of `backingSize` bytes (a torn tail counts as absent). */
export function plainSize (volume: Volume, backingSize: number): number {
  if (backingSize <= HEADER_BYTES) return 0
  const n = volume.chunks.openedSize(backingSize - HEADER_BYTES)
  if (n >= 0) return n
  return Math.floor((backingSize - HEADER_BYTES) / volume.chunks.stride) * volume.chunks.chunkSize
}

/**
 * The contents of one file (all its names and descriptors share it): its DEK, plaintext
 * size and lock. Reads and writes go through here, a whole request at a time: one pread,
 * one native call for all its chunks, one pwrite.
 */
export class FileContents {
  readonly #lock = new ChunkRangeLock()
  readonly prefix: Buffer
  /** Chunks sealed under this DEK so far; looked up in the index at the first write, not at open. */
  #chunkWrites: number | null

  constructor (
    private readonly volume: Volume,
    readonly fileId: Buffer,
    readonly dek: SecretKey,
    public size: number,
    /** null: unknown until the file is written (reads need no index lookup). */
    chunkWritesSoFar: number | null,
    /** Header flags; FLAG_SPARSE once the file has been extended with holes. */
    private flags: number,
    /** The backing is a local disk: short runs are read or written on this thread (see #here). */
    private readonly localIo = false,
    /** The backing store's allocation block, at most (Backing.blockSize). */
    private readonly blockSize = 512
  ) {
    this.prefix = volume.aadPrefix(fileId)
    this.#chunkWrites = chunkWritesSoFar
  }

  get sparse (): boolean {
    return (this.flags & FLAG_SPARSE) !== 0
  }

  get #chunk (): number { return this.volume.chunks.chunkSize }

  /**
   * A write may fill holes (a sparse file), which needs new blocks anywhere in its run: its
   * space is allocated first, so that a full disk fails it before it has changed a byte. A
   * network backing is not asked (a round trip per write; its errors come at fsync or close).
   */
  get #holesMayFill (): boolean { return this.localIo && this.sparse }

  /**
   * Whether a run of `sealedLength` bytes is read or written on the JS thread: on a local disk
   * a short run's pread or pwrite and AES-GCM cost less than the hand-off to the pool and back
   * (a network backing always goes to the pool: a stalled server must not stall the mount).
   */
  #here (sealedLength: number): boolean {
    return this.localIo && sealedLength <= SYNC_RUN_MAX
  }


  #cipherOffset (chunkIndex: number): number {
    return HEADER_BYTES + chunkIndex * this.volume.chunks.stride
  }

  /** Decrypts plaintext [start, end) — chunk-aligned start, end <= size — of chunks from `fd`. */
  async #readRun (fd: number, start: number, end: number, out: Buffer): Promise<void> {
    const first = start / this.#chunk
    const sealed = requestBuffers.take(this.volume.chunks.sealedSize(end - start))
    try {
      await this.volume.chunks.openAt(this.dek, this.prefix, first, fd, this.#cipherOffset(first), sealed, out, this.sparse, this.#here(sealed.length))
    } finally {
      requestBuffers.give(sealed)  // the job that read into it has ended, failed or not
    }
  }

  /** Reads under a shared lock of the chunks it covers. */
  async lockedRead (fd: number, offset: number, length: number, out: Buffer): Promise<number> {
    const C = this.#chunk
    if (length === 0) return 0
    return this.#lock.run(Math.floor(offset / C), Math.floor((offset + length - 1) / C), false, () => this.read(fd, offset, length, out))
  }

  /**
   * Writes under an exclusive lock of the chunks it touches; one that extends the file (or
   * appends) locks the whole file, as the size and the last chunk change.
   */
  async lockedWrite (fd: number, offset: number | 'append', data: Buffer): Promise<number> {
    const C = this.#chunk
    if (offset !== 'append' && offset + data.length <= this.size && data.length > 0) {
      const n = await this.#lock.run(Math.floor(offset / C), Math.floor((offset + data.length - 1) / C), true, async () => {
        // A truncate may have run while this waited: then it is an extending write after all.
        return offset + data.length <= this.size ? this.write(fd, offset, data) : -1
      })
      if (n >= 0) return n
    }
    return this.#lock.run(WHOLE_FILE.first, WHOLE_FILE.last, true, () => this.write(fd, offset === 'append' ? this.size : offset, data))
  }

  async lockedTruncate (fd: number, newSize: number): Promise<void> {
    await this.#lock.run(WHOLE_FILE.first, WHOLE_FILE.last, true, () => this.truncate(fd, newSize))
  }

  async read (fd: number, offset: number, length: number, out: Buffer): Promise<number> {
    const end = Math.min(offset + length, this.size)
    if (offset >= end) return 0
    const C = this.#chunk
    const runStart = Math.floor(offset / C) * C
    const runEnd = Math.min(Math.ceil(end / C) * C, this.size)
    if (runStart === offset && runEnd === end) {
      await this.#readRun(fd, runStart, runEnd, out)  // aligned: decrypt straight into the reply buffer
    } else {
      const plain = requestBuffers.take(runEnd - runStart)
      try {
        await this.#readRun(fd, runStart, runEnd, plain)
        plain.copy(out, 0, offset - runStart, end - runStart)
      } finally {
        requestBuffers.give(plain)
      }
    }
    return end - offset
  }

  /**
   * Writes `data` at `offset`, zero-filling any gap after the current end. A write that fails
   * leaves the file as it was, except that a gap's zeros in the old last chunk may stay.
   */
  async write (fd: number, offset: number, data: Buffer): Promise<number> {
    if (data.length === 0) return 0
    const before = this.size
    await this.#fillTo(fd, offset)
    try {
      await this.#writeRange(fd, offset, data)
    } catch (err) {
      // The holes #fillTo added go too (the zeros it sealed into the old last chunk stay: cutting them off would tear it).
      const padded = offset > before ? Math.min(offset, Math.ceil(before / this.#chunk) * this.#chunk) : before
      if (this.size > padded) await this.#cutBack(fd, padded)
      throw err
    }
    return data.length
  }

  async truncate (fd: number, newSize: number): Promise<void> {
    if (newSize === this.size) return
    if (newSize > this.size) {
      await this.#fillTo(fd, newSize)
      return
    }
    const C = this.#chunk
    const keepChunks = Math.floor(newSize / C)
    const tail = newSize - keepChunks * C
    if (tail > 0) {
      // The shortened last chunk is sealed over the start of the old one, and only then is the
      // file cut: the write needs no new space (what it needs of a hole is reserved first), so
      // a full disk fails it with the file unchanged.
      const plain = Buffer.alloc(Math.min(C, this.size - keepChunks * C))
      await this.#readRun(fd, keepChunks * C, keepChunks * C + plain.length, plain)
      await this.#sealRun(fd, keepChunks, plain.subarray(0, tail))
    }
    await ftruncateFd(fd, this.#cipherOffset(keepChunks) + this.volume.chunks.sealedSize(tail))
    this.size = newSize
  }

  /** Cuts the file back to `size` (a chunk boundary, or its old end) after a failed write: less space, never more. */
  async #cutBack (fd: number, size: number): Promise<void> {
    await ftruncateFd(fd, HEADER_BYTES + this.volume.chunks.sealedSize(size)).catch(() => undefined)
    this.size = size
  }

  /** Seals whole chunks from chunk `first` and writes them in place (counted against the nonce bound). */
  async #sealRun (fd: number, first: number, plain: Buffer): Promise<void> {
    const nChunks = Math.ceil(plain.length / this.#chunk)
    this.#checkBound(nChunks)
    const sealed = requestBuffers.take(this.volume.chunks.sealedSize(plain.length))
    try {
      await this.volume.chunks.sealAt(this.dek, this.prefix, first, plain, sealed, fd, this.#cipherOffset(first), this.#here(sealed.length), { newFrom: -1, reserve: this.#holesMayFill })
    } finally {
      requestBuffers.give(sealed)
    }
    this.#counted(nChunks)
  }

  #checkBound (nChunks: number): void {
    this.#chunkWrites ??= this.volume.index.get(this.fileId)?.chunkWrites ?? 0
    if (this.#chunkWrites + nChunks > CHUNK_WRITE_LIMIT) throw new FsError('EIO')
  }

  #counted (nChunks: number): void {
    this.#chunkWrites = (this.#chunkWrites ?? 0) + nChunks
    this.volume.index.countChunkWrites(this.fileId, nChunks)
  }

  /**
   * Extends the file with zeros to `target`: the current last chunk is padded with real
   * zeros; whole chunks beyond it become holes (the backing file is extended sparsely) once
   * the header says the file is sparse.
   */
  async #fillTo (fd: number, target: number): Promise<void> {
    if (this.size >= target) return
    const C = this.#chunk
    const boundary = Math.min(target, Math.ceil(this.size / C) * C)
    if (boundary > this.size) await this.#writeRange(fd, this.size, Buffer.alloc(boundary - this.size))
    if (target <= boundary) return
    if (!this.sparse) await this.#markSparse(fd)
    await ftruncateFd(fd, HEADER_BYTES + this.volume.chunks.sealedSize(target))
    this.size = target
  }

  /** Sets the sparse flag in the header (the DEK is wrapped again) and makes it durable before any hole exists. */
  async #markSparse (fd: number): Promise<void> {
    const flags = this.flags | FLAG_SPARSE
    const header = this.volume.rewrapHeader(this.fileId, this.dek, flags)
    await writeFullAt(fd, header, 0)
    await fdatasyncFd(fd)
    this.flags = flags
  }

  /** Writes `data` at `start` <= size: re-seals the touched chunks, merging old bytes at the edges. */
  async #writeRange (fd: number, start: number, data: Buffer): Promise<void> {
    const C = this.#chunk
    const end = start + data.length
    const first = Math.floor(start / C)
    const last = Math.floor((end - 1) / C)
    const runStart = first * C
    const runEnd = Math.min((last + 1) * C, Math.max(this.size, end))
    const nChunks = last - first + 1
    this.#checkBound(nChunks)
    const oldLen = Math.max(0, Math.min(this.size, runEnd) - runStart)
    const place: Placement = { newFrom: -1, reserve: this.#holesMayFill }
    if (end > this.size && oldLen > 0) {
      // The run rewrites old bytes and extends the file: a full disk can fail it in its
      // extension after it has overwritten them, so the write job keeps them and puts them
      // back (not needed where the run ends in the block the file already ends in: that
      // needs no new space).
      const oldSealed = this.volume.chunks.sealedSize(oldLen)
      const oldEnd = this.#cipherOffset(first) + oldSealed
      if (this.#cipherOffset(first) + this.volume.chunks.sealedSize(runEnd - runStart) > Math.ceil(oldEnd / this.blockSize) * this.blockSize) place.newFrom = oldSealed
    }
    const sealed = requestBuffers.take(this.volume.chunks.sealedSize(runEnd - runStart))
    try {
      if (runStart === start && runEnd === end) {
        await this.volume.chunks.sealAt(this.dek, this.prefix, first, data, sealed, fd, this.#cipherOffset(first), this.#here(sealed.length), place)
      } else {
        // Partial first or last chunk: their old bytes are read, opened and merged in the same
        // pool job (which writes them back if its write fails part-way).
        const plain = requestBuffers.take(runEnd - runStart).fill(0)
        data.copy(plain, start - runStart)
        try {
          await this.volume.chunks.rewriteAt(this.dek, this.prefix, first, plain, sealed, fd, this.#cipherOffset(first),
            start - runStart, end - runStart, oldLen, this.sparse, this.#here(sealed.length), place)
        } finally {
          requestBuffers.give(plain)
        }
      }
    } catch (err) {
      // Whatever the run added past the old end goes (its old chunks are back in place).
      if (end > this.size) await this.#cutBack(fd, this.size)
      throw err
    } finally {
      requestBuffers.give(sealed)  // the job that sealed and wrote it has ended, failed or not
    }
    this.#counted(nChunks)
    if (end > this.size) this.size = end
  }
}
