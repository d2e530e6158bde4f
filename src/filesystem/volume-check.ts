import fs from 'fs'
import { readFullAtSync, writeAllAtSync } from './fd-io'
import { settleInterruptedWrite } from './interrupted-write'
import { WRITE_JOURNAL_FILE } from '../volume/write-journal'
import { AuthenticationError } from '../crypto/errors'
import { DIR_ID_BYTES } from '../crypto/name-cipher'
import { randomBytes } from '../crypto/secret-key'
import { DIR_ID_FILE, newDirId } from '../volume/dir-id'
import { decodeHeader, FileHeader, FLAG_END_TAG, FLAG_SPARSE, FLAG_WRITE_WINDOW, HEADER_BYTES, headerNonce } from '../volume/file-header'
import { FileLayout } from '../volume/file-layout'
import { END_TAG_BYTES, EPOCH_CHUNKS, WindowedTag, endTag, nextNonce, openEndTag, openWindowedTag, withEndTagKey } from '../crypto/end-tag'
import type { Volume } from '../volume/volume'
import { VolumeError } from '../volume/errors'
import { loadAddon, PosixAddon } from '../native'
import {
  AT_REMOVEDIR, backing, listDirSync, READLINK_BUFFER, STAT_ATIME_NSEC, STAT_ATIME_SEC, STAT_DEV, STAT_MTIME_NSEC, STAT_MTIME_SEC, STAT_INO_HI, STAT_INO_LO, STAT_LENGTH, STAT_MODE, STAT_SIZE, STAT_UID, STAT_GID, TYPE_DIR, TYPE_REG
} from './backing-addon'
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from './inodes'
import { LONG_PREFIX, LONG_SIDECAR_SUFFIX, TEMP_PREFIX, longHash } from './entry-names'
import { XATTR_BUF, XATTR_PREFIX } from './entries'

const O_RDONLY = 0
const O_WRONLY = 1
const O_RDWR = 2
const EACCES = 13
const O_CREAT = 0o100
const O_EXCL = 0o200
const O_DIRECTORY = fs.constants.O_DIRECTORY
const O_NOATIME = 0o1000000
const MAX_DEPTH = 2048
const SIDECAR_MAX = 4096
/** Links of a header's nonce chain fsck follows, after and before the header's, to find the one a file's end tag is bound to (docs/FORMAT.md §6.4). */
const WINDOW_AHEAD = 4096
const WINDOW_BEHIND = 4096
/** Plaintext bytes opened at a time. */
const RUN_BYTES = 1 << 20
/** Where --repair moves entries it cannot decrypt (in the cipher dir's root; listings skip it). */
export const QUARANTINE = 'sealfs.quarantine'
/** sealfs's own files in the cipher dir's root, none of them an entry. */
const ROOT_FILES = new Set(['sealfs.conf', 'sealfs.index', 'sealfs.index-journal', 'sealfs.lock', 'sealfs.conf.lock', 'sealfs.lease', WRITE_JOURNAL_FILE, QUARANTINE])
/** What a crash may leave: temporary entries, orphaned open-unlinked files, a rotation's leftovers, config temps. */
const BASE64URL = /^[A-Za-z0-9_-]+$/
const LEFTOVER = /^(sealfs\.tmp\..+|sealfs\.orphan\.[0-9a-f]+|sealfs\.rotation-journal.*|sealfs\.conf\.tmp-.+|sealfs\.long\.[A-Za-z0-9_-]+\.name\.tmp-.+)$/s

export interface Problem {
  /** The plaintext path (from the mount's root) where it is known, else the backing path. */
  path: string
  what: string
  repaired: boolean
}

/** A damaged file whose readable bytes --salvage copied out. */
export interface Salvaged {
  path: string
  /** Its copy, relative to the salvage directory. */
  to: string
  /** Plaintext size of the copy (bytes that did not authenticate are zeros in it). */
  size: number
  /** Byte ranges [first, last] lost; `last` null: to the end of the file (a torn last chunk, whose length is unknown). */
  lost: Array<[number, number | null]>
}

export interface CheckResult {
  directories: number
  files: number
  symlinks: number
  bytes: number
  problems: Problem[]
  salvaged: Salvaged[]
  /** --upgrade: files given their end tag in this run. */
  upgraded: number
  /** --upgrade: files that have contents and still no end tag (the upgrade cannot finish). */
  upgradeLeft: number
}

export interface CheckProgress { entries: number, files: number, bytes: number }

function join (dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`
}

function printable (b: Buffer): string {
  return b.toString('utf8').replace(/[\x00-\x1f\x7f-\x9f]/g, '?')
}

/**
 * Checks an unlocked, unmounted volume through descriptors below `root` (the cipher dir),
 * never following a symlink: every directory ID, every name (long names against their
 * sidecars), every file header and data key, every chunk's tag, every symlink target, the
 * index against the headers (missing, stale and orphan rows), and what a crash leaves.
 * With `repair`: index rows are rebuilt from the headers and orphan rows removed, crash
 * leftovers are removed, and entries that do not decrypt are moved to QUARANTINE; no file's
 * contents are changed or deleted.
 */
export function checkVolume (volume: Volume, root: number, repair: boolean, onProgress: (p: CheckProgress) => void, salvageDir = -1, upgrade = false): CheckResult {
  loadAddon<PosixAddon>('posix').raiseFdLimit()  // a descriptor per directory level
  const result: CheckResult = { directories: 0, files: 0, symlinks: 0, bytes: 0, problems: [], salvaged: [], upgraded: 0, upgradeLeft: 0 }
  const problem = (path: string, what: string, fix?: () => boolean): void => {
    const repaired = repair && fix !== undefined && fix()
    result.problems.push({ path, what, repaired })
  }
  const rootSt = new Float64Array(STAT_LENGTH)
  const rc = backing.statAt(root, Buffer.alloc(0), rootSt)
  if (rc < 0) throw new VolumeError('missing-dir', `cannot stat the cipher dir (errno ${-rc})`)
  const rootDev = rootSt[STAT_DEV]
  /** File ID (hex) → the inode that carries it: a second inode with the same ID has a copied header. */
  const owners = new Map<string, { inode: string, path: string }>()
  const checked = new Set<string>()
  /** File IDs on more than one inode. */
  const duplicated = new Set<string>()
  const seen = (id: string, inode: string, path: string): void => { if (!owners.has(id)) owners.set(id, { inode, path }) }
  /** Part of the tree was not walked: a row no file was seen for may still be a file's. */
  let unreached = false
  const sealed = Buffer.alloc(Math.max(1, Math.floor(RUN_BYTES / volume.chunks.chunkSize)) * volume.chunks.stride)
  const plain = Buffer.alloc(Math.max(1, Math.floor(RUN_BYTES / volume.chunks.chunkSize)) * volume.chunks.chunkSize)
  let quarantine = -1
  let entries = 0
  let lastProgress = 0
  const progress = (): void => {
    if (++entries - lastProgress < 256) return
    lastProgress = entries
    onProgress({ entries, files: result.files, bytes: result.bytes })
  }

  const moveToQuarantine = (dirfd: number, name: Buffer): boolean => {
    if (quarantine < 0) {
      const made = backing.mkdirAt(root, Buffer.from(QUARANTINE), 0o700)
      if (made < 0 && made !== -17) return false
      quarantine = backing.openAt(root, Buffer.from(QUARANTINE), O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
      if (quarantine < 0) return false
      // Root repairing a user's volume: the quarantine is the user's, as the volume is.
      if (made === 0 && process.geteuid?.() === 0) backing.chownFd(quarantine, rootSt[STAT_UID], rootSt[STAT_GID])
    }
    const to = Buffer.from(`${name.toString('latin1').slice(0, 200)}.${randomBytes(6).toString('hex')}`, 'latin1')
    return backing.renameAt(dirfd, name, quarantine, to, 1 /* RENAME_NOREPLACE */) >= 0
  }

  const removeLeftover = (dirfd: number, name: Buffer, st: Float64Array): boolean => {
    const type = st[STAT_MODE] & S_IFMT
    if (type !== S_IFDIR) return backing.unlinkAt(dirfd, name, 0) >= 0
    // A directory a crashed mkdir or rmdir left: removed only if it holds nothing but its ID.
    const sub = backing.openAt(dirfd, name, O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
    if (sub < 0) return false
    try {
      const list = listDirSync(sub)
      if (typeof list === 'number' || list.some(e => e.name.toString('latin1') !== DIR_ID_FILE)) return false
      if (list.length > 0 && backing.unlinkAt(sub, Buffer.from(DIR_ID_FILE), 0) < 0) return false
    } finally {
      fs.closeSync(sub)
    }
    return backing.unlinkAt(dirfd, name, AT_REMOVEDIR) >= 0
  }

  const xattrList = Buffer.alloc(XATTR_BUF)
  const xattrValue = Buffer.alloc(XATTR_BUF)
  /** Every user.* attribute sealfs stored on the entry `fd` is (name and value) decrypts. */
  const checkXattrs = (fd: number, path: string): void => {
    const n = backing.listxattrFd(fd, xattrList)
    if (n <= 0) return  // none, or the backing store has no xattrs
    for (const name of xattrList.toString('latin1', 0, n).split('\0')) {
      if (!name.startsWith(XATTR_PREFIX)) continue
      try {
        volume.xattrs.decryptName(name.slice(XATTR_PREFIX.length))
        const got = backing.getxattrFd(fd, Buffer.from(name, 'latin1'), xattrValue)
        if (got < 0) throw new Error('unreadable')
        volume.xattrs.decryptValue(name, xattrValue.subarray(0, got)).fill(0)
      } catch {
        problem(path, `its extended attribute ${name.slice(0, 48).replace(/[^\x20-\x7e]/g, '?')}... does not decrypt`)
      }
    }
  }

  /**
   * The end tag in the last END_TAG_BYTES of the file (`size` bytes), if it is that of
   * `plainSize` bytes: bound to nothing (`nonce` null: no write windows), or to a link of the
   * nonce chain of a header with `nonce` and `flags` (`steps` along it); else null.
   */
  const endTagAt = (fd: number, dek: ReturnType<Volume['openDek']>, fileId: Buffer, size: number, plainSize: number, nonce: Buffer | null, flags: number, ahead = WINDOW_AHEAD, behind = WINDOW_BEHIND): WindowedTag | null => {
    const tag = Buffer.alloc(END_TAG_BYTES)
    if (readFullAtSync(fd, tag, size - END_TAG_BYTES) !== END_TAG_BYTES) return null
    const prefix = volume.aadPrefix(fileId)
    return withEndTagKey(dek, k => {
      if (nonce !== null) return openWindowedTag(k, prefix, plainSize, tag, nonce, flags, ahead, behind)
      const epoch = openEndTag(k, prefix, plainSize, tag, null)
      return epoch === null ? null : { epoch, open: false, steps: 0, flags, binding: Buffer.alloc(0) }
    })
  }

  /**
   * --upgrade: gives a file of an older volume its end tag (after its `whole` readable bytes:
   * a torn end, less than a chunk's nonce and tag, held no data; over the tag it has, if any),
   * bound to `nonce`, makes that durable, then writes its header with FLAG_END_TAG and
   * FLAG_WRITE_WINDOW at `nonce` (the DEK wrapped again; the index row follows). A kill
   * between the two leaves a tag the next run recognizes. Its times are put back after each
   * write (before the sync a kill may stop at).
   */
  const upgradeFile = (fd: number, h: FileHeader, dek: ReturnType<Volume['openDek']>, size: number, whole: number, tagOnDisk: boolean, st: Float64Array, epoch: number, flags: number, nonce: Buffer): boolean => {
    const timesBack = (): boolean => { backing.utimensFd(fd, st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC], st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC]); return true }
    try {
      if (!tagOnDisk) {
        const at = HEADER_BYTES + volume.chunks.sealedSize(whole)
        if (whole > 0) writeAllAtSync(fd, withEndTagKey(dek, k => endTag(k, volume.aadPrefix(h.fileId), whole, epoch, nonce)), at)
        if (size > at + (whole > 0 ? END_TAG_BYTES : 0)) fs.ftruncateSync(fd, at + (whole > 0 ? END_TAG_BYTES : 0))
        if (!timesBack()) return false
        fs.fdatasyncSync(fd)
      }
      if (whole > 0) writeAllAtSync(fd, volume.rewrapHeader(h.fileId, dek, flags, nonce), 0)
      return timesBack()
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === undefined) throw e
      return false
    }
  }

  const checkFile = (dirfd: number, name: Buffer, path: string, st: Float64Array): void => {
    result.files++
    const inode = `${st[STAT_DEV]}:${st[STAT_INO_HI]}:${st[STAT_INO_LO]}`
    if (checked.has(inode)) return  // another name of a file already checked
    checked.add(inode)
    const header = Buffer.alloc(HEADER_BYTES)
    const out = new Float64Array(2)
    const pathFd = backing.lookupAt(dirfd, name, new Float64Array(STAT_LENGTH))
    if (pathFd < 0) { unreached = true; return problem(path, `cannot be opened (errno ${-pathFd})`) }
    let fd: number
    try {
      checkXattrs(pathFd, path)
      // Writable to upgrade it, or to put back what an interrupted write tore (the journal
      // names file IDs, known only once the header is read: any file may be one).
      // (Also to close a write window left open: any file may have one.)
      const writable = upgrade || repair
      fd = backing.openHeaderFd(pathFd, (writable ? O_RDWR : O_RDONLY) | O_NOATIME, header, out, false)
      if (fd === -EACCES && (upgrade || (repair && volume.journal.interruptedCount > 0))) {
        // A read-only file of the user running the upgrade (git keeps its objects so): made
        // writable for the moment it takes to open it, as key rotation does.
        const mode = st[STAT_MODE] & 0o7777
        if (backing.chmodFd(pathFd, mode | 0o600) >= 0) {
          try {
            fd = backing.openHeaderFd(pathFd, O_RDWR | O_NOATIME, header, out, false)
          } finally {
            backing.chmodFd(pathFd, mode)
          }
        }
      }
      // Not writable here (not the user's, a read-only store): checked read-only (an upgrade then leaves it).
      if (fd < 0 && writable && !upgrade) fd = backing.openHeaderFd(pathFd, O_RDONLY | O_NOATIME, header, out, false)
    } finally {
      fs.closeSync(pathFd)
    }
    // A file this user cannot read may be one that opens only through its row: keep them all.
    if (fd < 0) { unreached = true; return problem(path, `cannot be opened (errno ${-fd})`) }
    try {
      let size = out[1]
      // Never written, or cut back to nothing: no data, and a header-only file's header names
      // nothing (its first write gives it an identity of its own; it may be a copy).
      if (size === 0 || size === HEADER_BYTES) return
      result.bytes += size
      const h = out[0] === HEADER_BYTES ? decodeHeader(header) : null
      if (h === null) {
        // Its row is what may restore it: the file ID is kept from the raw bytes.
        if (out[0] === HEADER_BYTES) seen(header.subarray(8, 24).toString('hex'), inode, path)
        return problem(path, 'its header is damaged: the file cannot be read')
      }
      const id = h.fileId.toString('hex')
      const other = owners.get(id)
      const shared = other !== undefined && other.inode !== inode
      if (shared) {
        duplicated.add(id)
        problem(path, `has the same file ID as ${other.path} (one header is a copy of the other's)`)
      } else {
        owners.set(id, { inode, path })
      }
      let dek
      try {
        dek = volume.openDek(h)
      } catch (e) {
        if (!(e instanceof AuthenticationError)) throw e
        return problem(path, 'its data key does not open (header or index row damaged, or from another volume)')
      }
      try {
        const tagged = (h.flags & FLAG_END_TAG) !== 0
        const windowed = (h.flags & FLAG_WRITE_WINDOW) !== 0
        const nonce = windowed ? headerNonce(h.wrappedDek) : null
        // A write a crash interrupted (the write journal's record): put back if it tore the file.
        for (const rec of volume.journal.interruptedFor(h.fileId)) {
          const file = { fd, fileId: h.fileId, dek, sparse: (h.flags & FLAG_SPARSE) !== 0, endTags: tagged, nonce }
          let outcome = settleInterruptedWrite(volume, file, rec, false)
          if (outcome === 'torn') {
            problem(path, 'a write that a crash interrupted tore it; the write journal holds the bytes it went over', () => {
              try { outcome = settleInterruptedWrite(volume, file, rec, true) } catch { return false }
              return outcome === 'restored'
            })
          }
          if (repair && outcome !== 'torn') volume.journal.settle(rec)
          if (outcome === 'restored') size = fs.fstatSync(fd).size
        }
        let layout = new FileLayout(volume.chunks, tagged)
        let tagOnDisk = false
        // Upgrading: the flags and nonce the header will have.
        const upFlags = h.flags | FLAG_END_TAG | FLAG_WRITE_WINDOW
        const upNonce = upgrade && !windowed ? nextNonce(headerNonce(h.wrappedDek), upFlags) : null
        if (upNonce !== null) {
          // An upgrade killed between this file's end tag and its header left the tag.
          const asTagged = new FileLayout(volume.chunks, true)
          const p = asTagged.exactPlainSize(size)
          if (p > 0 && endTagAt(fd, dek, h.fileId, size, p, upNonce, upFlags, 0, 0)?.steps === 0) { layout = asTagged; tagOnDisk = true }
        }
        const plainSize = layout.exactPlainSize(size)
        if (plainSize < 0) problem(path, layout.endTags ? 'its end is torn (the file ends inside a chunk\'s nonce or tag, or its end tag)' : 'its last chunk is torn (the file ends inside a chunk\'s nonce or tag)')
        const whole = plainSize < 0 ? layout.plainSize(size) : plainSize
        const stored = Math.ceil(whole / volume.chunks.chunkSize)
        const bad = checkChunks(fd, h.fileId, dek, (h.flags & FLAG_SPARSE) !== 0, whole)
        if (bad.length > 0) {
          const C = volume.chunks.chunkSize
          const ranges = bad.slice(0, 4).map(i => `${i * C}-${Math.min(whole, (i + 1) * C) - 1}`).join(', ')
          problem(path, `${bad.length} chunk${bad.length > 1 ? 's do' : ' does'} not authenticate (bytes ${ranges}${bad.length > 4 ? ', ...' : ''})`)
        }
        // The end tag: a file cut short at a chunk boundary, or changed while it was copied.
        let cut = plainSize < 0
        const found = !cut && layout.endTags ? endTagAt(fd, dek, h.fileId, size, plainSize, tagOnDisk ? upNonce : nonce, tagOnDisk ? upFlags : h.flags) : null
        const epoch = found?.epoch ?? null
        if (!cut && layout.endTags && found === null) {
          cut = true
          problem(path, `its end does not authenticate: it was cut short (or changed while it was being copied), or its last ${END_TAG_BYTES} bytes were changed`)
        }
        if (salvageDir >= 0 && (bad.length > 0 || cut)) salvage(fd, h.fileId, dek, (h.flags & FLAG_SPARSE) !== 0, whole, bad, cut, path)
        // Upgrading: a header without the flag whose row was wrapped with it is older than the
        // row, put back from before an earlier upgrade (with the file cut, perhaps): neither
        // tagged nor taken as the row's truth. It reads as EIO once the upgrade has finished.
        // (A tag bound to the nonce the header gets says the upgrade of this file began: not that.)
        const putBack = upgrade && !tagOnDisk && ((!tagged && volume.rowHasFlag(h.fileId, FLAG_END_TAG)) || (!windowed && volume.rowHasFlag(h.fileId, FLAG_WRITE_WINDOW)))
        if (putBack) problem(path, 'its header is older than its index row (a header from before the upgrade to end tags was put back; the file may have been cut short): not upgraded, and it will read as EIO')
        // Rows of a file ID two inodes share are left alone: which header is right is unknown.
        if (h.keyVersion === volume.config.masterKeyVersion && !shared && !duplicated.has(id) && !putBack) {
          const row = volume.index.get(h.fileId)
          if (row === undefined) {
            // A rebuilt row's chunk-write count starts at the chunks stored and, with an end
            // tag, above every write its epoch may hide (its writes are unknown: all counted).
            const count = Math.max(stored, epoch !== null ? (epoch + 1) * EPOCH_CHUNKS : 0)
            problem(path, 'has no index row', () => { volume.index.put(h.fileId, h.keyVersion, h.wrappedDek); volume.index.countChunkWrites(h.fileId, count); return true })
          } else if (!volume.rowMatches(h, dek)) {
            problem(path, 'its index row does not match its header', () => { volume.index.put(h.fileId, h.keyVersion, h.wrappedDek); return true })
          }
        }
        // A write window left open (docs/FORMAT.md §6.4): the file was being written when this
        // copy of it was taken, or when the volume stopped; or (more than one link on) the copy
        // read its header before writes that came after it. Closed as the mount closes one: the
        // header goes to the link the tag is bound to.
        if (found !== null && found.steps > 0 && nonce !== null && !tagOnDisk) {
          problem(path, found.steps === 1
            ? 'was being written when it was copied, or when the volume stopped (its write window is open): it may hold some of the writes of that moment and not others'
            : 'its end is from a later write window than its header (it was written while it was being copied, or a power cut stored its end and not its header): it may hold some of those writes and not others', () => {
            try {
              writeAllAtSync(fd, volume.rewrapHeader(h.fileId, dek, found.flags, found.binding), 0)
              backing.utimensFd(fd, st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC], st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC])
              return true
            } catch (e) {
              if ((e as NodeJS.ErrnoException).code === undefined) throw e
              return false
            }
          })
        }
        // A tag bound to an earlier link than the header's: a power cut wrote the header of a
        // window's close but not the tag that window had opened with (or a copy read the file's
        // end before its start). Its chunks are whatever reached the disk; rebound to the header.
        if (found !== null && found.steps < 0 && nonce !== null && !tagOnDisk) {
          problem(path, 'its end tag is from before its header\'s last write window (a power cut while it was being written, or a copy that read its end first): it may hold some of the writes of that window and not others', () => {
            try {
              writeAllAtSync(fd, withEndTagKey(dek, k => endTag(k, volume.aadPrefix(h.fileId), plainSize, found.epoch, nonce)), size - END_TAG_BYTES)
              backing.utimensFd(fd, st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC], st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC])
              return true
            } catch (e) {
              if ((e as NodeJS.ErrnoException).code === undefined) throw e
              return false
            }
          })
        }
        if (upgrade && !windowed && !putBack) {
          // The epoch of what the row (or the chunks stored, or the tag) says was written so far.
          const known = Math.max(volume.index.get(h.fileId)?.chunkWrites ?? 0, stored)
          const upEpoch = Math.max(Math.floor(known / EPOCH_CHUNKS), epoch ?? 0)
          // A file with an end tag that does not authenticate (cut short) keeps it: only its
          // header is upgraded, and its end stays EIO (a new tag would make it read as whole).
          if (upgradeFile(fd, h, dek, size, whole, tagOnDisk || (tagged && cut), st, upEpoch, upFlags, upNonce as Buffer)) result.upgraded++
          else { result.upgradeLeft++; problem(path, 'could not be given its end tag and write windows (the upgrade is unfinished)') }
        }
      } finally {
        dek.dispose()
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === undefined) throw e
      unreached = true
      problem(path, `read error (${(e as NodeJS.ErrnoException).code as string})`)
    } finally {
      fs.closeSync(fd)
    }
  }

  /**
   * Indexes of the chunks (of `size` plaintext bytes) that do not authenticate. `sink` is
   * given the plaintext of every run or chunk that does, at its plaintext offset.
   */
  const checkChunks = (fd: number, fileId: Buffer, dek: ReturnType<Volume['openDek']>, sparse: boolean, size: number,
    sink?: (offset: number, plain: Buffer) => void): number[] => {
    const chunks = volume.chunks
    const C = chunks.chunkSize
    const perRun = sealed.length / chunks.stride
    const prefix = volume.aadPrefix(fileId)
    const count = Math.ceil(size / C)
    const bad: number[] = []
    let used = 0
    try {
    for (let first = 0; first < count; first += perRun) {
      const n = Math.min(perRun, count - first)
      const runPlain = Math.min(size - first * C, n * C)
      const runSealed = chunks.sealedSize(runPlain)
      used = Math.max(used, runPlain)
      const got = readFullAtSync(fd, sealed.subarray(0, runSealed), HEADER_BYTES + first * chunks.stride)
      try {
        if (got !== runSealed) throw new AuthenticationError('chunk', { chunk: first + Math.floor(got / chunks.stride) })
        chunks.openSync(dek, prefix, first, sealed.subarray(0, runSealed), plain.subarray(0, runPlain), sparse)
        sink?.(first * C, plain.subarray(0, runPlain))
      } catch (e) {
        if (!(e instanceof AuthenticationError)) throw e
        // Chunk by chunk, to name each one that fails.
        for (let i = 0; i < n; i++) {
          const len = Math.min(C, runPlain - i * C)
          const s = sealed.subarray(i * chunks.stride, Math.min(got, i * chunks.stride + len + 28))
          try {
            if (s.length !== len + 28) throw new AuthenticationError('chunk')
            chunks.openSync(dek, prefix, first + i, s, plain.subarray(0, len), sparse)
            sink?.((first + i) * C, plain.subarray(0, len))
          } catch (e2) {
            if (!(e2 instanceof AuthenticationError)) throw e2
            bad.push(first + i)
          }
        }
      }
    }
    } finally {
      plain.fill(0, 0, used)
    }
    return bad
  }

  /**
   * --salvage: the damaged file's readable chunks are copied to the same plaintext path under
   * the salvage directory (a new file, never one replaced); the chunks that do not
   * authenticate are left as holes, which read as zeros.
   */
  const salvage = (fd: number, fileId: Buffer, dek: ReturnType<Volume['openDek']>, sparse: boolean, size: number, bad: number[], torn: boolean, path: string): void => {
    const C = volume.chunks.chunkSize
    const target = salvageTarget(path)
    if (typeof target === 'string') return problem(path, `could not be salvaged: ${target}`)
    try {
      checkChunks(fd, fileId, dek, sparse, size, (offset, bytes) => {
        let done = 0
        while (done < bytes.length) done += fs.writeSync(target.fd, bytes, done, bytes.length - done, offset + done)
      })
      fs.ftruncateSync(target.fd, size)
      fs.fsyncSync(target.fd)
    } catch (e) {
      return problem(path, `could not be salvaged: writing ${target.to} failed (${(e as NodeJS.ErrnoException).code ?? 'error'})`)
    } finally {
      fs.closeSync(target.fd)
    }
    const lost: Array<[number, number | null]> = []
    for (const i of bad) {
      const last = lost[lost.length - 1]
      if (last !== undefined && last[1] === i * C - 1) last[1] = Math.min(size, (i + 1) * C) - 1
      else lost.push([i * C, Math.min(size, (i + 1) * C) - 1])
    }
    if (torn) lost.push([size, null])
    result.salvaged.push({ path, to: target.to, size, lost })
  }

  /**
   * A new file for `path` under the salvage directory, its directories made as needed: through
   * descriptors, never following a symlink; a name that is taken gets a suffix. Or why not.
   */
  const salvageTarget = (path: string): { fd: number, to: string } | string => {
    const parts = path.split('/').filter(p => p !== '').map(p => p === '.' || p === '..' ? p.replace(/\./g, '_') : p)
    let dir = salvageDir
    const opened: number[] = []
    try {
      for (const part of parts.slice(0, -1)) {
        const made = backing.mkdirAt(dir, Buffer.from(part), 0o700)
        if (made < 0 && made !== -17) return `cannot make its directory (errno ${-made})`
        const sub = backing.openAt(dir, Buffer.from(part), O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
        if (sub < 0) return `cannot open its directory (errno ${-sub})`
        opened.push(sub)
        dir = sub
      }
      const base = parts[parts.length - 1] ?? 'file'
      for (let n = 0; n < 100; n++) {
        const name = n === 0 ? base : `${base}.salvaged-${n}`
        const fd = backing.openAt(dir, Buffer.from(name), O_WRONLY | O_CREAT | O_EXCL, 0o600, TYPE_REG)
        if (fd === -17) continue
        if (fd < 0) return `cannot create its copy (errno ${-fd})`
        return { fd, to: [...parts.slice(0, -1), name].join('/') }
      }
      return 'every name for its copy is taken'
    } finally {
      for (const d of opened) fs.closeSync(d)
    }
  }

  /** The file ID of a file that is not checked (its name does not decrypt): its row is not an orphan's. */
  const keepRowOf = (dirfd: number, name: Buffer, what = '(an entry whose name does not decrypt)'): void => {
    const pathFd = backing.lookupAt(dirfd, name, new Float64Array(STAT_LENGTH))
    if (pathFd < 0) { unreached = true; return }
    try {
      const header = Buffer.alloc(HEADER_BYTES)
      const out = new Float64Array(2)
      const fd = backing.openHeaderFd(pathFd, O_RDONLY | O_NOATIME, header, out, false)
      if (fd < 0) { unreached = true; return }
      fs.closeSync(fd)
      if (out[0] === HEADER_BYTES) seen(header.subarray(8, 24).toString('hex'), `unchecked:${name.toString('hex')}`, what)
    } finally {
      fs.closeSync(pathFd)
    }
  }

  /** Files an earlier --repair quarantined keep their rows (a directory there: every row is kept). */
  const keepQuarantinedRows = (dirfd: number, name: Buffer): void => {
    const q = backing.openAt(dirfd, name, O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
    if (q < 0) { unreached = true; return }
    try {
      const list = listDirSync(q)
      if (typeof list === 'number') { unreached = true; return }
      for (const e of list) {
        const st = new Float64Array(STAT_LENGTH)
        if (backing.statAt(q, e.name, st) < 0) continue
        if ((st[STAT_MODE] & S_IFMT) === S_IFDIR) unreached = true
        else if ((st[STAT_MODE] & S_IFMT) === S_IFREG) keepRowOf(q, e.name)
      }
    } finally {
      fs.closeSync(q)
    }
  }

  const visitDir = (dirfd: number, path: string, backingPath: string, depth: number): void => {
    result.directories++
    if (depth > MAX_DEPTH) { unreached = true; return problem(path, `is more than ${MAX_DEPTH} directories deep; not checked below`) }
    const idBuf = backing.readSmallFileAt(dirfd, Buffer.from(DIR_ID_FILE), DIR_ID_BYTES + 1)
    if (typeof idBuf === 'number' || idBuf.length !== DIR_ID_BYTES) {
      // Missing or empty in a directory that holds no entry (a crash inside rmdir): a new one
      // loses nothing. Anything else: its entries' names need the ID that is gone.
      const lost = idBuf === -2 || (typeof idBuf !== 'number' && idBuf.length === 0)
      const names = lost ? listDirSync(dirfd) : -1
      if (typeof names !== 'number' && !names.some(e => { const n = e.name.toString('latin1'); return !n.includes('.') || n.startsWith(LONG_PREFIX) })) {
        return problem(path, 'its directory ID (sealfs.diriv) is missing, and it holds no entry (a crash during rmdir?)', () => {
          if (typeof idBuf !== 'number' && backing.unlinkAt(dirfd, Buffer.from(DIR_ID_FILE), 0) < 0) return false
          return backing.writeFileAt(dirfd, Buffer.from(DIR_ID_FILE), newDirId(), 0o400, true) >= 0
        })
      }
      unreached = true
      return problem(path, 'its directory ID (sealfs.diriv) is missing or damaged: none of its entries can be read')
    }
    const list = listDirSync(dirfd)
    if (typeof list === 'number') { unreached = true; return problem(path, `cannot be listed (errno ${-list})`) }
    checkXattrs(dirfd, path)
    const names = new Set(list.map(e => e.name.toString('latin1')))
    // Names first: if none decrypts, the directory's ID is wrong, not its entries, and
    // nothing is moved.
    const resolved: Array<{ e: typeof list[number], raw: string, st: Float64Array, plainName: Buffer | null }> = []
    let candidates = 0
    for (const e of list) {
      progress()
      const raw = e.name.toString('latin1')
      const shown = raw.replace(/[^\x20-\x7e]/g, '?').slice(0, 60)
      const st = new Float64Array(STAT_LENGTH)
      const sc = backing.statAt(dirfd, e.name, st)
      if (sc < 0) {
        if (sc !== -2) { unreached = true; problem(join(path, `(${shown})`), `cannot be looked at (errno ${-sc})`) }
        continue
      }
      const type = st[STAT_MODE] & S_IFMT
      /** An entry that is not walked: what it may hold keeps its rows. */
      const notWalked = (): void => { if (type === S_IFDIR) unreached = true; else if (type === S_IFREG) keepRowOf(dirfd, e.name) }
      let encrypted: string | null = raw
      if (raw.includes('.')) {
        if (depth === 0 && raw === QUARANTINE) {
          keepQuarantinedRows(dirfd, e.name)
          continue
        }
        if (raw === DIR_ID_FILE || (depth === 0 && (ROOT_FILES.has(raw) || raw.startsWith('sealfs.index.damaged-')))) continue
        if (LEFTOVER.test(raw) || raw.startsWith(TEMP_PREFIX)) {
          // A leftover holding a file's contents (an orphan, a staging copy) is quarantined, never deleted.
          const holdsData = type === S_IFREG && st[STAT_SIZE] >= HEADER_BYTES
          if (holdsData) keepRowOf(dirfd, e.name, join(path, `(${shown})`))
          problem(join(path, `(${shown})`), 'is left over from a crash', () => {
            const done = holdsData ? moveToQuarantine(dirfd, e.name) : removeLeftover(dirfd, e.name, st)
            if (!done && type === S_IFDIR) unreached = true
            return done
          })
          continue
        }
        if (raw.startsWith(LONG_PREFIX) && raw.endsWith(LONG_SIDECAR_SUFFIX)) {
          const owner = raw.slice(0, -LONG_SIDECAR_SUFFIX.length)
          if (!names.has(owner)) problem(join(path, `(${shown})`), 'is a long name\'s sidecar without its entry', () => type === S_IFREG && backing.unlinkAt(dirfd, e.name, 0) >= 0)
          continue
        }
        if (!raw.startsWith(LONG_PREFIX)) {
          notWalked()
          problem(join(path, `(${shown})`), 'is not an entry of a sealfs volume; left as it is')
          continue
        }
        const sidecar = backing.readSmallFileAt(dirfd, Buffer.from(raw + LONG_SIDECAR_SUFFIX, 'latin1'), SIDECAR_MAX)
        if (typeof sidecar === 'number' && sidecar !== -2) {
          notWalked()
          problem(join(path, `(${shown})`), `its long name's sidecar cannot be read (errno ${-sidecar}); left as it is`)
          continue
        }
        encrypted = typeof sidecar === 'number' ? null : sidecar.toString('latin1')
        if (encrypted !== null && LONG_PREFIX + longHash(encrypted) !== raw) encrypted = null
      } else if (!BASE64URL.test(raw)) {
        notWalked()  // lost+found, a file of someone else's: never ours to move
        problem(join(path, `(${shown})`), 'is not an entry of a sealfs volume; left as it is')
        continue
      }
      candidates++
      let plainName: Buffer | null = null
      try {
        if (encrypted !== null) plainName = volume.names.decrypt(idBuf, encrypted)
      } catch { /* below */ }
      resolved.push({ e, raw, st, plainName })
    }
    if (candidates > 1 && resolved.every(r => r.plainName === null)) {
      unreached = true
      return problem(path, `none of its ${candidates} entries decrypts: its directory ID (sealfs.diriv) is probably wrong; nothing was moved`)
    }
    for (const { e, raw, st, plainName } of resolved) {
      const here = backingPath === '' ? raw : `${backingPath}/${raw}`
      if (plainName === null) {
        // It may be a file of the volume whose name is damaged: its row is kept. A directory
        // may hold any number of them.
        if ((st[STAT_MODE] & S_IFMT) === S_IFDIR) unreached = true
        else if ((st[STAT_MODE] & S_IFMT) === S_IFREG) keepRowOf(dirfd, e.name)
        problem(join(path, `(backing name ${raw.replace(/[^\x20-\x7e]/g, '?').slice(0, 40)})`), 'does not decrypt (a damaged name, or a long name without its sidecar)', () => moveToQuarantine(dirfd, e.name))
        continue
      }
      const plainPath = join(path, printable(plainName))
      const type = st[STAT_MODE] & S_IFMT
      if (st[STAT_DEV] !== rootDev) {
        unreached = true
        problem(plainPath, 'is on another filesystem (a mount point inside the cipher dir); not checked')
      } else if (type === S_IFDIR) {
        const sub = backing.openAt(dirfd, e.name, O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
        if (sub < 0) {
          unreached = true
          problem(plainPath, `cannot be opened (errno ${-sub})`)
          continue
        }
        try {
          visitDir(sub, plainPath, here, depth + 1)
        } finally {
          fs.closeSync(sub)
        }
      } else if (type === S_IFREG) {
        checkFile(dirfd, e.name, plainPath, st)
      } else if (type === S_IFLNK) {
        result.symlinks++
        const target = Buffer.alloc(READLINK_BUFFER)
        const n = backing.readlinkAt(dirfd, e.name, target)
        try {
          if (n < 0) throw new Error('unreadable')
          volume.links.decrypt(target.subarray(0, n).toString('latin1'))
        } catch {
          problem(plainPath, 'is a symlink whose target does not decrypt')
        }
      }
    }
  }

  try {
    visitDir(root, '/', '', 0)
    // Rows of files that are gone: their wrapped keys should go with them.
    // Only rows of the current key version: an older one may be all a file has left (a
    // header a rotation could not rewrite); it opens nothing once its key is gone anyway.
    const orphans = volume.index.rowVersions().filter(r => r.keyVersion === volume.config.masterKeyVersion && !owners.has(r.fileId.toString('hex'))).map(r => r.fileId)
    if (orphans.length > 0) {
      // Removed only after a walk that reached everything: a file below a directory that was
      // not walked may have only its row left to open it.
      const what = `${orphans.length} row${orphans.length > 1 ? 's' : ''} of files that no longer exist${unreached ? ' (or were not reached: kept until the rest is repaired)' : ''}`
      problem('(index)', what, unreached ? undefined : () => { for (const id of orphans) volume.index.remove(id); return true })
    }
    // Records of interrupted writes whose files are gone (those of files seen were settled
    // above, or are kept: their files could not be repaired).
    const gone = volume.journal.allInterrupted().filter(rec => !owners.has(rec.fileId.toString('hex')))
    if (repair && !unreached) for (const rec of gone) volume.journal.settle(rec)
  } finally {
    if (quarantine >= 0) fs.closeSync(quarantine)
  }
  onProgress({ entries, files: result.files, bytes: result.bytes })
  // Files not reached may have no end tag: the upgrade cannot finish without them.
  if (upgrade && unreached) result.upgradeLeft++
  return result
}

