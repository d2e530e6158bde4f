import { JournalSlot, Placement, SYNC_RUN_MAX } from '../crypto/chunk-cipher'
import { END_TAG_BYTES, EPOCH_CHUNKS, WindowedTag, endTag, endTagKey, nextNonce, openEndTag, openWindowedTag } from '../crypto/end-tag'
import fs from 'fs'
import { logLine } from '../log'
import { AuthenticationError } from '../crypto/errors'
import { SecretKey } from '../crypto/secret-key'
import { FileHeader, FLAG_END_TAG, FLAG_SPARSE, FLAG_WRITE_WINDOW, HEADER_BYTES, headerNonce } from '../volume/file-header'
import { Volume } from '../volume/volume'
import { InterruptedWrite } from '../volume/write-journal'
import { fdatasyncFd, ftruncateFd, readAt, writeAllAtSync, writeFullAt, writeKeepingTimes, writeKeepingTimesSync } from './fd-io'
import { FsError } from './fs-error'
import { ChunkRangeLock, WHOLE_FILE } from './chunk-range-lock'
import { requestBuffers } from './request-buffers'
import { settleInterruptedWrite } from './interrupted-write'

/** Chunk writes under one DEK are stopped here, well inside GCM's 2^32 random-nonce bound. */
export const CHUNK_WRITE_LIMIT = 2 ** 31
/** A write window left open this long without a write is closed (docs/FORMAT.md §6.4). */
export const WINDOW_IDLE_MS = 1000
/** The binding of a tag in a file without write windows (none). */
const NO_BINDING = Buffer.alloc(0)
/** Pages a kill can stop a pwrite between are at least this long. */
const PAGE_BYTES = 4096

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
  /** Bytes after the last chunk: the end tag (FLAG_END_TAG), or none (a volume from before them). */
  readonly #tail: number
  /** The end tags' key, derived from the DEK at first use (an append computes one tag). */
  #endTagKey: SecretKey | null = null
  /**
   * The write epoch in the end tag on disk (chunk writes under this DEK, in EPOCH_CHUNKS), once
   * known: the tag was found right by a read or #checkEnd, or the file was empty when opened.
   * From then on this writes the tag.
   */
  #epoch: number | null
  #limitLogged = false
  /** The end tag of `size` in the current epoch, once computed (an append's new tag is the next one's old). */
  readonly #lastTag: { size: number, epoch: number, binding: Buffer | null, tag: Buffer } = { size: -1, epoch: -1, binding: null, tag: Buffer.alloc(END_TAG_BYTES) }
  /** Writes to this file that a crash interrupted (the write journal's records), settled at its first open. */
  #settling: Promise<void> | null = null
  /** Its interrupted writes could not be settled (see settle): writes are refused. */
  #unsettled = false
  /**
   * Write windows (FLAG_WRITE_WINDOW, docs/FORMAT.md §6.4): the header's DEK-wrap nonce, which
   * the end tag on disk is bound to while no window is open; null in a file without them.
   */
  #nonce: Buffer | null
  /** The next nonce in the header's chain: what every end tag this writes is bound to. */
  #nextNonce: Buffer | null = null
  /** The flags of the header that closes the window: the file's, or with FLAG_SPARSE (#markSparse). */
  #openFlags: number
  /** Whether the end tag on disk is bound to the next nonce (a window is open); null: not read yet, or unknown after a failed write. */
  #windowOpen: boolean | null
  /** A window not open: the link the tag on disk is bound to, if not the header's nonce (an earlier one, after a power cut). */
  #closedBinding: Buffer | null = null
  /** A writable descriptor of this file's (the last write's), through which the window closes; -1: none. */
  #windowFd = -1
  /** Writes since the idle timer last looked, and the timer. */
  #windowWrites = 0
  #windowTimer: NodeJS.Timeout | null = null
  /** The index row holds the DEK at an older key version than a header this writes: the next one goes to the row too. */
  #rowBehind: boolean

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
    private readonly blockSize = 512,
    /** The header it was opened with: what its index row is made from if it has none, and its nonce. */
    private readonly header: Pick<FileHeader, 'keyVersion' | 'wrappedDek'> | null = null
  ) {
    this.prefix = volume.aadPrefix(fileId)
    this.#chunkWrites = chunkWritesSoFar
    this.#tail = (flags & FLAG_END_TAG) !== 0 ? END_TAG_BYTES : 0
    this.#epoch = size === 0 ? 0 : null  // empty when opened: every tag it will have, this writes
    this.#nonce = (flags & FLAG_WRITE_WINDOW) !== 0 && header !== null ? Buffer.from(headerNonce(header.wrappedDek)) : null
    this.#windowOpen = size === 0 ? false : null
    this.#openFlags = flags
    this.#rowBehind = header !== null && header.keyVersion !== volume.config.masterKeyVersion
  }

  get sparse (): boolean {
    return (this.flags & FLAG_SPARSE) !== 0
  }

  get #chunk (): number { return this.volume.chunks.chunkSize }

  get #endKey (): SecretKey {
    this.#endTagKey ??= endTagKey(this.dek)
    return this.#endTagKey
  }

  /** Zeroes the keys derived here: the contents are no longer shared by any open file (the DEK is the cache's). */
  forgetKeys (): void {
    this.#endTagKey?.dispose()
    this.#endTagKey = null
    if (this.#windowTimer !== null) clearTimeout(this.#windowTimer)
    this.#windowTimer = null
    this.#windowFd = -1
  }

  /** Whether the write journal holds records of this file that its opens must settle first. */
  get interrupted (): boolean {
    return this.#settling !== null || this.volume.journal.interruptedFor(this.fileId).length > 0
  }

  /**
   * Settles the writes of this file a crash interrupted, once (every open of it waits for
   * that): a chunk such a write tore gets its old bytes back, through a writable descriptor
   * from `writable` (null: none; read-only, the torn chunks read as EIO until a read-write
   * mount or fsck --repair).
   */
  settle (writable: () => Promise<number | null>): Promise<void> {
    this.#settling ??= this.#lock.run(WHOLE_FILE.first, WHOLE_FILE.last, true, async () => {
      const records = this.volume.journal.interruptedFor(this.fileId)
      if (records.length === 0) return
      const id = this.fileId.toString('hex')
      if (this.volume.readOnly) {
        logLine(`file ${id}: a write was running when the volume stopped; it is checked and repaired at a read-write mount (or by 'sealfs fsck --repair')`)
        return
      }
      const fd = await writable()
      // Until its records are settled, the file is not written: a write now could go where a
      // settle at a later open would put old bytes back.
      this.#unsettled = true
      if (fd === null) {
        logLine(`file ${id}: a write was running when the volume stopped, and the file cannot be opened to check it: writes refused (EIO) until 'sealfs fsck --repair'`)
        return
      }
      try {
        for (const rec of records) this.#settleRecord(fd, rec, 'that a crash cut short')
        this.#unsettled = false
      } catch (e) {
        logLine(`file ${id}: the write journal's record of it could not be settled (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): writes refused (EIO) until 'sealfs fsck --repair'`)
      } finally {
        // What size and end tag the file has is read again (a restored file has its old ones).
        try { this.#reread(fd) } catch { this.#unsettled = true }
        try { fs.closeSync(fd) } catch { /* it was only read and written through */ }
      }
    })
    return this.#settling
  }

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

  /** Where the backing file ends when the plaintext has `size` bytes: after the end tag, if any. */
  #end (size: number): number {
    return size === 0 ? HEADER_BYTES : HEADER_BYTES + this.volume.chunks.sealedSize(size) + this.#tail
  }

  /**
   * Decrypts plaintext [start, end) — chunk-aligned start, end <= size — of chunks from `fd`.
   * A run that reaches the end of the file reads the end tag with it, in the same pread, and
   * checks it: a file cut short (whole chunks dropped, or its last chunk cut into) is EIO.
   */
  async #readRun (fd: number, start: number, end: number, out: Buffer): Promise<void> {
    const first = start / this.#chunk
    const sealedLength = this.volume.chunks.sealedSize(end - start)
    const tail = end === this.size ? this.#tail : 0
    const sealed = requestBuffers.take(sealedLength + tail)
    try {
      await this.volume.chunks.openAt(this.dek, this.prefix, first, fd, this.#cipherOffset(first), sealed, out, this.sparse, this.#here(sealed.length), tail)
      if (tail > 0) {
        const found = this.#openTag(end, sealed.subarray(sealedLength))
        if (found === null) {
          out.fill(0, 0, end - start)
          throw new AuthenticationError('end of file', { size: end })
        }
        this.#epoch ??= found.epoch
        if (this.#windowOpen === null) this.#learnWindow(found)
      }
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
    while (offset !== 'append' && offset + data.length <= this.size && data.length > 0) {
      // A write in place needs the file's write window open (docs/FORMAT.md §6.4): its end tag
      // is rewritten first, under the whole-file lock (readers of the last chunk read it).
      if (this.#mustOpenWindow) await this.#lock.run(WHOLE_FILE.first, WHOLE_FILE.last, true, () => this.#openWindow(fd))
      const n = await this.#lock.run(Math.floor(offset / C), Math.floor((offset + data.length - 1) / C), true, async () => {
        // A truncate may have run while this waited: then it is an extending write after all.
        // A window closed meanwhile is opened again first (a close waits for this lock).
        if (this.#mustOpenWindow) return -2
        return offset + data.length <= this.size ? this.write(fd, offset, data) : -1
      })
      if (n >= 0) return n
      if (n === -1) break
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
   * leaves the file as it was (its chunks resealed, at most).
   */
  async write (fd: number, offset: number, data: Buffer): Promise<number> {
    if (data.length === 0) return 0
    if (this.#unsettled) throw new FsError('EIO')
    // The first write of an open also checks the end tag on disk (#startCount, #checkEnd).
    if (this.#chunkWrites === null) await this.#startCount(fd)
    if (this.#endUnknown) await this.#checkEnd(fd)  // after a failed write, which tag is on disk is read again
    // A write that moves the end writes the end tag, bound to the next link, after its run in
    // the same pwrite: a copy that sees its chunks sees that tag, or a size its tag does not
    // match, or a torn chunk; unless the run also goes over whole chunks before the last.
    // Those, and a write that no longer moves the end (a truncate ran while it waited), open
    // the window first (the caller holds the whole-file lock for them).
    if (this.#mustOpenWindow && (offset + data.length <= this.size || offset < Math.floor((this.size - 1) / this.#chunk) * this.#chunk)) await this.#openWindow(fd)
    this.#wrote(fd)
    await this.#extendTo(fd, offset, () => this.#writeRange(fd, offset, data))
    return data.length
  }

  async truncate (fd: number, newSize: number): Promise<void> {
    if (newSize === this.size) return
    if (this.#unsettled) throw new FsError('EIO')
    if (this.#chunkWrites === null) await this.#startCount(fd)
    if (this.#endUnknown) await this.#checkEnd(fd)
    this.#wrote(fd)
    if (newSize > this.size) return this.#extendTo(fd, newSize)

    const C = this.#chunk
    const keepChunks = Math.floor(newSize / C)
    const tail = newSize - keepChunks * C
    let journal: JournalSlot | null = null
    if (tail > 0) {
      // The shortened last chunk (and the end tag of the new size) is sealed over the start of
      // the old one, and only then is the file cut: the write needs no new space (what it
      // needs of a hole is reserved first, and a few bytes past the old end are kept and put
      // back), so a full disk fails it with the file unchanged. The old chunk goes to the
      // write journal first (#sealRun): a crash before the cut must not lose the bytes kept.
      const plain = Buffer.alloc(Math.min(C, this.size - keepChunks * C))
      try {
        await this.#readRun(fd, keepChunks * C, keepChunks * C + plain.length, plain)
        journal = await this.#sealRun(fd, keepChunks, plain.subarray(0, tail), plain.length, newSize)
      } finally {
        plain.fill(0)
      }
    } else if (newSize > 0 && this.#tail > 0) {
      // Cut at a chunk boundary: the new end's tag over the start of the first chunk cut off.
      // (In a sparse file that chunk may be a hole, which needs a block: if the disk is full,
      // its zeros are put back and the file is as it was.)
      const at = this.#cipherOffset(keepChunks)
      try {
        await writeFullAt(fd, this.#tagOf(newSize), at)
      } catch (err) {
        if (this.sparse) await writeFullAt(fd, Buffer.alloc(this.#tail), at).catch(() => undefined)
        throw err
      }
    }
    try {
      await ftruncateFd(fd, this.#end(newSize))
    } catch (err) {
      this.#windowOpen = null  // the cut may or may not have happened: the tag is read again
      if (journal !== null) this.#afterFailure(fd, journal)  // the chunk resealed short is put back
      throw err
    }
    this.size = newSize
    // A truncate's end tag is bound to the next nonce; an empty file has none.
    this.#windowOpen = newSize > 0
    this.#closedBinding = null
    if (journal !== null) await this.volume.journal.spend(journal).catch(() => this.#afterFailure(fd, journal as JournalSlot))
  }

  /**
   * A write whose journal record is on disk failed (its job put the old chunks back, or tried
   * to): the record is settled now, through the write's own descriptor, so that it neither
   * holds its slot nor waits for a later open, when the file may have been written since. If
   * that fails too, the file takes no more writes in this mount (see settle).
   */
  #afterFailure (fd: number, slot: JournalSlot): void {
    const rec = this.volume.journal.failed(slot)
    if (rec === null) return
    try {
      if (this.#settleRecord(fd, rec, 'that failed')) this.#reread(fd)
    } catch (e) {
      this.#unsettled = true
      logLine(`file ${this.fileId.toString('hex')}: a write failed and its journal record could not be settled (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): writes refused (EIO) until 'sealfs fsck --repair'`)
    }
  }

  /**
   * Settles one record of this file through `fd` (writable), saying what it did; the record
   * is then zeroed. Whether old bytes were put back. Throws on an I/O error (the record stays).
   */
  #settleRecord (fd: number, rec: InterruptedWrite, how: string): boolean {
    const id = this.fileId.toString('hex')
    const outcome = settleInterruptedWrite(this.volume, { fd, fileId: this.fileId, dek: this.dek, sparse: this.sparse, endTags: this.#tail > 0, nonce: this.#nonce }, rec, true)
    if (outcome === 'restored') logLine(`file ${id}: a write ${how} had torn it; its old bytes are back from the write journal`)
    if (outcome === 'invalid') logLine(`file ${id}: a write journal record names it but does not authenticate as its own: ignored`)
    this.volume.journal.settle(rec)
    return outcome === 'restored'
  }

  /** The size and end tag are read again from the file (its old bytes were put back). */
  #reread (fd: number): void {
    this.size = this.volume.layout.plainSize(fs.fstatSync(fd).size)
    this.#epoch = this.size === 0 ? 0 : null
    this.#windowOpen = this.size === 0 ? false : null
    this.#closedBinding = null
  }

  /**
   * Checks the end tag once before the first write that moves it: the file's end may have been
   * cut (to a size whose last bytes are not its tag) while it was closed, and a new tag
   * written over them would make the cut file read as whole. Reads check it anyway.
   */
  /** The end tag's epoch or window is not known (not read yet, or a failed write may have changed it). */
  get #endUnknown (): boolean {
    return this.#tail > 0 && (this.#epoch === null || this.#windowOpen === null)
  }

  async #checkEnd (fd: number): Promise<void> {
    if (!this.#endUnknown) return
    if (this.size === 0) { this.#epoch ??= 0; this.#windowOpen = false; return }
    const tag = Buffer.alloc(this.#tail)
    const got = await readAt(fd, tag, this.#end(this.size) - this.#tail)
    const found = got === this.#tail ? this.#openTag(this.size, tag) : null
    if (found === null) throw new AuthenticationError('end of file', { size: this.size })
    this.#epoch = Math.max(this.#epoch ?? 0, found.epoch)  // a crossing may have raised it meanwhile
    this.#learnWindow(found)
  }

  /** What the end tag on disk says of the window. */
  #learnWindow (found: WindowedTag): void {
    this.#windowOpen = found.open
    this.#towards(found.open ? found.flags : this.flags)
    // Ahead by more than one link (a power cut stored the tag, not the headers of the windows
    // closed since): the tags written go on being bound to it, and the close moves there.
    if (found.open) this.#nextNonce = found.binding
    this.#closedBinding = found.open || found.steps === 0 ? null : found.binding
  }

  /** The flags the header that closes the window will have (what the open tag is bound to). */
  #towards (flags: number): void {
    if (flags === this.#openFlags) return
    this.#openFlags = flags
    this.#nextNonce = null
  }

  /** The epoch of `tag` if it is the end tag of `size` bytes, and whether it is bound to the next nonce (a window open). */
  #openTag (size: number, tag: Buffer): WindowedTag | null {
    if (this.#nonce === null) {
      const epoch = openEndTag(this.#endKey, this.prefix, size, tag, null)
      return epoch === null ? null : { epoch, open: false, steps: 0, flags: this.flags, binding: NO_BINDING }
    }
    // The link the tag is known to be bound to first (one MAC), then the links near the header's.
    if (this.#windowOpen !== null) {
      const open = this.#windowOpen
      const binding = this.#diskBinding() as Buffer
      const epoch = openEndTag(this.#endKey, this.prefix, size, tag, binding)
      if (epoch !== null) return { epoch, open, steps: open ? 1 : binding === this.#nonce ? 0 : -1, flags: open ? this.#openFlags : this.flags, binding }
    }
    return openWindowedTag(this.#endKey, this.prefix, size, tag, this.#nonce, this.flags)
  }

  /** The link the end tag on disk is bound to (the window's state known). */
  #diskBinding (): Buffer | null {
    if (this.#nonce === null) return null
    return this.#windowOpen === true ? this.#binding(true) : this.#closedBinding ?? this.#nonce
  }

  /** What an end tag is bound to: the header's nonce (closed), the next one (open), nothing (no windows). */
  #binding (open: boolean): Buffer | null {
    if (this.#nonce === null) return null
    if (!open) return this.#nonce
    this.#nextNonce ??= nextNonce(this.#nonce, this.#openFlags)
    return this.#nextNonce
  }

  /**
   * The end tag of `size` bytes in the current write epoch (known: see #epoch), as this writes
   * it: bound to the next nonce (every tag written opens the window, or keeps it open).
   */
  #tagOf (size: number, out?: Buffer): Buffer {
    if (this.#epoch === null) throw new Error('end tag written before it was read')
    return endTag(this.#endKey, this.prefix, size, this.#epoch, this.#binding(true), out)
  }

  /** The end tag on disk now (of `size`, in the current epoch and window): what a write that moves the end records first. */
  #currentTag (): Buffer {
    const c = this.#lastTag
    if (this.#nonce !== null && this.#windowOpen === null) throw new Error('end tag recorded before it was read')
    const binding = this.#diskBinding()
    if (c.size !== this.size || c.epoch !== this.#epoch || c.binding !== binding) {
      if (this.#epoch === null) throw new Error('end tag recorded before it was read')
      endTag(this.#endKey, this.prefix, this.size, this.#epoch, binding, c.tag)
      c.size = this.size
      c.epoch = this.#epoch
      c.binding = binding
    }
    return c.tag
  }

  /** A write window must be opened before a write in place (a file with them, whose tag is not known to be open). */
  get #mustOpenWindow (): boolean {
    return this.#nonce !== null && this.#windowOpen !== true && this.size > 0
  }

  /**
   * Opens the file's write window (docs/FORMAT.md §6.4), under the whole-file lock: the end tag
   * of its size is rewritten bound to the next nonce, before any write in place, so that a copy
   * that sees a changed chunk sees that tag too (it reads the header first, the tag last). Where
   * the tag's 20 bytes straddle a page, which a kill can cut a pwrite at, the old tag goes to
   * the write journal first. On a local disk, on this thread (20 bytes into the page cache
   * cost less than a hand-off to the pool).
   */
  async #openWindow (fd: number, towards = this.flags): Promise<void> {
    if (this.#unsettled) throw new FsError('EIO')
    if (this.#chunkWrites === null) await this.#startCount(fd)  // checks the end tag: epoch and window known
    await this.#checkEnd(fd)
    if (this.#nonce === null || this.size === 0 || (this.#windowOpen === true && this.#openFlags === towards)) return
    const end = this.#end(this.size)
    const at = end - this.#tail
    const old = Buffer.from(this.#currentTag())
    // The state changes only once the tag is written (a failure leaves the one read).
    const fresh = endTag(this.#endKey, this.prefix, this.size, this.#epoch as number, nextNonce(this.#nonce, towards))
    const straddles = Math.floor(at / PAGE_BYTES) !== Math.floor((at + this.#tail - 1) / PAGE_BYTES)
    const slot = straddles ? this.volume.journal.take(this.fileId, { from: end, to: end }, old) : null
    try {
      if (slot !== null) await this.volume.journal.record(slot, at, fresh, this.localIo)
    } catch (err) {
      this.#windowOpen = null  // nothing was written; the tag is read again all the same
      throw err
    }
    try {
      if (this.localIo) writeAllAtSync(fd, fresh, at)
      else await writeFullAt(fd, fresh, at)
    } catch (err) {
      this.#windowOpen = null
      if (slot !== null) this.#afterFailure(fd, slot)
      throw err
    }
    this.#towards(towards)
    this.#windowOpen = true
    this.#closedBinding = null
    this.#wrote(fd)
    if (slot !== null) await this.volume.journal.spend(slot, this.localIo).catch(() => this.#afterFailure(fd, slot))
  }

  /** A write or truncate through `fd` (writable) is about to change the file: the window closes through it, after a second without writes. */
  #wrote (fd: number): void {
    if (this.#nonce === null) return
    this.#windowFd = fd
    this.#windowWrites++
    if (this.#windowTimer === null) this.#armWindowTimer()
  }

  #armWindowTimer (): void {
    const writes = this.#windowWrites
    this.#windowTimer = setTimeout(() => {
      this.#windowTimer = null
      if (this.#windowWrites !== writes) this.#armWindowTimer()
      else void this.closeWindow().catch(() => undefined)
    }, WINDOW_IDLE_MS)
    this.#windowTimer.unref()
  }

  /**
   * Closes the write window, if one is open (docs/FORMAT.md §6.4): the header is written with its
   * DEK wrapped at the next nonce of its chain, which the end tag is bound to already. Under
   * the whole-file lock, so after every write in flight. At the close of the descriptor it
   * goes through, before the file's times are set, at unmount, and after a second without
   * writes (not at fsync: a database that writes and syncs in a loop would pay a header and a
   * tag write per sync; its window stays open while it is busy, which is what a copy of it
   * then should say). The file's times are kept unless `keepTimes` is false (the caller sets
   * them next). A header that cannot be written leaves the file taking no more writes in
   * this mount: a later header at that nonce must never wrap the DEK with other flags.
   */
  async closeWindow (keepTimes = true): Promise<void> {
    if (this.#windowOpen === false || this.#windowFd < 0 || this.#nonce === null) return
    if (this.volume.lease?.lost === true) return  // another client may be writing the file now
    await this.#lock.run(WHOLE_FILE.first, WHOLE_FILE.last, true, async () => {
      if (this.#windowOpen === false || this.#windowFd < 0 || this.#nonce === null || this.#unsettled) return
      // After a failed write, which tag is on disk is read first (one that does not
      // authenticate leaves the header as it is: reads of the end are EIO either way).
      if (this.#windowOpen === null) await this.#checkEnd(this.#windowFd).catch(() => undefined)
      if (this.#windowOpen === true) await this.#moveHeader(this.#windowFd, keepTimes)
    })
  }

  /**
   * Writes the header at the next nonce of its chain, with the flags the open window's tag is
   * bound to (the window closes). If it fails, the file takes no more writes in this mount:
   * what reached the disk is unknown.
   */
  async #moveHeader (fd: number, keepTimes: boolean): Promise<void> {
    const next = this.#binding(true) as Buffer
    const flags = this.#openFlags
    // The index row keeps an earlier link (it holds the same DEK, key version and flags):
    // rewritten only when those change, so that a closing window costs no index write.
    const toRow = flags !== this.flags || this.#rowBehind
    const header = this.volume.rewrapHeader(this.fileId, this.dek, flags, next, toRow)
    try {
      // A window closing is sealfs's own change, after the user's writes (and perhaps after
      // times they set since): the file's times stay theirs. On a local disk, on this thread.
      if (this.localIo) {
        if (keepTimes) writeKeepingTimesSync(fd, header, 0)
        else writeAllAtSync(fd, header, 0)
      } else {
        await (keepTimes ? writeKeepingTimes(fd, header, 0) : writeFullAt(fd, header, 0))
      }
    } catch (err) {
      this.#unsettled = true
      logLine(`file ${this.fileId.toString('hex')}: its header could not be written at the end of a write window (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): writes refused (EIO) until the next mount`)
      throw err
    }
    this.#nonce = next
    this.#nextNonce = null
    this.flags = flags
    this.#windowOpen = false
    this.#closedBinding = null
    if (toRow) this.#rowBehind = false
  }

  /** The descriptor `fd` is being closed: a window that closes through it is closed now. */
  async releaseFd (fd: number): Promise<void> {
    if (this.#windowFd !== fd) return
    try {
      await this.closeWindow()
    } finally {
      if (this.#windowFd === fd) this.#windowFd = -1
    }
  }

  /** Cuts the file back to `size` (a chunk boundary, or its old end) after a failed write: less space, never more. */
  async #cutBack (fd: number, size: number): Promise<void> {
    await ftruncateFd(fd, this.#end(size)).catch(() => undefined)
    // The write may have gone over the old end tag: it is written again (over bytes the file
    // had, so no new space is needed).
    if (this.#tail > 0 && size > 0 && this.#epoch !== null) await writeFullAt(fd, this.#tagOf(size), this.#end(size) - this.#tail).catch(() => undefined)
    this.size = size
    this.#windowOpen = null  // whichever tag is on disk now is read again before the next write
  }

  /**
   * Seals the last chunk of a file being shortened to `newSize` from chunk `first` (its old
   * plaintext had `oldLength` bytes), with the end tag of that size, and writes them in place
   * (counted against the nonce bound), after recording the old chunk in the write journal.
   * Returns the journal slot, for the caller to spend once the file is cut (null: no journal).
   */
  async #sealRun (fd: number, first: number, plain: Buffer, oldLength: number, newSize: number): Promise<JournalSlot | null> {
    const nChunks = Math.ceil(plain.length / this.#chunk)
    await this.#reserve(fd, nChunks)
    const sealedLength = this.volume.chunks.sealedSize(plain.length)
    const sealed = requestBuffers.take(sealedLength + this.#tail)
    // With the tag, the run can reach a few bytes past the old end: those are new, the rest kept.
    const oldBytes = this.#end(this.size) - this.#cipherOffset(first)
    const place: Placement = { newFrom: sealed.length > oldBytes ? oldBytes : -1, reserve: this.#holesMayFill, tail: this.#tail }
    place.journal = this.volume.journal.take(this.fileId, { from: this.#end(this.size), to: this.#end(newSize) }, this.#tail > 0 ? this.#currentTag() : null)
    if (place.journal !== null) place.journal.keep = true
    try {
      if (place.journal !== null) {
        const old = Buffer.alloc(this.volume.chunks.sealedSize(oldLength))
        if (await readAt(fd, old, this.#cipherOffset(first)) !== old.length) throw new FsError('EIO')
        this.volume.journal.addExtent(place.journal, this.#cipherOffset(first), old)
      }
      if (this.#tail > 0) this.#tagOf(newSize, sealed.subarray(sealedLength))
      await this.volume.chunks.sealAt(this.dek, this.prefix, first, plain, sealed, fd, this.#cipherOffset(first), this.#here(sealed.length), place)
    } catch (err) {
      if (sealed.length > oldBytes) await ftruncateFd(fd, this.#end(this.size)).catch(() => undefined)
      if (place.journal != null) this.#afterFailure(fd, place.journal)
      throw err
    } finally {
      requestBuffers.give(sealed)
    }
    this.#counted(nChunks)
    return place.journal  // kept: the truncate is not done until the file is cut
  }

  /**
   * Counts `nChunks` about to be sealed against the nonce bound: refused (EIO, logged once) past
   * it. The count is the index row's, but never below what the end tag's write epoch says (an
   * index lost or rebuilt since); before the writes that enter a new epoch, the tag says so,
   * durably, so that no later index loss can make the count start lower.
   */
  async #reserve (fd: number, nChunks: number): Promise<void> {
    const count = this.#chunkWrites ?? await this.#startCount(fd)
    if (count + nChunks > CHUNK_WRITE_LIMIT) {
      if (!this.#limitLogged) logLine(`file ${this.fileId.toString('hex')}: ${count} chunks sealed under its data key, the most the nonce bound allows (${CHUNK_WRITE_LIMIT}): writes refused (EIO); a copy of the file gets a new key`)
      this.#limitLogged = true
      throw new FsError('EIO')
    }
    // Counted here, before any wait: writes running at once each see the others' chunks (one
    // that then fails stays counted, which errs on the safe side).
    this.#chunkWrites = count + nChunks
    if (this.#tail === 0 || this.#epoch === null) return
    const next = Math.floor((count + nChunks) / EPOCH_CHUNKS)
    if (next <= this.#epoch) return
    if (this.size > 0) {
      this.#windowOpen = null  // until it is written
      await writeFullAt(fd, endTag(this.#endKey, this.prefix, this.size, next, this.#binding(true)), this.#end(this.size) - this.#tail)
      this.#windowOpen = true
      await fdatasyncFd(fd)
    }
    this.#epoch = Math.max(this.#epoch, next)
  }

  /**
   * The chunk writes so far, found at the first write: the index row's count, but never below
   * what the end tag's epoch says, and without a row (the index was lost, or a mount made a
   * new one) all of the current epoch. A file without a row is given one from its header,
   * starting at that count, so that the writes of this open count at the next.
   */
  async #startCount (fd: number): Promise<number> {
    if (this.#chunkWrites !== null) return this.#chunkWrites
    const row = this.volume.index.get(this.fileId)
    await this.#checkEnd(fd)
    const fromTag = this.#tail > 0 && this.#epoch !== null ? (row === undefined ? this.#epoch + 1 : this.#epoch) * EPOCH_CHUNKS : 0
    if (this.#chunkWrites !== null) return this.#chunkWrites  // another request of this file found it meanwhile
    const count = Math.max(row?.chunkWrites ?? 0, fromTag)
    this.#chunkWrites = count
    if (row === undefined && this.header !== null) {
      this.volume.index.put(this.fileId, this.header.keyVersion, this.header.wrappedDek)
      this.volume.index.countChunkWrites(this.fileId, count)
    }
    return count
  }

  /** Sealed chunks that reached the file: the index adds them to the row (#reserve counted them here already). */
  #counted (nChunks: number): void {
    this.volume.index.countChunkWrites(this.fileId, nChunks)
  }

  /**
   * Zero-fills the file to `target` (#fillTo), then runs `then`. If either fails, the file is
   * cut back to its old size by a shrinking truncate (which needs no new space): the zeros
   * sealed into its old last chunk go too, and the chunk is whole at every step.
   */
  async #extendTo (fd: number, target: number, then?: () => Promise<void>): Promise<void> {
    const before = this.size
    try {
      await this.#fillTo(fd, target)
      await then?.()
    } catch (err) {
      if (this.size > before) await this.truncate(fd, before).catch(() => undefined)
      this.#windowOpen = this.size === 0 ? false : null  // the tag on disk is read again before the next write
      throw err
    }
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
    if (this.#tail === 0) {
      await ftruncateFd(fd, this.#end(target))
      this.size = target
      return
    }
    // The new end's tag first (the file grows by a hole up to it), then the old end's tag is
    // zeroed, making its chunk a hole: a crash between leaves that one new chunk unreadable,
    // never a file whose end does not authenticate.
    try {
      await writeFullAt(fd, this.#tagOf(target), this.#end(target) - this.#tail)
    } catch (err) {
      await ftruncateFd(fd, this.#end(this.size)).catch(() => undefined)  // what a short write left past the end
      throw err
    }
    this.size = target
    this.#windowOpen = true
    this.#closedBinding = null
    if (boundary > 0) await writeFullAt(fd, Buffer.alloc(this.#tail), this.#end(boundary) - this.#tail)
  }

  /**
   * Sets the sparse flag in the header (the DEK is wrapped again) and makes it durable before
   * any hole exists. With write windows, the header moves to the next nonce of its chain (a
   * window closes: the tag on disk is bound to that nonce first), never wrapping the DEK with
   * other flags at a nonce used before.
   */
  async #markSparse (fd: number): Promise<void> {
    const flags = this.flags | FLAG_SPARSE
    if (this.#nonce !== null) {
      // The tag is bound to the next nonce for a sparse header first (a kill between the two
      // leaves a window that closes sparse), then the header moves there.
      await this.#openWindow(fd, flags)
      this.#towards(flags)
      await this.#moveHeader(fd, false)
    } else {
      await writeFullAt(fd, this.volume.rewrapHeader(this.fileId, this.dek, flags), 0)
    }
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
    await this.#reserve(fd, nChunks)
    const oldLen = Math.max(0, Math.min(this.size, runEnd) - runStart)
    // A write that moves the end writes the new end tag after its run, in the same pwrite.
    const extending = end > this.size
    const sealedLength = this.volume.chunks.sealedSize(runEnd - runStart)
    const place: Placement = { newFrom: -1, reserve: this.#holesMayFill, tail: extending ? this.#tail : 0 }
    const oldSealed = this.#end(this.size) - this.#cipherOffset(first)  // the old chunks and end tag the run goes over, if it extends
    if (extending && oldSealed > 0) {
      // The run rewrites old bytes and extends the file: a full disk can fail it in its
      // extension after it has overwritten them, so the write job keeps them and puts them
      // back (not needed where the run ends in the block the file already ends in: that
      // needs no new space).
      const oldEnd = this.#cipherOffset(first) + oldSealed
      if (this.#cipherOffset(first) + sealedLength + place.tail > Math.ceil(oldEnd / this.blockSize) * this.blockSize) place.newFrom = oldSealed
    }
    // What a crash inside the run's pwrite must not lose goes to the write journal first (the
    // job records it): the old edge chunks it keeps part of, and the end it moves.
    const partial = (runStart !== start || runEnd !== end) && oldLen > 0
    if (extending || partial) place.journal = this.volume.journal.take(this.fileId, extending ? { from: this.#end(this.size), to: this.#end(end) } : null, extending && this.#tail > 0 && this.size > 0 ? this.#currentTag() : null)
    const sealed = requestBuffers.take(sealedLength + place.tail)
    // Its tag is bound to the next link: an append opens the window too (a copy that read the
    // file while it grew may hold it whole at a size it had for a moment: it is named).
    if (place.tail > 0) this.#tagOf(end, sealed.subarray(sealedLength))
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
      if (place.journal != null) this.#afterFailure(fd, place.journal)
      throw err
    } finally {
      requestBuffers.give(sealed)  // the job that sealed and wrote it has ended, failed or not
    }
    if (place.journal != null) this.volume.journal.give(place.journal)  // the job zeroed it
    this.#counted(nChunks)
    if (end > this.size) {
      this.size = end
      if (place.tail > 0) {
        this.#windowOpen = true
        this.#closedBinding = null
      }
    }
  }
}
