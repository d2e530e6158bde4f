import fs from 'fs'
import path from 'path'
import { JournalSlot } from '../crypto/chunk-cipher'
import { END_TAG_BYTES } from '../crypto/end-tag'
import { HEADER_BYTES } from './file-header'

/**
 * The write journal (docs/FORMAT.md §8): before a write goes over bytes that must survive it
 * being cut short (a chunk it keeps part of, the end of the file it moves), its record of
 * them goes to a slot of sealfs.write-journal; once the write is done, the record's magic
 * is zeroed. A kill -9 inside the write's pwrite leaves a chunk half old, half new, which
 * no longer authenticates: the record puts the old one back (FileContents, at the file's
 * next open, and fsck --repair), so that a crash never makes unreadable the bytes outside
 * what the write itself covered.
 */
export const WRITE_JOURNAL_FILE = 'sealfs.write-journal'

const MAGIC = Buffer.from('SFJ1', 'latin1')
/**
 * magic (4) || used bytes (u32) || file ID (16) || old backing size (u64) || new backing size
 * (u64) || old end tag (20) || run position (u64) || run nonce (12) || extents (u32).
 */
const RECORD_HEAD_BYTES = 84
const TAG_AT = 40
const RUN_AT = 60
const COUNT_AT = 80
/** Each extent: position (u64) || length (u32) || new nonce (12) || that many old sealed bytes. */
const EXTENT_HEAD_BYTES = 24
const MAX_EXTENTS = 2
/** The old backing size of a write that does not move the end. */
const SIZE_UNCHANGED = 0xffff_ffff_ffff_ffffn
/** Slots read at most (a journal longer than that was not written by sealfs). */
const MAX_SLOTS = 4096
/** Journal bytes made at open, so that an overwrite needs no new space in it on a full disk. */
const PREALLOCATE_BYTES = 256 * 1024

/** A record found at open (or kept after a write that failed): a write that may have torn its file. */
export interface InterruptedWrite {
  readonly slot: number
  readonly fileId: Buffer
  /** The backing file's size before the write, or null if the write did not move its end. */
  readonly oldBackingSize: number | null
  /** Its size after the write (as oldBackingSize, null if the same). */
  readonly newBackingSize: number | null
  /** The end tag at that size (zeros if none). */
  readonly oldEndTag: Buffer
  /** Where the write's run began, and the nonce it wrote there first: whether a torn file is this write's doing. */
  readonly runPosition: number
  readonly runNonce: Buffer
  /** The old sealed chunks the write went over, by position in the backing file, with the nonce the write gave each. */
  readonly extents: ReadonlyArray<{ position: number, newNonce: Buffer, sealed: Buffer }>
}

interface Slot extends JournalSlot { readonly index: number, keep?: boolean }

export class WriteJournal {
  readonly #fd: number
  readonly #slotBytes: number
  /** Free slots: an index (its buffer not made yet: a journal may have thousands) or a slot used before. */
  readonly #free: Array<number | Slot> = []
  #slots: number
  /** Records found at open and not settled yet, by file ID (hex). */
  readonly #interrupted = new Map<string, InterruptedWrite[]>()
  #closed = false

  private constructor (fd: number, slotBytes: number, slots: number, readonly readOnly: boolean) {
    this.#fd = fd
    this.#slotBytes = slotBytes
    this.#slots = slots
  }

  /**
   * Opens (read-write: creates) the journal of the volume in `dir` whose chunks are `stride`
   * bytes sealed, and reads the records a stopped mount left. Never follows a symlink nor
   * blocks on a FIFO; a journal that is not a regular file is left alone (`notices` says so).
   */
  static open (dir: string, stride: number, readOnly: boolean, notices: string[]): WriteJournal {
    const slotBytes = Math.ceil((RECORD_HEAD_BYTES + MAX_EXTENTS * (EXTENT_HEAD_BYTES + stride)) / 512) * 512
    const file = path.join(dir, WRITE_JOURNAL_FILE)
    const { O_RDONLY, O_RDWR, O_CREAT, O_NOFOLLOW, O_NONBLOCK } = fs.constants  // (libuv adds O_CLOEXEC)
    let fd = -1
    try {
      fd = fs.openSync(file, (readOnly ? O_RDONLY : O_RDWR | O_CREAT) | O_NOFOLLOW | O_NONBLOCK, 0o600)
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (readOnly && code === 'ENOENT') return new WriteJournal(-1, slotBytes, 0, true)
      notices.push(`${file} cannot be opened (${code ?? 'error'}): writes are not journaled, and a crash inside one can leave the chunks it shares with other data unreadable`)
      return new WriteJournal(-1, slotBytes, 0, true)
    }
    const st = fs.fstatSync(fd)
    if (!st.isFile()) {
      fs.closeSync(fd)
      notices.push(`${file} is not a regular file: writes are not journaled until it is removed`)
      return new WriteJournal(-1, slotBytes, 0, true)
    }
    // (The last slot may be short: a slot made by take() is as long as the record written to it.)
    const slots = Math.min(MAX_SLOTS, Math.ceil(st.size / slotBytes))
    const journal = new WriteJournal(fd, slotBytes, slots, readOnly)
    journal.#load(slots)
    if (!readOnly) journal.#preallocate()
    if (!readOnly && journal.#free.length === 0 && journal.#slots >= MAX_SLOTS) {
      notices.push(`${file} has no free slot (${journal.interruptedCount} records of interrupted writes): writes are not journaled until 'sealfs fsck --repair' settles them`)
    }
    return journal
  }

  /**
   * Empties the journal of the volume in `dir` (not mounted, no record in it): after a
   * re-encryption its slots hold old chunks sealed under retired data keys.
   */
  static wipe (dir: string): void {
    const { O_WRONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants
    let fd: number
    try {
      fd = fs.openSync(path.join(dir, WRITE_JOURNAL_FILE), O_WRONLY | O_NOFOLLOW | O_NONBLOCK)
    } catch {
      return  // none, or not ours to touch (a symlink): nothing of it was written
    }
    try {
      if (!fs.fstatSync(fd).isFile()) return
      fs.ftruncateSync(fd, 0)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  }

  /** The records of stopped writes; slots holding none are free. */
  #load (slots: number): void {
    const buf = Buffer.alloc(this.#slotBytes)
    for (let i = 0; i < slots; i++) {
      const got = fs.readSync(this.#fd, buf, 0, buf.length, i * this.#slotBytes)
      const rec = got >= RECORD_HEAD_BYTES && buf.subarray(0, 4).equals(MAGIC) ? parseRecord(buf.subarray(0, got), i) : null
      if (rec === null) {
        this.#free.push(i)
        continue
      }
      this.#remember(rec)
    }
  }

  #remember (rec: InterruptedWrite): void {
    const key = rec.fileId.toString('hex')
    const list = this.#interrupted.get(key) ?? []
    list.push(rec)
    this.#interrupted.set(key, list)
  }

  /** Makes the first slots' space now (best effort): a write on a full disk then finds it. */
  #preallocate (): void {
    const want = Math.max(2, Math.floor(PREALLOCATE_BYTES / this.#slotBytes))
    try {
      const zeros = Buffer.alloc(this.#slotBytes)
      while (this.#slots < want) {
        fs.writeSync(this.#fd, zeros, 0, zeros.length, this.#slots * this.#slotBytes)
        this.#free.push(this.#slots++)
      }
    } catch { /* a full disk: slots are made when first needed */ }
  }

  #slot (index: number): Slot {
    return { index, fd: this.#fd, position: index * this.#slotBytes, record: Buffer.alloc(this.#slotBytes) }
  }

  /** Writes that were running when the volume last stopped, not settled yet. */
  get interruptedCount (): number {
    let n = 0
    for (const list of this.#interrupted.values()) n += list.length
    return n
  }

  /** The unsettled records of the file with this ID (none, nearly always). */
  interruptedFor (fileId: Buffer): InterruptedWrite[] {
    if (this.#interrupted.size === 0) return []
    return this.#interrupted.get(fileId.toString('hex')) ?? []
  }

  /** Every unsettled record. */
  allInterrupted (): InterruptedWrite[] {
    return [...this.#interrupted.values()].flat()
  }

  /** A record is settled (its file is whole, or was put back): it is zeroed and its slot reused. */
  settle (rec: InterruptedWrite): void {
    const key = rec.fileId.toString('hex')
    const list = this.#interrupted.get(key) ?? []
    if (!list.includes(rec)) return  // settled already (two copies of one file, say)
    const rest = list.filter(r => r !== rec)
    if (rest.length > 0) this.#interrupted.set(key, rest)
    else this.#interrupted.delete(key)
    if (this.readOnly || this.#fd < 0) return
    fs.writeSync(this.#fd, Buffer.alloc(4), 0, 4, rec.slot * this.#slotBytes)
    this.#free.push(rec.slot)
  }

  /**
   * A slot for a write of the file `fileId` that goes over bytes a crash must not lose, its
   * head written: the backing sizes before and after the write and the end tag before it,
   * when the write moves the end (else null). null where the volume has no usable journal
   * (read-only, or every slot a reader reads is taken).
   */
  take (fileId: Buffer, sizes: { from: number, to: number } | null, oldEndTag: Buffer | null): JournalSlot | null {
    if (this.readOnly || this.#fd < 0 || this.#closed) return null
    // Never past the slots a reader reads (all taken: records planted, or left unsettled).
    if (this.#free.length === 0 && this.#slots >= MAX_SLOTS) return null
    const free = this.#free.pop() ?? this.#slots++
    const slot = typeof free === 'number' ? this.#slot(free) : free
    const r = slot.record
    MAGIC.copy(r, 0)
    r.writeUInt32BE(RECORD_HEAD_BYTES, 4)  // no extents yet: the job (or addExtent) adds them
    fileId.copy(r, 8)
    putSize(r, sizes === null ? -1 : sizes.from, 24)
    putSize(r, sizes === null ? -1 : sizes.to, 32)
    if (oldEndTag !== null) oldEndTag.copy(r, TAG_AT)
    else r.fill(0, TAG_AT, TAG_AT + END_TAG_BYTES)
    r.fill(0, RUN_AT, COUNT_AT)
    r.writeUInt32BE(0, COUNT_AT)
    return slot
  }

  /** The record of a write that is done (the job zeroed its magic): the slot is free. */
  give (slot: JournalSlot): void {
    slot.keep = false
    this.#free.push(slot as Slot)
  }

  /** The record of a write that is done but was kept (`keep`): zeroed here, and the slot is free. `here`: on this thread (a local disk). */
  async spend (slot: JournalSlot, here = false): Promise<void> {
    const zeros = Buffer.alloc(4)
    if (here) fs.writeSync(this.#fd, zeros, 0, 4, slot.position)
    else await new Promise<void>((resolve, reject) => fs.write(this.#fd, zeros, 0, 4, slot.position, err => err ? reject(err) : resolve()))
    this.give(slot)
  }

  /**
   * Writes the record of a slot from take() for a write made on the JS thread rather than by a
   * job (an end tag rewritten in place, which a kill can cut at a page boundary): the write's
   * position and its first bytes, then the record, on disk before the write begins. Kept until
   * spend(); if this fails, the slot is free again and nothing is on disk. `here`: on this
   * thread (a local disk, as the write itself).
   */
  async record (slot: JournalSlot, runPosition: number, runFirst: Buffer, here = false): Promise<void> {
    const r = slot.record
    r.writeUInt32BE(Math.floor(runPosition / 2 ** 32), RUN_AT)
    r.writeUInt32BE(runPosition >>> 0, RUN_AT + 4)
    runFirst.copy(r, RUN_AT + 8, 0, COUNT_AT - RUN_AT - 8)
    slot.keep = true
    const used = r.readUInt32BE(4)
    const short = (): Error => Object.assign(new Error('short write'), { code: 'EIO' })
    try {
      if (here) {
        if (fs.writeSync(this.#fd, r, 0, used, slot.position) !== used) throw short()
      } else {
        await new Promise<void>((resolve, reject) => fs.write(this.#fd, r, 0, used, slot.position, (err, n) => err !== null ? reject(err) : n !== used ? reject(short()) : resolve()))
      }
    } catch (e) {
      r.fill(0, 0, 4)
      this.give(slot)
      throw e
    }
  }

  /** Puts the old sealed chunk at `position` in a slot from take(), for a write job that seals over it (a truncate's last chunk). */
  addExtent (slot: JournalSlot, position: number, sealed: Buffer): void {
    const r = slot.record
    const used = r.readUInt32BE(4)
    const count = r.readUInt32BE(COUNT_AT)
    if (count >= MAX_EXTENTS || used + EXTENT_HEAD_BYTES + sealed.length > r.length) throw new RangeError('journal record too long')
    r.writeBigUInt64BE(BigInt(position), used)
    r.writeUInt32BE(sealed.length, used + 8)
    r.fill(0, used + 12, used + EXTENT_HEAD_BYTES)  // the job fills in the new nonce
    sealed.copy(r, used + EXTENT_HEAD_BYTES)
    r.writeUInt32BE(used + EXTENT_HEAD_BYTES + sealed.length, 4)
    r.writeUInt32BE(count + 1, COUNT_AT)
  }

  /**
   * A write job with this slot failed. If its record is on disk (the job wrote it before the
   * write failed: the magic is still in the slot's bytes), it is kept as an interrupted write
   * and returned, for the writer to settle at once (the job put the old chunks back, but a
   * failure may have stopped that too). Else the slot is free, and null is returned.
   */
  failed (slot: JournalSlot): InterruptedWrite | null {
    const s = slot as Slot
    const rec = s.record.subarray(0, 4).equals(MAGIC) ? parseRecord(s.record, s.index) : null
    s.keep = false
    if (rec === null) this.#free.push(s)
    else this.#remember(rec)
    return rec
  }

  close (): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#fd >= 0) fs.closeSync(this.#fd)
  }
}

/** A size as u64 BE at `at` (-1: SIZE_UNCHANGED), without a BigInt (take() runs for every append). */
function putSize (r: Buffer, size: number, at: number): void {
  r.writeUInt32BE(size < 0 ? 0xffffffff : Math.floor(size / 2 ** 32), at)
  r.writeUInt32BE(size < 0 ? 0xffffffff : size >>> 0, at + 4)
}

/** A record as read from slot `slot`, or null if it is not one (a torn or planted slot). */
function parseRecord (b: Buffer, slot: number): InterruptedWrite | null {
  if (b.length < RECORD_HEAD_BYTES) return null
  const used = b.readUInt32BE(4)
  const count = b.readUInt32BE(COUNT_AT)
  if (used < RECORD_HEAD_BYTES || used > b.length || count > MAX_EXTENTS) return null
  const size = b.readBigUInt64BE(24)
  const newSize = b.readBigUInt64BE(32)
  const run = b.readBigUInt64BE(RUN_AT)
  const max = BigInt(Number.MAX_SAFE_INTEGER)
  if ((size === SIZE_UNCHANGED) !== (newSize === SIZE_UNCHANGED) || (size !== SIZE_UNCHANGED && (size > max || newSize > max)) || run < BigInt(HEADER_BYTES) || run > max) return null
  const extents: Array<{ position: number, newNonce: Buffer, sealed: Buffer }> = []
  let at = RECORD_HEAD_BYTES
  for (let i = 0; i < count; i++) {
    if (at + EXTENT_HEAD_BYTES > used) return null
    const position = b.readBigUInt64BE(at)
    const length = b.readUInt32BE(at + 8)
    if (position < BigInt(HEADER_BYTES) || position > BigInt(Number.MAX_SAFE_INTEGER) || at + EXTENT_HEAD_BYTES + length > used) return null
    extents.push({
      position: Number(position),
      newNonce: Buffer.from(b.subarray(at + 12, at + EXTENT_HEAD_BYTES)),
      sealed: Buffer.from(b.subarray(at + EXTENT_HEAD_BYTES, at + EXTENT_HEAD_BYTES + length))
    })
    at += EXTENT_HEAD_BYTES + length
  }
  if (at !== used) return null
  return {
    slot,
    fileId: Buffer.from(b.subarray(8, 24)),
    oldBackingSize: size === SIZE_UNCHANGED ? null : Number(size),
    newBackingSize: newSize === SIZE_UNCHANGED ? null : Number(newSize),
    oldEndTag: Buffer.from(b.subarray(TAG_AT, TAG_AT + END_TAG_BYTES)),
    runPosition: Number(run),
    runNonce: Buffer.from(b.subarray(RUN_AT + 8, COUNT_AT)),
    extents
  }
}
