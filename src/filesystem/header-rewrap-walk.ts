import fs from 'fs'
import { loadAddon, PosixAddon } from '../native'
import type { RewrappedRow } from '../volume/dek-index'
import { VolumeError } from '../volume/errors'
import { HEADER_BYTES } from '../volume/file-header'
import type { HeaderRewrap } from '../volume/key-rotation'
import {
  backing, DIRENT_HEADER, DT_DIR, DT_REG, DT_UNKNOWN, HEADER_OUT_BYTES, HEADER_OUT_LENGTH, HEADER_OUT_SIZE, STAT_ATIME_NSEC, STAT_ATIME_SEC,
  STAT_DEV, STAT_INO_HI, STAT_INO_LO, STAT_LENGTH, STAT_MODE, STAT_MTIME_NSEC, STAT_MTIME_SEC, STAT_UID, TYPE_DIR
} from './backing-addon'

const posix = loadAddon<PosixAddon>('posix')

const O_RDONLY = 0
const O_WRONLY = 1
const O_RDWR = 2
const O_DIRECTORY = fs.constants.O_DIRECTORY
const O_NOATIME = 0o1000000
const EACCES = 13
const S_IFMT = 0o170000
const S_IFREG = 0o100000
const S_IWUSR = 0o200
const MAX_DEPTH = 2048
/** Files whose headers are rewritten between two syncs: what one journal write covers. */
const BATCH = 256
/** Holds the times and modes of the batch being rewritten (docs/FORMAT.md §2.2). */
export const ROTATION_JOURNAL = 'sealfs.rotation-journal'
const JOURNAL_MAX = 1 << 20

/** Backing names that hold a file's contents: encrypted names, long names, orphans (docs/FORMAT.md §1). */
const FILE_NAME = /^([A-Za-z0-9_-]+|sealfs\.long\.[A-Za-z0-9_-]+|sealfs\.orphan\.[0-9a-f]+)$/
const DIR_NAME = /^([A-Za-z0-9_-]+|sealfs\.long\.[A-Za-z0-9_-]+)$/

/** What the walk needs of a rotation (KeyRotation). */
export interface HeaderRewrapper {
  rewrapHeader (bytes: Buffer): HeaderRewrap
  readonly index: { holds (row: RewrappedRow): boolean, put (rows: RewrappedRow[]): void }
}

export interface WalkProgress { done: number, total: number }

export interface WalkResult {
  files: number
  rewrapped: number
  /** Backing paths (relative to the cipher dir) of files left as they were: damaged headers, or not writable by this user. */
  damaged: string[]
  unwritable: string[]
}

/** A file's times and mode before its header was rewritten: what the journal restores. */
interface Original { atime: [number, number], mtime: [number, number], mode: number }

interface Pending { pathFd: number, fd: number, key: string, orig: Original, header: Buffer, row: RewrappedRow, writable: boolean, where: string, uid: number }

function fail (what: string, errno: number): never {
  throw new VolumeError('damaged-config', `key rotation: cannot ${what} (errno ${-errno})`)
}

function inodeKey (st: Float64Array): string {
  return `${st[STAT_DEV]}:${st[STAT_INO_HI]}:${st[STAT_INO_LO]}`
}

function entries (dirfd: number): Array<{ name: Buffer, type: number }> {
  const raw = backing.readdirFd(dirfd)
  if (typeof raw === 'number') fail('list a directory', raw)
  const out: Array<{ name: Buffer, type: number }> = []
  for (let at = 0; at + DIRENT_HEADER <= raw.length;) {
    const len = raw[at + DIRENT_HEADER - 1]
    out.push({ type: raw[at + 8], name: Buffer.from(raw.subarray(at + DIRENT_HEADER, at + DIRENT_HEADER + len)) })
    at += DIRENT_HEADER + len
  }
  return out
}

/**
 * The journal of an interrupted batch: each file's times and mode from before its header was
 * rewritten. A torn journal is ignored: it was being written, so no file of its batch had
 * been touched yet, and the batch before it had been synced whole.
 */
function readJournal (root: number): Map<string, Original> {
  const out = new Map<string, Original>()
  const raw = backing.readSmallFileAt(root, Buffer.from(ROTATION_JOURNAL), JOURNAL_MAX)
  if (typeof raw === 'number') return out
  try {
    const parsed = JSON.parse(raw.toString('utf8')) as { files: Array<{ inode: string, atime: [number, number], mtime: [number, number], mode: number }> }
    for (const f of parsed.files) {
      const ok = typeof f.inode === 'string' && [...f.atime, ...f.mtime].every(Number.isSafeInteger) && f.atime.length === 2 && f.mtime.length === 2 &&
        Number.isInteger(f.mode) && (f.mode & ~0o7777) === 0
      if (ok) out.set(f.inode, { atime: f.atime, mtime: f.mtime, mode: f.mode })
    }
  } catch {
    out.clear()
  }
  return out
}

function writeJournal (root: number, batch: Pending[]): void {
  const text = JSON.stringify({ files: batch.map(p => ({ inode: p.key, ...p.orig })) })
  const fd = backing.openAt(root, Buffer.from(ROTATION_JOURNAL), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600, S_IFREG)
  if (fd < 0) fail('write the rotation journal', fd)
  try {
    fs.writeSync(fd, text)
    fs.fdatasyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

function restore (pathFd: number, orig: Original, mode: number): void {
  backing.utimensFd(pathFd, orig.atime[0], orig.atime[1], orig.mtime[0], orig.mtime[1])
  if (mode !== orig.mode) backing.chmodFd(pathFd, orig.mode)
}

/**
 * Rewraps the header of every file of the volume below `root` (a descriptor of the cipher
 * dir) with `rotation`, and the index rows with them. Nothing is followed or opened but
 * directories and regular files of the volume's own names, each through a descriptor; a
 * file's times and mode stay as they were (journaled per batch, so a kill -9 between a
 * header write and the restore of its times is undone at the next run). Every batch is
 * synced (syncfs) before the next begins.
 */
export function rewrapTree (root: number, rotation: HeaderRewrapper, onProgress: (p: WalkProgress) => void): WalkResult {
  posix.raiseFdLimit()
  const journal = readJournal(root)
  const euid = process.geteuid?.() ?? -1
  const result: WalkResult = { files: 0, rewrapped: 0, damaged: [], unwritable: [] }
  const total = countFiles(root, 0)
  let batch: Pending[] = []
  /** Inodes in the batch: a hard link's second name is not rewritten twice. */
  const inBatch = new Set<string>()
  let rows: RewrappedRow[] = []

  const flush = (): void => {
    if (batch.length > 0) {
      writeJournal(root, batch)
      const written = batch.map(p => writeHeader(p, euid))
      // Fault injection for the tests: killed with every header of the batch written and
      // no time or mode put back, the one state only the journal can repair.
      if (process.env.SEALFS_FAULT === 'kill-after-header-writes') process.kill(process.pid, 'SIGKILL')
      batch.forEach((p, i) => {
        if (written[i] !== null) {
          restore(p.pathFd, p.orig, written[i] as number)
          result.rewrapped++
          rows.push(p.row)
        } else {
          result.unwritable.push(p.where)
        }
        closeAll(p)
      })
      const rc = posix.syncfs(root)
      if (rc < 0) fail('sync the cipher dir', rc)
    }
    rotation.index.put(rows)
    batch = []
    inBatch.clear()
    rows = []
    onProgress({ done: result.files, total })
  }

  const visitFile = (dirfd: number, name: Buffer, where: string): void => {
    const st = new Float64Array(STAT_LENGTH)
    const pathFd = backing.lookupAt(dirfd, name, st)
    if (pathFd < 0) fail('look up a file', pathFd)
    let keep = false
    try {
      if ((st[STAT_MODE] & S_IFMT) !== S_IFREG) return
      result.files++
      const key = inodeKey(st)
      if (inBatch.has(key)) return  // another name of a file this batch rewrites
      const orig = journal.get(key) ?? { atime: [st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC]], mtime: [st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC]], mode: st[STAT_MODE] & 0o7777 }
      const header = Buffer.alloc(HEADER_BYTES)
      const out = new Float64Array(HEADER_OUT_LENGTH)
      let writable = true
      let fd = backing.openHeaderFd(pathFd, O_RDWR | O_NOATIME, header, out, false)
      if (fd === -EACCES) {
        writable = false
        fd = backing.openHeaderFd(pathFd, O_RDONLY | O_NOATIME, header, out, false)
      }
      if (fd === -EACCES) {
        result.unwritable.push(where)  // not even readable by this user
        return
      }
      if (fd < 0) fail('open a file', fd)
      let keepFd = false
      try {
        if (out[HEADER_OUT_SIZE] === 0) return  // an empty file has no header and no DEK
        const r = rotation.rewrapHeader(header.subarray(0, out[HEADER_OUT_BYTES]))
        if (r.kind === 'damaged') {
          result.damaged.push(where)
        } else if (r.kind === 'current') {
          if (journal.has(key)) restore(pathFd, orig, st[STAT_MODE] & 0o7777)  // its batch was cut short after the header was written
          if (!rotation.index.holds(r.row)) rows.push(r.row)
        } else {
          batch.push({ pathFd, fd, key, orig, header: r.header, row: r.row, writable, where, uid: st[STAT_UID] })
          inBatch.add(key)
          keep = keepFd = true
        }
      } finally {
        if (!keepFd) fs.closeSync(fd)
      }
    } finally {
      if (!keep) fs.closeSync(pathFd)
    }
    if (batch.length >= BATCH || rows.length >= 4 * BATCH) flush()
  }

  const visitDir = (dirfd: number, where: string, depth: number): void => {
    if (depth > MAX_DEPTH) throw new VolumeError('damaged-config', `key rotation: the cipher dir is more than ${MAX_DEPTH} directories deep`)
    for (const e of entries(dirfd)) {
      const name = e.name.toString('latin1')
      const here = where === '' ? name : `${where}/${name}`
      if (e.type === DT_DIR || (e.type === DT_UNKNOWN && isDirAt(dirfd, e.name))) {
        if (!DIR_NAME.test(name)) continue
        const sub = backing.openAt(dirfd, e.name, O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
        if (sub < 0) fail('open a directory', sub)
        try {
          visitDir(sub, here, depth + 1)
        } finally {
          fs.closeSync(sub)
        }
      } else if ((e.type === DT_REG || e.type === DT_UNKNOWN) && FILE_NAME.test(name)) {
        visitFile(dirfd, e.name, here)
      }
    }
  }

  try {
    visitDir(root, '', 0)
    flush()
  } finally {
    for (const p of batch) closeAll(p)
  }
  return result
}

function isDirAt (dirfd: number, name: Buffer): boolean {
  const st = new Float64Array(STAT_LENGTH)
  return backing.statAt(dirfd, name, st) >= 0 && (st[STAT_MODE] & S_IFMT) === 0o040000
}

/** Regular files below `dirfd`, from the directory listings alone (for the progress total). */
function countFiles (dirfd: number, depth: number): number {
  if (depth > MAX_DEPTH) return 0
  let n = 0
  for (const e of entries(dirfd)) {
    const name = e.name.toString('latin1')
    if (e.type === DT_DIR && DIR_NAME.test(name)) {
      const sub = backing.openAt(dirfd, e.name, O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
      if (sub < 0) continue
      try {
        n += countFiles(sub, depth + 1)
      } finally {
        fs.closeSync(sub)
      }
    } else if ((e.type === DT_REG || e.type === DT_UNKNOWN) && FILE_NAME.test(name)) {
      n++
    }
  }
  return n
}

/**
 * Writes a rewrapped header over the old one; the caller puts the file's times (and mode)
 * back. A file this user may not write (a read-only file of its own, as git's objects are)
 * is made writable by its owner for the write; the journal has its mode. Returns the mode
 * the file has now, or null if it could not be written.
 */
function writeHeader (p: Pending, euid: number): number | null {
  let fd = p.fd
  let opened = -1
  let mode = p.orig.mode
  if (!p.writable) {
    if (p.uid !== euid) return null
    mode = p.orig.mode | S_IWUSR
    if (backing.chmodFd(p.pathFd, mode) < 0) return null
    opened = backing.reopen(p.pathFd, O_WRONLY | O_NOATIME, S_IFREG)
    if (opened < 0) {
      backing.chmodFd(p.pathFd, p.orig.mode)
      return null
    }
    fd = opened
  }
  try {
    for (let off = 0; off < p.header.length;) {
      const n = fs.writeSync(fd, p.header, off, p.header.length - off, off)
      if (n <= 0) throw new VolumeError('damaged-config', 'key rotation: a header write came up short')
      off += n
    }
  } catch (e) {
    backing.chmodFd(p.pathFd, p.orig.mode)
    throw e
  } finally {
    if (opened >= 0) fs.closeSync(opened)
  }
  return mode
}

function closeAll (p: Pending): void {
  if (p.fd >= 0) fs.closeSync(p.fd)
  if (p.pathFd >= 0) fs.closeSync(p.pathFd)
  p.fd = p.pathFd = -1
}

/** Removes the journal once the rotation is over (nothing is left to undo). */
export function removeJournal (root: number): void {
  backing.unlinkAt(root, Buffer.from(ROTATION_JOURNAL), 0)
}
