import fs from 'fs'
import { readFullAtSync } from './fd-io'
import { ChunkCipher, CHUNK_OVERHEAD } from '../crypto/chunk-cipher'
import { AuthenticationError } from '../crypto/errors'
import { SecretKey, randomBytes } from '../crypto/secret-key'
import { loadAddon, PosixAddon } from '../native'
import type { RewrappedRow } from '../volume/dek-index'
import { VolumeError } from '../volume/errors'
import { FLAG_END_TAG, FLAG_SPARSE, FLAG_WRITE_WINDOW, HEADER_BYTES, headerNonce } from '../volume/file-header'
import { FileLayout } from '../volume/file-layout'
import { END_TAG_BYTES, EPOCH_CHUNKS, endTag, openEndTag, openWindowedTag, withEndTagKey } from '../crypto/end-tag'
import type { HeaderRewrap, Reencryption } from '../volume/key-rotation'
import {
  backing, listDirSync, DT_DIR, DT_REG, DT_UNKNOWN, HEADER_OUT_BYTES, HEADER_OUT_LENGTH, HEADER_OUT_SIZE, STAT_ATIME_NSEC, STAT_ATIME_SEC,
  STAT_DEV, STAT_INO_HI, STAT_INO_LO, STAT_LENGTH, STAT_MODE, STAT_MTIME_NSEC, STAT_MTIME_SEC, STAT_UID, STAT_GID, TYPE_DIR
} from './backing-addon'
import { S_IFDIR, S_IFMT, S_IFREG } from './inodes'

const posix = loadAddon<PosixAddon>('posix')

const O_RDONLY = 0
const O_WRONLY = 1
const O_RDWR = 2
const O_DIRECTORY = fs.constants.O_DIRECTORY
const O_NOATIME = 0o1000000
const EACCES = 13
const ENOENT = 2
const ENOTDIR = 20
const S_IWUSR = 0o200
const MAX_DEPTH = 2048
/** Files rewritten between two syncs: what one journal write covers. */
const BATCH = 256
/** Staging bytes of one re-encrypting batch, at most (about: one file may go over). */
const BATCH_BYTES = 64 << 20
/** Plaintext bytes re-encrypted at a time. */
const RUN_BYTES = 1 << 20
/** Holds the times and modes of the batch being rewritten (docs/FORMAT.md §2.2). */
export const ROTATION_JOURNAL = 'sealfs.rotation-journal'
const JOURNAL_MAX = 4 << 20
const SHORT = 'file shorter than its size'
/** A re-encrypted file's staging copy, in the cipher dir's root. */
const STAGING = /^sealfs\.tmp\.rotate-[0-9a-f]{24}$/

/** Backing names that hold a file's contents: encrypted names, long names, orphans (docs/FORMAT.md §1). */
const FILE_NAME = /^([A-Za-z0-9_-]+|sealfs\.long\.[A-Za-z0-9_-]+|sealfs\.orphan\.[0-9a-f]+)$/
const DIR_NAME = /^([A-Za-z0-9_-]+|sealfs\.long\.[A-Za-z0-9_-]+)$/

/** What the walk needs of a rotation (KeyRotation). */
export interface RotationSteps {
  readonly reencrypt: boolean
  readonly chunks: ChunkCipher
  rewrapHeader (bytes: Buffer): HeaderRewrap
  reencryptHeader (bytes: Buffer): Reencryption | HeaderRewrap
  rowOf (bytes: Buffer): RewrappedRow | null
  aadPrefix (fileId: Buffer): Buffer
  sealJournal (body: Buffer): Buffer
  openJournal (stored: Buffer): Buffer | null
  readonly from: number
  readonly index: { holds (row: RewrappedRow): boolean, versionOf (fileId: Buffer): number | undefined, put (rows: RewrappedRow[]): void }
}

export interface WalkProgress { done: number, total: number }

export interface WalkResult {
  files: number
  rewrapped: number
  /** Backing paths (relative to the cipher dir) of files left as they were: damaged headers or chunks, or not writable by this user. */
  damaged: string[]
  unwritable: string[]
  /**
   * Files or directories this user cannot read, or directories on another filesystem: not
   * walked, so the rotation must not end (a header there may still need the old key).
   */
  unreadable: string[]
}

/** A file's times and mode before its header was rewritten: what the journal restores. */
interface Original { atime: [number, number], mtime: [number, number], mode: number }

/** One file of a batch: its file ID (hex), backing path, and what it had before. */
interface JournalEntry extends Original { fileId: string, path: string, tmp?: string }

interface Pending {
  pathFd: number
  fd: number
  key: string
  fileId: string
  orig: Original
  row: RewrappedRow
  /** Opened to read only (a read-only file of this user's): made writable for the write, after the journal. */
  readOnly: boolean
  where: string
  /** The header to write (a rewrap), or the staging copy to copy in (a re-encryption). */
  header: Buffer | null
  tmp: { name: string, fd: number, bytes: number } | null
  sparse: boolean
}

/** An I/O failure that stops the rotation; it is resumed by running it again. */
function fail (what: string, errno: number): never {
  throw new VolumeError('rotation-in-progress', `key rotation stopped: cannot ${what} (errno ${-errno}); the volume does not mount until 'sealfs key rotate' is run again and finishes`)
}

function inodeKey (st: Float64Array): string {
  return `${st[STAT_DEV]}:${st[STAT_INO_HI]}:${st[STAT_INO_LO]}`
}

function entries (dirfd: number): Array<{ name: Buffer, type: number }> {
  const list = listDirSync(dirfd)
  if (typeof list === 'number') fail('list a directory', list)
  return list
}

/**
 * The journal of an interrupted batch, if this rotation wrote it (its MAC binds the volume
 * and the target version: a planted journal, or one another rotation left, is ignored). A
 * torn journal is ignored too: it is replaced by rename, so it was never torn in place.
 */
function readJournal (root: number, rotation: RotationSteps): JournalEntry[] {
  const raw = backing.readSmallFileAt(root, Buffer.from(ROTATION_JOURNAL), JOURNAL_MAX)
  if (raw === -ENOENT) return []
  // Any other failure stops the rotation: the journal may name staging copies that are the
  // only way back to a file cut short, and they must not be swept away.
  if (typeof raw === 'number') fail(`read ${ROTATION_JOURNAL}`, raw)
  const body = rotation.openJournal(raw)
  if (body === null) return []
  let parsed: { files: JournalEntry[] }
  try {
    parsed = JSON.parse(body.toString('utf8')) as { files: JournalEntry[] }
    if (!Array.isArray(parsed.files)) throw new Error('no files')
  } catch {
    throw new VolumeError('rotation-in-progress', `key rotation stopped: ${ROTATION_JOURNAL} is authenticated but cannot be parsed`)
  }
  {
    return parsed.files.filter(f => typeof f.fileId === 'string' && /^[0-9a-f]{32}$/.test(f.fileId) && typeof f.path === 'string' && Array.isArray(f.atime) && Array.isArray(f.mtime) &&
      f.atime.length === 2 && f.mtime.length === 2 && [...f.atime, ...f.mtime].every(Number.isSafeInteger) && Number.isInteger(f.mode) && (f.mode & ~0o7777) === 0 &&
      (f.tmp === undefined || (typeof f.tmp === 'string' && STAGING.test(f.tmp))))
  }
}

/** Replaces the journal: a new file (never one already there) written whole, synced, renamed over, the directory synced. */
function writeJournal (root: number, rotation: RotationSteps, batch: Pending[]): void {
  const files: JournalEntry[] = batch.map(p => ({ fileId: p.fileId, path: p.where, ...p.orig, ...(p.tmp !== null ? { tmp: p.tmp.name } : {}) }))
  const sealed = rotation.sealJournal(Buffer.from(JSON.stringify({ files })))
  if (sealed.length > JOURNAL_MAX) throw new VolumeError('rotation-in-progress', 'key rotation stopped: a batch\'s journal would be too large')
  const tmp = Buffer.from(`${ROTATION_JOURNAL}.tmp-${randomBytes(6).toString('hex')}`)
  const fd = backing.openAt(root, tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600, S_IFREG)
  if (fd < 0) fail('write the rotation journal', fd)
  try {
    if (euid() === 0) fs.fchownSync(fd, rootOwner.uid, rootOwner.gid)
    writeAllAt(fd, sealed, 0)
    fs.fdatasyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  const rc = backing.renameAt(root, tmp, root, Buffer.from(ROTATION_JOURNAL), 0)
  if (rc < 0) {
    backing.unlinkAt(root, tmp, 0)
    fail('write the rotation journal', rc)
  }
  const sc = backing.fsyncAt(root, Buffer.alloc(0))
  if (sc < 0) fail('sync the cipher dir', sc)
}

/** Puts a file's times and mode back (the mode whatever it is now: a write may have cleared set-ID bits). */
function restore (pathFd: number, orig: Original): void {
  const rc = backing.utimensFd(pathFd, orig.atime[0], orig.atime[1], orig.mtime[0], orig.mtime[1])
  if (rc < 0) fail('put a file\'s times back', rc)  // the journal, still in place, keeps them
  const st = new Float64Array(STAT_LENGTH)
  const sc = backing.statAt(pathFd, Buffer.alloc(0), st)
  if (sc < 0) fail('stat a file', sc)
  if ((st[STAT_MODE] & 0o7777) !== orig.mode) {
    const cc = backing.chmodFd(pathFd, orig.mode)
    if (cc < 0) fail('put a file\'s mode back', cc)
  }
}

/** The owner of the cipher dir's root: what root gives the files it makes there (the journal, staging copies). */
let rootOwner = { uid: 0, gid: 0 }
function euid (): number { return process.geteuid?.() ?? -1 }

function syncAll (root: number): void {
  const rc = posix.syncfs(root)
  if (rc < 0) fail('sync the cipher dir', rc)
}

function writeAllAt (fd: number, buf: Buffer, pos: number): void {
  for (let off = 0; off < buf.length;) {
    const n = fs.writeSync(fd, buf, off, buf.length - off, pos + off)
    if (n <= 0) throw new VolumeError('rotation-in-progress', 'key rotation stopped: a write came up short (is the disk full?)')
    off += n
  }
}


function isZero (b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false
  return true
}

/**
 * Rewraps the header of every file of the volume below `root` (a descriptor of the cipher
 * dir) with `rotation`, and the index rows with them; a re-encrypting rotation gives every
 * file a new DEK and re-encrypts it through a staging copy. Nothing is followed or opened
 * but directories and regular files of the volume's own names, each through a descriptor;
 * a file's times and mode stay as they were. Each batch is journaled and synced (syncfs)
 * before the next begins (docs/FORMAT.md §2.2).
 */
export function rewrapTree (root: number, rotation: RotationSteps, onProgress: (p: WalkProgress) => void): WalkResult {
  posix.raiseFdLimit()
  const rootSt = new Float64Array(STAT_LENGTH)
  const rc = backing.statAt(root, Buffer.alloc(0), rootSt)
  if (rc < 0) fail('stat the cipher dir', rc)
  rootOwner = { uid: rootSt[STAT_UID], gid: rootSt[STAT_GID] }
  const rootDev = rootSt[STAT_DEV]
  repairFromJournal(root, rotation, readJournal(root, rotation))
  const euid = process.geteuid?.() ?? -1
  const result: WalkResult = { files: 0, rewrapped: 0, damaged: [], unwritable: [], unreadable: [] }
  const total = countFiles(root, rootDev, 0)
  let batch: Pending[] = []
  let batchBytes = 0
  /** Inodes in the batch: a hard link's second name is not rewritten twice. */
  const inBatch = new Set<string>()
  let rows: RewrappedRow[] = []
  /** The batch's journal is written: its staging copies are what a next run repairs from. */
  let journaled = false

  const flush = (): void => {
    if (batch.length > 0) {
      if (rotation.reencrypt) syncAll(root)  // the staging copies are durable before the journal names them
      writeJournal(root, rotation, batch)
      journaled = true
      for (const p of batch) {
        if (p.readOnly) {
          const readFd = p.fd
          p.fd = -1
          fs.closeSync(readFd)
          p.fd = reopenWritable(p.pathFd, p.orig.mode)
        }
        if (p.tmp !== null) p.row.chunkWrites = copyInto(p.tmp.fd, p.fd, p.sparse, rotation.chunks.stride)
        else writeAllAt(p.fd, p.header as Buffer, 0)
      }
      // Fault injection for the tests: killed with every file of the batch written and no
      // time or mode put back, the one state only the journal can repair.
      if (process.env.SEALFS_FAULT === 'kill-after-header-writes') process.kill(process.pid, 'SIGKILL')
      if (rotation.reencrypt) syncAll(root)  // the files are whole before their rows name the new DEKs
      for (const p of batch) {
        restore(p.pathFd, p.orig)
        result.rewrapped++
        rows.push(p.row)
      }
      rotation.index.put(rows)
      rows = []
      // The batch's times are durable before the journal is replaced: here, or (re-encrypting)
      // by the sync that makes the next batch's staging copies durable first.
      if (!rotation.reencrypt) syncAll(root)
      for (const p of batch) {
        closeAll(p)
        if (p.tmp !== null) unlinkStaging(root, p.tmp.name)
      }
    }
    rotation.index.put(rows)
    batch = []
    journaled = false
    batchBytes = 0
    inBatch.clear()
    rows = []
    onProgress({ done: result.files, total })
  }

  const visitFile = (dirfd: number, name: Buffer, where: string): void => {
    const st = new Float64Array(STAT_LENGTH)
    const pathFd = backing.lookupAt(dirfd, name, st)
    if (pathFd < 0) fail(`look up ${where}`, pathFd)
    let keep = false
    try {
      if ((st[STAT_MODE] & S_IFMT) !== S_IFREG) return
      if (st[STAT_DEV] !== rootDev) {
        result.unreadable.push(`${where} (on another filesystem)`)  // a bind mount: syncfs of the cipher dir would not cover it
        return
      }
      result.files++
      const key = inodeKey(st)
      if (inBatch.has(key)) return  // another name of a file this batch rewrites
      const orig: Original = { atime: [st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC]], mtime: [st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC]], mode: st[STAT_MODE] & 0o7777 }
      const header = Buffer.alloc(HEADER_BYTES)
      const out = new Float64Array(HEADER_OUT_LENGTH)
      // A user other than root writes only files of their own: only the owner (or root) can
      // put a file's times back. A read-only file of one's own is opened to read here, and
      // made writable only once the journal holds its mode (flush).
      const writable = euid === 0 || st[STAT_UID] === euid
      let fd = writable ? backing.openHeaderFd(pathFd, O_RDWR | O_NOATIME, header, out, false) : -EACCES
      const readOnly = fd === -EACCES
      if (readOnly) fd = backing.openHeaderFd(pathFd, O_RDONLY | O_NOATIME, header, out, false)
      if (fd === -EACCES) {
        result.unreadable.push(where)
        return
      }
      if (fd < 0) fail(`open ${where}`, fd)
      let keepFd = false
      try {
        if (out[HEADER_OUT_SIZE] === 0) return  // an empty file has no header and no DEK
        const bytes = header.subarray(0, out[HEADER_OUT_BYTES])
        const queue = (fileId: Buffer, row: RewrappedRow, newHeader: Buffer | null, tmp: Pending['tmp'], sparse: boolean): void => {
          batch.push({ pathFd, fd, readOnly, key, fileId: fileId.toString('hex'), orig, header: newHeader, tmp, row, where, sparse })
          batchBytes += tmp?.bytes ?? 0
          inBatch.add(key)
          keep = keepFd = true
        }
        let reported = false
        if (rotation.reencrypt && writable) {
          const r = rotation.reencryptHeader(bytes)
          if ('kind' in r && r.kind === 'current' && rotation.index.versionOf(r.row.fileId) === rotation.from) {
            // A new header whose row still has the old DEK: a copy that was cut short, and its
            // staging copy is gone. The row is the only way back to the old DEK: stop here.
            throw new VolumeError('rotation-in-progress', `key rotation stopped: ${where} has its new header but its index row still has the old data key (a re-encryption cut short without its staging copy); restore the file from a backup of the cipher dir`)
          }
          if (!('kind' in r)) {
            let tmp: Pending['tmp']
            try {
              tmp = stage(root, rotation, r, fd, out[HEADER_OUT_SIZE])
            } finally {
              r.oldDek.dispose()
              r.newDek.dispose()
            }
            if (tmp !== null) {
              queue(r.fileId, r.row, null, tmp, (r.flags & FLAG_SPARSE) !== 0)
              return
            }
            // A chunk does not authenticate: the file keeps its DEK (rewrapped below) and is reported.
            result.damaged.push(where)
            reported = true
          }
        }
        const r = rotation.rewrapHeader(bytes)
        if (r.kind === 'damaged') {
          if (!reported) result.damaged.push(where)
        } else if (r.kind === 'current') {
          if (!rotation.index.holds(r.row)) rows.push(r.row)
        } else if (!writable) {
          // This user cannot rewrite its header (nor put its times back): its index row
          // carries the new wrap, and it is reported.
          result.unwritable.push(where)
          rows.push(r.row)
        } else if (rotation.reencrypt) {
          rows.push(r.row)  // its contents did not authenticate (reported above)
        } else {
          queue(r.row.fileId, r.row, r.header, null, false)
        }
      } finally {
        if (!keepFd) fs.closeSync(fd)
      }
    } finally {
      if (!keep) fs.closeSync(pathFd)
    }
  }

  const visitDir = (dirfd: number, where: string, depth: number): void => {
    if (depth > MAX_DEPTH) throw new VolumeError('rotation-in-progress', `key rotation stopped: the cipher dir is more than ${MAX_DEPTH} directories deep`)
    for (const e of entries(dirfd)) {
      const name = e.name.toString('latin1')
      const here = where === '' ? name : `${where}/${name}`
      if (e.type === DT_DIR || (e.type === DT_UNKNOWN && isDirAt(dirfd, e.name))) {
        if (!DIR_NAME.test(name)) continue
        const sub = openSubdir(dirfd, e.name, rootDev)
        if (sub === 'other') {
          result.unreadable.push(`${here} (another filesystem is mounted there)`)
          continue
        }
        if (sub === -EACCES) {
          result.unreadable.push(here)
          continue
        }
        if (sub < 0) fail(`open the directory ${here}`, sub)
        try {
          visitDir(sub, here, depth + 1)
        } finally {
          fs.closeSync(sub)
        }
      } else if ((e.type === DT_REG || e.type === DT_UNKNOWN) && FILE_NAME.test(name)) {
        visitFile(dirfd, e.name, here)
        if (batch.length >= BATCH || batchBytes >= BATCH_BYTES || rows.length >= 4 * BATCH) flush()
      }
    }
  }

  try {
    visitDir(root, '', 0)
    flush()
  } finally {
    for (const p of batch) {
      closeAll(p)
      if (p.tmp !== null && !journaled) backing.unlinkAt(root, Buffer.from(p.tmp.name), 0)  // never named by a journal
    }
  }
  return result
}

/**
 * A subdirectory opened to list, if it is on the cipher dir's filesystem: looked at through
 * an O_PATH descriptor first, so that a mount point there (a FUSE mount, an automount) is
 * never opened. 'other' if it is another filesystem; a negative errno if it fails.
 */
function openSubdir (dirfd: number, name: Buffer, dev: number): number | 'other' {
  const st = new Float64Array(STAT_LENGTH)
  const pathFd = backing.lookupAt(dirfd, name, st)
  if (pathFd < 0) return pathFd
  try {
    if ((st[STAT_MODE] & S_IFMT) !== S_IFDIR) return -ENOTDIR
    if (st[STAT_DEV] !== dev) return 'other'
    return backing.reopen(pathFd, O_RDONLY | O_DIRECTORY, TYPE_DIR)
  } finally {
    fs.closeSync(pathFd)
  }
}

/**
 * A descriptor to write a read-only file of this user's own with: the file is made writable
 * by its owner (the journal, written before the write, has its mode; restore puts it back).
 */
function reopenWritable (pathFd: number, mode: number): number {
  const rc = backing.chmodFd(pathFd, mode | S_IWUSR)
  if (rc < 0) fail('make a read-only file writable for its header', rc)
  const fd = backing.reopen(pathFd, O_WRONLY | O_NOATIME, S_IFREG)
  if (fd < 0) {
    backing.chmodFd(pathFd, mode)
    fail('reopen a file to write its header', fd)
  }
  return fd
}

function isDirAt (dirfd: number, name: Buffer): boolean {
  const st = new Float64Array(STAT_LENGTH)
  return backing.statAt(dirfd, name, st) >= 0 && (st[STAT_MODE] & S_IFMT) === S_IFDIR
}

/** Regular files below `dirfd`, from the directory listings alone (for the progress total). */
function countFiles (dirfd: number, dev: number, depth: number): number {
  if (depth > MAX_DEPTH) return 0
  let n = 0
  for (const e of entries(dirfd)) {
    const name = e.name.toString('latin1')
    if (e.type === DT_DIR && DIR_NAME.test(name)) {
      const sub = openSubdir(dirfd, e.name, dev)
      if (sub === 'other' || sub < 0) continue
      try {
        n += countFiles(sub, dev, depth + 1)
      } finally {
        fs.closeSync(sub)
      }
    } else if ((e.type === DT_REG || e.type === DT_UNKNOWN) && FILE_NAME.test(name)) {
      n++
    }
  }
  return n
}

let runBuffers: { sealed: Buffer, plain: Buffer } | null = null

/**
 * Re-encrypts a file into a new staging file in the root: the new header, then every chunk
 * opened with the old DEK and sealed with the new one at the same offset (a hole of a sparse
 * file stays a hole). Null, with nothing left behind, if a chunk does not authenticate.
 */
function stage (root: number, rotation: RotationSteps, r: Reencryption, fd: number, size: number): Pending['tmp'] {
  const chunks = rotation.chunks
  const layout = new FileLayout(chunks, (r.flags & FLAG_END_TAG) !== 0)
  const plainSize = layout.exactPlainSize(size)
  if (size < HEADER_BYTES || plainSize < 0) return null
  const name = `sealfs.tmp.rotate-${randomBytes(12).toString('hex')}`
  const tfd = backing.openAt(root, Buffer.from(name), O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600, S_IFREG)
  if (tfd < 0) fail('create a staging file', tfd)
  if (euid() === 0) fs.fchownSync(tfd, rootOwner.uid, rootOwner.gid)
  const prefix = rotation.aadPrefix(r.fileId)
  const sparse = (r.flags & FLAG_SPARSE) !== 0
  const C = chunks.chunkSize
  const perRun = Math.max(1, Math.floor(RUN_BYTES / C))
  // One pair of buffers for the whole walk: two fresh megabytes per file cost more than the file.
  if (runBuffers === null || runBuffers.plain.length !== perRun * C) runBuffers = { sealed: Buffer.alloc(perRun * chunks.stride), plain: Buffer.alloc(perRun * C) }
  const { sealed, plain } = runBuffers
  let used = 0
  let chunkWrites = 0
  try {
    writeAllAt(tfd, r.header, 0)
    const count = Math.ceil(plainSize / C)
    for (let first = 0; first < count; first += perRun) {
      const n = Math.min(perRun, count - first)
      const runPlain = Math.min(plainSize - first * C, n * C)
      const runSealed = chunks.sealedSize(runPlain)
      const at = HEADER_BYTES + first * chunks.stride
      if (readFullAtSync(fd, sealed.subarray(0, runSealed), at) !== runSealed) throw new Error(SHORT)
      // Chunk by chunk within the run: holes are skipped, the rest re-sealed in place.
      for (let i = 0; i < n; i++) {
        const len = Math.min(C, runPlain - i * C)
        const s = sealed.subarray(i * chunks.stride, i * chunks.stride + len + CHUNK_OVERHEAD)
        if (sparse && isZero(s)) continue
        const p = plain.subarray(0, len)
        used = Math.max(used, len)
        chunks.openSync(r.oldDek, prefix, first + i, s, p)
        chunks.sealSync(r.newDek, prefix, first + i, p, s)
        writeAllAt(tfd, s, at + i * chunks.stride)
        chunkWrites++
      }
    }
    // The end tag is keyed by the DEK: the new one's, checked first under the old one (a file
    // cut short is left as it was, as one whose chunk does not authenticate).
    if (layout.endTags && plainSize > 0) {
      const tag = Buffer.alloc(END_TAG_BYTES)
      const windowed = (r.flags & FLAG_WRITE_WINDOW) !== 0
      const opens = (k: SecretKey): boolean => windowed ? openWindowedTag(k, prefix, plainSize, tag, r.oldNonce, r.flags) !== null : openEndTag(k, prefix, plainSize, tag, null) !== null
      if (readFullAtSync(fd, tag, size - END_TAG_BYTES) !== END_TAG_BYTES || !withEndTagKey(r.oldDek, opens)) throw new AuthenticationError('end of file')
      // A new DEK starts a new count: the chunks sealed here. Bound to the new header's nonce (its window closed).
      const binding = windowed ? headerNonce(r.header.subarray(28, HEADER_BYTES)) : null
      writeAllAt(tfd, withEndTagKey(r.newDek, k => endTag(k, prefix, plainSize, Math.floor(chunkWrites / EPOCH_CHUNKS), binding)), size - END_TAG_BYTES)
    }
    fs.ftruncateSync(tfd, size)
    plain.fill(0, 0, used)
  } catch (e) {
    plain.fill(0, 0, used)
    fs.closeSync(tfd)
    backing.unlinkAt(root, Buffer.from(name), 0)
    // A chunk that does not authenticate, or a file shorter than its size said: that file
    // is left as it was. Anything else (a full disk) stops the rotation.
    if (e instanceof AuthenticationError || (e as Error).message === SHORT) return null
    throw e
  }
  r.row.chunkWrites = chunkWrites
  return { name, fd: tfd, bytes: size }
}

let copyBuffer: Buffer | null = null

/** The staging file's bytes over the file's: the header, then the chunks, a run at a time; a hole of a sparse file is left a hole. */
function copyInto (from: number, to: number, sparse: boolean, stride: number): number {
  const size = fs.fstatSync(from).size
  const header = Buffer.alloc(HEADER_BYTES)
  if (readFullAtSync(from, header, 0) !== HEADER_BYTES) throw new VolumeError('rotation-in-progress', 'key rotation stopped: a staging copy came up short')
  writeAllAt(to, header, 0)
  // Fault injection for the tests: killed with the new header written over old chunks.
  if (process.env.SEALFS_FAULT === 'kill-mid-copy') process.kill(process.pid, 'SIGKILL')
  if (copyBuffer === null || copyBuffer.length !== Math.max(1, Math.floor(RUN_BYTES / stride)) * stride) copyBuffer = Buffer.alloc(Math.max(1, Math.floor(RUN_BYTES / stride)) * stride)
  const buf = copyBuffer
  let chunks = 0
  for (let at = HEADER_BYTES; at < size;) {
    const n = readFullAtSync(from, buf.subarray(0, Math.min(buf.length, size - at)), at)
    if (n === 0) throw new VolumeError('rotation-in-progress', 'key rotation stopped: a staging copy came up short')
    for (let off = 0; off < n; off += stride) {
      const chunk = buf.subarray(off, Math.min(n, off + stride))
      if (sparse && isZero(chunk)) continue
      writeAllAt(to, chunk, at + off)
      chunks++
    }
    at += n
  }
  return chunks
}

/**
 * Repairs what a killed run left (docs/FORMAT.md §2.2), before anything else is touched:
 * each file of the journaled batch gets its times and mode back; a re-encrypted one whose
 * staging copy is still there is copied again first (the copy may have been cut short),
 * and its index row written. Stray staging copies (made, never journaled) are removed.
 */
function repairFromJournal (root: number, rotation: RotationSteps, journal: JournalEntry[]): void {
  for (const j of journal) {
    const target = openByPath(root, j.path)
    if (target === null) {
      // Not there any more (only someone writing the cipher dir could do that): nothing to repair.
      if (j.tmp !== undefined) unlinkStaging(root, j.tmp)
      continue
    }
    try {
      const header = Buffer.alloc(HEADER_BYTES)
      const out = new Float64Array(HEADER_OUT_LENGTH)
      const rfd = backing.openHeaderFd(target, O_RDONLY | O_NOATIME, header, out, false)
      if (rfd < 0) fail(`open ${j.path}`, rfd)
      fs.closeSync(rfd)
      if (out[HEADER_OUT_BYTES] !== HEADER_BYTES || header.subarray(8, 24).toString('hex') !== j.fileId) {
        if (j.tmp !== undefined) throw new VolumeError('rotation-in-progress', `key rotation stopped: ${j.path} is not the file its journal entry names; its staging copy ${j.tmp} is kept`)
        continue
      }
      if (j.tmp !== undefined) copyStagedAgain(root, rotation, j, target)
      restore(target, j)
    } finally {
      fs.closeSync(target)
    }
  }
  const named = new Set(journal.map(j => j.tmp))
  for (const e of entries(root)) {
    const name = e.name.toString('latin1')
    // Staging copies no verified journal names were never copied from: the files are whole.
    if ((STAGING.test(name) && !named.has(name)) || name.startsWith(`${ROTATION_JOURNAL}.tmp-`)) {
      const st = new Float64Array(STAT_LENGTH)
      if (backing.statAt(root, e.name, st) >= 0 && (st[STAT_MODE] & S_IFMT) === S_IFREG) backing.unlinkAt(root, e.name, 0)
    }
  }
  syncAll(root)
}

/** A journaled re-encryption whose staging copy is still there: copied over the file again, then its row. */
function copyStagedAgain (root: number, rotation: RotationSteps, j: JournalEntry, target: number): void {
  const tfd = backing.openAt(root, Buffer.from(j.tmp as string), O_RDONLY, 0, S_IFREG)
  if (tfd === -ENOENT) return  // that file was finished
  if (tfd < 0) fail(`open the staging copy ${j.tmp as string}`, tfd)
  try {
    const header = Buffer.alloc(HEADER_BYTES)
    const row = readFullAtSync(tfd, header, 0) === HEADER_BYTES ? rotation.rowOf(header) : null
    if (row === null || row.fileId.toString('hex') !== j.fileId) {
      throw new VolumeError('rotation-in-progress', `key rotation stopped: the staging copy ${j.tmp as string} of ${j.path} is not what was journaled; it is kept`)
    }
    let fd = backing.reopen(target, O_WRONLY | O_NOATIME, S_IFREG)
    if (fd === -EACCES) fd = reopenWritable(target, j.mode)
    if (fd < 0) fail(`open ${j.path}`, fd)
    try {
      row.chunkWrites = copyInto(tfd, fd, (header.readUInt16BE(6) & FLAG_SPARSE) !== 0, rotation.chunks.stride)
    } finally {
      fs.closeSync(fd)
    }
    syncAll(root)
    rotation.index.put([row])
  } finally {
    fs.closeSync(tfd)
  }
  unlinkStaging(root, j.tmp as string)
}

/** Deletes a staging copy once nothing needs it (a leftover would keep a whole copy of the file). */
function unlinkStaging (root: number, name: string): void {
  const rc = backing.unlinkAt(root, Buffer.from(name), 0)
  if (rc < 0 && rc !== -ENOENT) fail(`remove the staging copy ${name}`, rc)
}

/** The O_PATH descriptor of a regular file by its backing path, each step through a descriptor, no symlink followed; null if it is not there. */
function openByPath (root: number, rel: string): number | null {
  const parts = rel.split('/')
  if (parts.length > MAX_DEPTH + 1 || parts.slice(0, -1).some(p => !DIR_NAME.test(p)) || !FILE_NAME.test(parts[parts.length - 1])) {
    throw new VolumeError('rotation-in-progress', `key rotation stopped: the journal names '${rel.slice(0, 80)}', which is no file of the volume`)
  }
  let dir = root
  try {
    for (const part of parts.slice(0, -1)) {
      const sub = backing.openAt(dir, Buffer.from(part, 'latin1'), O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
      if (sub === -ENOENT || sub === -ENOTDIR) return null
      if (sub < 0) fail(`open the directory of ${rel}`, sub)
      if (dir !== root) fs.closeSync(dir)
      dir = sub
    }
    const st = new Float64Array(STAT_LENGTH)
    const pathFd = backing.lookupAt(dir, Buffer.from(parts[parts.length - 1], 'latin1'), st)
    if (pathFd === -ENOENT) return null
    if (pathFd < 0) fail(`look up ${rel}`, pathFd)
    if ((st[STAT_MODE] & S_IFMT) !== S_IFREG) {
      fs.closeSync(pathFd)
      return null
    }
    return pathFd
  } finally {
    if (dir !== root) fs.closeSync(dir)
  }
}

function closeAll (p: Pending): void {
  const fds = [p.fd, p.pathFd, p.tmp?.fd ?? -1]
  p.fd = p.pathFd = -1
  if (p.tmp !== null) p.tmp.fd = -1
  for (const fd of fds) if (fd >= 0) fs.closeSync(fd)
}

/** The cipher dir root's times now, and a function that puts them back (it is the mount's root directory). */
export function keepTimes (root: number): () => void {
  const st = new Float64Array(STAT_LENGTH)
  const rc = backing.statAt(root, Buffer.alloc(0), st)
  if (rc < 0) fail('stat the cipher dir', rc)
  return () => { backing.utimensFd(root, st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC], st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC]) }
}

/** Removes the journal once every batch is done and synced, before the rotation ends (a journal must never outlive its rotation). */
export function removeJournal (root: number): void {
  syncAll(root)  // every batch's times first
  const rc = backing.unlinkAt(root, Buffer.from(ROTATION_JOURNAL), 0)
  if (rc < 0 && rc !== -ENOENT) fail('remove the rotation journal', rc)
  syncAll(root)
}
