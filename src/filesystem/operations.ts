import fs from 'fs'
import path from 'path'
import { randomBytes } from '../crypto/secret-key'
import { LINK_TARGET_MAX } from '../crypto/link-cipher'
import { loadAddon, PosixAddon } from '../native'
import { DIR_ID_FILE, newDirId, writeDirIdSync } from '../volume/dir-id'
import { HEADER_BYTES } from '../volume/file-header'
import { Volume } from '../volume/volume'
import { CipherEntry, CipherPaths, FUSE_HIDDEN, ORPHAN_PREFIX, TEMP_PREFIX } from './cipher-paths'
import { createWithHeader, openWithHeader, unlinkLast } from './backing-jobs'
import { toErrno } from './errno'
import { fdatasyncFd, fstatFd, fsyncFd, openFd, readHeader, writeFullAt } from './fd-io'
import { FileContents, plainSize } from './file-contents'
import { FsError } from './fs-error'
import { LinkNames } from './link-names'
import { Handle, OpenFiles } from './open-files'

const posix = loadAddon<PosixAddon>('posix')
const O_ACCMODE = 3
const S_IFMT = 0o170000
const S_IFREG = 0o100000
const S_IFLNK = 0o120000
/** open(2)'s O_PATH (Linux): a descriptor that names an entry without opening it for I/O. */
const O_PATH = 0o10000000
const RENAME_NOREPLACE = 1
const RENAME_EXCHANGE = 2

export interface Time { sec: number, nsec: number }
/** Who asked for an operation (from FUSE); new entries are given to them when we run as root. */
export interface Caller { uid: number, gid: number }

const XATTR_PREFIX = 'user.sealfs.'
const XATTR_NAME_MAX = 255
const XATTR_SIZE_MAX = 65536

function check (rc: number): void {
  if (rc < 0) throw FsError.fromErrno(rc)
}

export interface Attr {
  mode: number, uid: number, gid: number, size: number, dev: number, nlink: number, ino: number,
  rdev: number, blksize: number, blocks: number, atime: bigint, mtime: bigint, ctime: bigint
}

type Cb<T = void> = T extends void ? (err: number) => void : (err: number, value?: T) => void

/** fs.lstat with a callback: fs.promises.lstat costs about 10 µs more a call, and every lookup makes one. */
function lstatBig (p: string): Promise<fs.BigIntStats> {
  return new Promise((resolve, reject) => fs.lstat(p, { bigint: true }, (err, st) => err ? reject(err) : resolve(st)))
}

/** Whether a path names one of libfuse's hidden files (an open file that was unlinked). */
function isHidden (p: string): boolean {
  return p.includes(FUSE_HIDDEN) && path.posix.basename(p).startsWith(FUSE_HIDDEN)
}

/** Whether a backing entry exists (lstat: a symlink counts, and is not followed). */
function exists (backing: string): Promise<boolean> {
  return fs.promises.lstat(backing).then(() => true, () => false)
}

/** A time in nanoseconds as whole seconds (rounded down: before 1970 too) and 0..999999999 ns. */
function secondsAndNanos (ns: bigint): [number, number] {
  const G = 1_000_000_000n
  const nanos = ((ns % G) + G) % G
  return [Number((ns - nanos) / G), Number(nanos)]
}

function closeQuietly (fd: number): void {
  fs.close(fd, () => undefined)
}

/**
 * The filesystem: FUSE operations on plaintext paths, carried out on the cipher dir.
 * Every operation is an async method that throws on failure; `handlers()` adapts them to
 * fuse-native's callbacks and turns failures into errno in one place (errno.ts).
 */
export class SealFs {
  readonly paths: CipherPaths
  readonly files: OpenFiles
  /** Names of hard-linked files whose kernel attributes a change through another name must drop. */
  readonly links = new LinkNames()
  /** Requests served so far: an idle timer compares it over time (no clock read per request). */
  requests = 0
  /** libfuse's hidden names (files unlinked while open) that exist in the cipher dir. */
  readonly #hidden = new Set<string>()
  /** Drops the kernel's cached pages and attributes of a path (set by the mount). */
  #invalidate: (p: string) => Promise<void> = async () => undefined

  constructor (readonly volume: Volume) {
    this.paths = new CipherPaths(volume)
    this.files = new OpenFiles(volume)
  }

  #attr (st: fs.BigIntStats): Attr {
    const mode = Number(st.mode)
    let size = Number(st.size)
    if ((mode & S_IFMT) === S_IFREG) size = plainSize(this.volume, size)
    else if ((mode & S_IFMT) === S_IFLNK) size = Math.max(0, Math.floor(size * 3 / 4) - 40)
    return {
      mode, uid: Number(st.uid), gid: Number(st.gid), size, dev: Number(st.dev), nlink: Number(st.nlink),
      ino: Number(st.ino), rdev: Number(st.rdev), blksize: Number(st.blksize), blocks: Number(st.blocks),
      atime: st.atimeNs, mtime: st.mtimeNs, ctime: st.ctimeNs
    }
  }

  async getattr (p: string): Promise<Attr> {
    const e = await this.paths.resolve(p)
    const st = await lstatBig(e.path)
    this.#seen(p, st)
    return this.#visibleLinks(p, this.#attr(st))
  }

  async fgetattr (fh: number): Promise<Attr> {
    const h = this.files.get(fh)
    const st = await fstatFd(h.fd)
    this.#seen(h.path, st)
    const a = this.#visibleLinks(h.path, this.#attr(st))
    if (h.contents !== null) a.size = h.contents.size
    return a
  }

  /**
   * Link counts as on a plain directory: libfuse's hidden names of files unlinked while
   * open are backing links, not names anyone sees. (libfuse itself takes one off for the
   * hidden name that is being asked about.)
   */
  #visibleLinks (p: string, a: Attr): Attr {
    if (this.#hidden.size > 0 && this.links.size > 0) a.nlink -= this.links.count(p, n => n !== p && this.#hidden.has(n))
    return a
  }

  /** Notes a name of a hard-linked file (the kernel will cache its attributes). */
  #seen (p: string, st: fs.BigIntStats): void {
    if (st.nlink < 2n && this.links.size === 0) return
    if ((Number(st.mode) & S_IFMT) === 0o040000) return
    const evicted = this.links.seen(p, st.ino, Number(st.nlink))
    if (evicted.length > 0) void this.#invalidateAll(evicted)
  }

  async #invalidateAll (paths: Iterable<string>): Promise<void> {
    const unique = [...new Set(paths)]
    if (unique.length > 0) await Promise.all(unique.map(p => this.#invalidate(p)))
  }

  /** After a change through name `p`, what the kernel holds for the file's other names goes. */
  async #invalidateOtherLinks (p: string): Promise<void> {
    if (this.links.size > 0) await this.#invalidateAll(this.links.others(p))
  }

  /** The kernel opens only directories; the path is checked when it is read. */
  async opendir (p: string): Promise<number> {
    return this.files.openDir(p)
  }

  async readdir (fh: number): Promise<string[]> {
    const e = await this.paths.resolve(this.files.dirPath(fh))
    // Open files that were unlinked live on as libfuse's .fuse_hidden* until closed; a plain
    // directory would not list them.
    return ['.', '..', ...(await this.paths.list(e.path)).filter(n => !n.startsWith(FUSE_HIDDEN))]
  }

  /**
   * fsync(2) on a directory fsyncs its backing directory, so the entries created, renamed or
   * removed in it are durable (without this op the kernel got ENOSYS and told the caller 0).
   */
  async fsyncdir (fh: number): Promise<void> {
    const e = await this.paths.resolve(this.files.dirPath(fh))
    const fd = await openFd(e.path, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW)
    try {
      // EINVAL: a backing filesystem that cannot sync a directory (as some FUSE ones).
      await fsyncFd(fd).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EINVAL') throw err })
    } finally {
      closeQuietly(fd)
    }
  }

  async statfs (): Promise<fs.StatsFs> {
    return fs.promises.statfs(this.volume.dir)
  }

  /** Gives a new entry to its creator when the daemon runs as root for other users. */
  async #own (backing: string, caller: Caller | undefined): Promise<void> {
    if (caller === undefined || process.geteuid?.() !== 0) return
    if (caller.uid === 0 && caller.gid === 0) return
    // In a set-group-ID directory the new entry keeps the directory's group, as the kernel gave it.
    const parent = await fs.promises.stat(path.dirname(backing))
    await fs.promises.lchown(backing, caller.uid, (parent.mode & 0o2000) !== 0 ? -1 : caller.gid)
  }

  async #newEntry (p: string): Promise<CipherEntry> {
    const e = await this.paths.resolve(p)
    await this.paths.writeSidecar(e)
    return e
  }

  /** After a failed create: the sidecar goes unless an entry of that name exists (then it is that entry's). */
  async #dropUnusedSidecar (e: CipherEntry): Promise<void> {
    if (!await exists(e.path)) await this.paths.removeSidecar(e).catch(() => undefined)
  }

  /**
   * Makes a new backing entry for `p` with `make` and gives it to its creator. If either step
   * fails, nothing is left behind: not the entry (chown may be refused, as over SFTP) and not
   * a long name's sidecar, unless an entry of that name already existed (the sidecar is its).
   */
  async #makeEntry (p: string, caller: Caller | undefined, make: (backing: string) => Promise<void>): Promise<void> {
    const e = await this.#newEntry(p)
    try {
      await make(e.path)
    } catch (err) {
      await this.#dropUnusedSidecar(e)
      throw err
    }
    try {
      await this.#own(e.path, caller)
    } catch (err) {
      await fs.promises.unlink(e.path).catch(() => undefined)
      await this.paths.removeSidecar(e).catch(() => undefined)
      // SFTP cannot chown a symlink itself: it follows it and says ENOENT, which would tell the
      // caller that something in its path is missing. The truth is that the backing refused.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new FsError('EPERM')
      throw err
    }
  }

  async mkdir (p: string, mode: number, caller?: Caller): Promise<void> {
    const e = await this.paths.resolve(p)
    if (await exists(e.path)) throw new FsError('EEXIST')
    // Build the directory with its ID under a temporary name, then rename it into place,
    // so that a crash never leaves a directory whose entries cannot be named.
    const tmp = path.join(e.parent, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`)
    await fs.promises.mkdir(tmp, 0o700)
    try {
      const id = newDirId()
      writeDirIdSync(tmp, id)
      await fs.promises.chmod(tmp, mode & 0o7777)
      await this.#own(path.join(tmp, DIR_ID_FILE), caller)
      await this.#own(tmp, caller)
      await this.paths.writeSidecar(e)
      await fs.promises.rename(tmp, e.path).catch(async err => {
        if (err.code === 'ENOTEMPTY' || err.code === 'EISDIR' || err.code === 'ENOTDIR') throw new FsError('EEXIST')
        throw err
      })
      this.paths.rememberDirId(e.path, id)
    } catch (err) {
      await fs.promises.rm(tmp, { recursive: true, force: true })
      throw err
    }
  }

  async rmdir (p: string): Promise<void> {
    const e = await this.paths.resolve(p)
    const entries = (await fs.promises.readdir(e.path)).filter(n => n !== DIR_ID_FILE)
    if (entries.length > 0 && !(await this.#keepingMtime(this.volume.dir, () => this.paths.evictHidden(e.path, p, entries)))) throw new FsError('ENOTEMPTY')
    const id = await this.paths.dirId(e.path)
    await fs.promises.unlink(path.join(e.path, DIR_ID_FILE)).catch(() => undefined)
    try {
      await fs.promises.rmdir(e.path)
    } catch (err) {
      writeDirIdSync(e.path, id)
      throw err
    }
    this.paths.forgetTree(e.path)
    await this.paths.removeSidecar(e)
  }

  async create (p: string, mode: number, flags: number, caller?: Caller): Promise<number> {
    const e = await this.#newEntry(p)
    const file = this.volume.newFile()
    let fd: number
    try {
      fd = await createWithHeader(e.path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode & 0o7777, file.header)
      try {
        await this.#own(e.path, caller)
      } catch (err) {
        closeQuietly(fd)
        await fs.promises.unlink(e.path).catch(() => undefined)
        throw err
      }
    } catch (err) {
      // No file: neither its DEK nor its index row may outlive the failure, nor its sidecar
      // (unless the name exists: then the sidecar is that entry's).
      this.volume.index.remove(file.fileId)
      file.dek.dispose()
      await this.#dropUnusedSidecar(e)
      throw err
    }
    return this.files.add(fd, (flags & ~O_ACCMODE) | fs.constants.O_RDWR, p, this.files.adopt(file))
  }

  async open (p: string, flags: number): Promise<number> {
    const e = await this.paths.resolve(p)
    const writable = (flags & O_ACCMODE) !== fs.constants.O_RDONLY
    // Reading the header of a file opened write-only must not change its atime (touch -m),
    // and a read-only mount changes nothing in the cipher dir, atimes included.
    const noatime = (flags & O_ACCMODE) === fs.constants.O_WRONLY || this.volume.readOnly ? fs.constants.O_NOATIME : 0
    const base = (writable ? fs.constants.O_RDWR : fs.constants.O_RDONLY) | fs.constants.O_NOFOLLOW
    const opened = await openWithHeader(e.path, base | noatime)
    let fh: number
    try {
      fh = this.files.add(opened.fd, flags, p, this.files.contentsOf(opened.header, opened.size))
    } catch (err) {
      closeQuietly(opened.fd)
      throw err
    }
    if ((flags & fs.constants.O_TRUNC) !== 0 && writable) await this.ftruncate(fh, 0)
    return fh
  }

  /** The contents of a handle; gives a header-less (zero-length) backing file an identity first. */
  async #writableContents (fh: number): Promise<FileContents> {
    const h = this.files.get(fh)
    if (!h.writable) throw new FsError('EBADF')
    if (h.contents === null) this.files.setContents(h, await this.#newIdentity(h.fd))
    return h.contents as FileContents
  }

  /** A new file ID and DEK for the (empty) backing file behind `fd`: its header written, its contents registered. */
  async #newIdentity (fd: number): Promise<FileContents> {
    const file = this.volume.newFile()
    await writeFullAt(fd, file.header, 0)
    return this.files.adopt(file)
  }

  async read (fh: number, buf: Buffer, len: number, offset: number): Promise<number> {
    const h = this.files.get(fh)
    const c = h.contents
    if (c === null) return 0
    try {
      return await c.lock.read(() => c.read(h.fd, offset, len, buf))
    } catch (err) {
      throw Object.assign(err as object, { fileId: c.fileId })
    }
  }

  async write (fh: number, buf: Buffer, len: number, offset: number): Promise<number> {
    const c = await this.#writableContents(fh)
    const h = this.files.get(fh)
    const data = len === buf.length ? buf : buf.subarray(0, len)
    let n: number
    try {
      n = await c.lock.write(() => c.write(h.fd, h.append ? c.size : offset, data))
    } catch (err) {
      throw Object.assign(err as object, { fileId: c.fileId })
    }
    await this.#invalidateOtherNames(h)
    return n
  }

  /**
   * After a change through `h`, the file's other names must not serve cached pages (the
   * names it is open by) or attributes (every name the kernel has looked up).
   */
  async #invalidateOtherNames (h: Handle): Promise<void> {
    const others = this.files.otherPaths(h)
    if (this.links.size > 0) others.push(...this.links.others(h.path))
    if (others.length > 0) await this.#invalidateAll(others)
  }

  async ftruncate (fh: number, size: number): Promise<void> {
    if (size === 0 && this.files.get(fh).contents === null) return
    const c = await this.#writableContents(fh)
    const h = this.files.get(fh)
    await c.lock.write(() => c.truncate(h.fd, size))
    await this.#invalidateOtherNames(h)
  }

  async truncate (p: string, size: number): Promise<void> {
    const fh = await this.open(p, fs.constants.O_WRONLY)
    try {
      await this.ftruncate(fh, size)
    } finally {
      await this.files.release(fh)
    }
  }

  async fsync (fh: number, datasync: boolean): Promise<void> {
    const h = this.files.get(fh)
    await (datasync ? fdatasyncFd : fsyncFd)(h.fd)
  }

  async release (fh: number): Promise<void> {
    const p = this.files.pathOf(fh)
    await this.files.release(fh)
    // libfuse unlinks a hidden file at its last close, but cannot name one whose directory
    // was removed (evictHidden): that one is ours to remove.
    if (p !== undefined && this.paths.orphan(p) !== undefined && !this.files.isOpen(p)) await this.unlink(p)
  }

  /** The file ID of a backing regular file that is about to lose its last name, or null. */
  async #lastLinkFileId (backing: string): Promise<Buffer | null> {
    const st = await fs.promises.lstat(backing).catch(() => null)
    if (st === null || !st.isFile() || st.nlink !== 1 || st.size < HEADER_BYTES) return null
    const fd = await openFd(backing, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW).catch(() => null)
    if (fd === null) return null
    try {
      return (await readHeader(fd).catch(() => null))?.fileId ?? null
    } finally {
      closeQuietly(fd)
    }
  }

  #forgetFile (fileId: Buffer | null): void {
    if (fileId === null || this.files.find(fileId) !== undefined) return
    this.volume.index.remove(fileId)
    this.files.deks.drop(fileId.toString('hex'))
  }

  async unlink (p: string): Promise<void> {
    const e = await this.paths.resolve(p)
    // libfuse removes a hidden file at its last close; on a plain directory that close
    // changes nothing, so neither may the backing directory's mtime.
    const remove = (): Promise<Buffer | null> => unlinkLast(e.path)
    const gone = await (isHidden(p) ? this.#keepingMtime(e.parent, remove) : remove())
    await this.paths.removeSidecar(e)
    this.paths.forgetOrphan(p)
    this.#hidden.delete(p)
    this.#forgetFile(gone)
    // The file's other names now have one link fewer.
    const others = this.links.others(p)
    this.links.forget(p)
    await this.#invalidateAll(others)
  }

  /** Runs `fn`, then puts back the times of a backing directory that it changes as a side effect. */
  async #keepingMtime<T> (dir: string, fn: () => Promise<T>): Promise<T> {
    const st = await fs.promises.stat(dir, { bigint: true })
    try {
      return await fn()
    } finally {
      const [as, an] = secondsAndNanos(st.atimeNs)
      const [ms, mn] = secondsAndNanos(st.mtimeNs)
      posix.utimensat(dir, as, an, ms, mn)
    }
  }

  async rename (from: string, to: string, flags = 0): Promise<void> {
    if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) !== 0 || flags === (RENAME_NOREPLACE | RENAME_EXCHANGE)) throw new FsError('EINVAL')
    const src = await this.paths.resolve(from)
    const dst = await this.paths.resolve(to)
    if ((flags & RENAME_EXCHANGE) !== 0) return this.#exchange(from, to, src, dst)
    const srcStat = await fs.promises.lstat(src.path)
    // The kernel holds both parent directories locked, so no other request through the mount
    // can create the target between this check and the rename.
    if ((flags & RENAME_NOREPLACE) !== 0 && await exists(dst.path)) throw new FsError('EEXIST')
    const replaced = await this.#lastLinkFileId(dst.path)
    await this.paths.writeSidecar(dst)
    if (srcStat.isDirectory()) await this.#renameDir(src.path, dst.path)
    else await fs.promises.rename(src.path, dst.path)
    if (src.sidecar !== dst.sidecar) await this.paths.removeSidecar(src)
    if (srcStat.isDirectory()) {
      this.paths.forgetTree(src.path)
      this.paths.forgetTree(dst.path)
    }
    this.#forgetFile(replaced)
    this.files.renamed(from, to)
    // The replaced file lost a name: its other names' link counts are stale. So are the
    // moved file's when libfuse hides a name that was unlinked while open.
    const stale = this.links.others(to)
    if (isHidden(to)) {
      this.#hidden.add(to)
      stale.push(...this.links.others(from))
    }
    this.links.renamed(from, to)
    await this.#invalidateAll(stale)
  }

  /**
   * renameat2(RENAME_EXCHANGE): the two backing entries swap places. Each name keeps its own
   * encrypted name (and long-name sidecar); only what it refers to changes.
   */
  async #exchange (from: string, to: string, src: CipherEntry, dst: CipherEntry): Promise<void> {
    check(posix.renameat2(src.path, dst.path, RENAME_EXCHANGE))
    this.paths.forgetTree(src.path)
    this.paths.forgetTree(dst.path)
    this.files.exchanged(from, to)
    this.links.exchanged(from, to)
  }

  /** rename(2) of a directory over an empty one: the target's own ID file must not make it look non-empty. */
  async #renameDir (from: string, to: string): Promise<void> {
    const target = await fs.promises.readdir(to).catch(() => null)
    if (target === null) return fs.promises.rename(from, to)
    // Said here, not left to the backing: over SFTP (sshfs) a rename onto a non-empty
    // directory fails with EPERM, as SFTP has no ENOTEMPTY.
    if (target.some(n => n !== DIR_ID_FILE)) throw new FsError('ENOTEMPTY')
    const id = await this.paths.dirId(to)
    await fs.promises.unlink(path.join(to, DIR_ID_FILE))
    try {
      await fs.promises.rename(from, to)
    } catch (err) {
      writeDirIdSync(to, id)
      throw err
    }
  }

  async link (from: string, to: string): Promise<void> {
    const src = await this.paths.resolve(from)
    const dst = await this.#newEntry(to)
    await fs.promises.link(src.path, dst.path)
    const st = await lstatBig(dst.path)
    this.#seen(from, st)
    this.#seen(to, st)
    await this.#invalidateOtherLinks(to)
  }

  async symlink (target: string, p: string, caller?: Caller): Promise<void> {
    const t = Buffer.from(target, 'utf8')
    if (t.length > LINK_TARGET_MAX) throw new FsError('ENAMETOOLONG')
    const link = this.volume.links.encrypt(t)
    await this.#makeEntry(p, caller, backing => fs.promises.symlink(link, backing))
  }

  /** FIFOs, sockets and device nodes (regular files come through create). */
  async mknod (p: string, mode: number, dev: number, caller?: Caller): Promise<void> {
    const type = mode & S_IFMT
    if (type === S_IFREG || type === 0) {
      await this.release(await this.create(p, mode, fs.constants.O_WRONLY, caller))
      return
    }
    await this.#makeEntry(p, caller, async backing => check(posix.mknod(backing, mode, dev)))
  }

  #xattrName (name: string): string {
    if (!name.startsWith('user.')) throw new FsError('EOPNOTSUPP')
    const backing = XATTR_PREFIX + this.volume.xattrs.encryptName(Buffer.from(name, 'utf8'))
    if (backing.length > XATTR_NAME_MAX) throw new FsError('ERANGE')
    return backing
  }

  async setxattr (p: string, name: string, value: Buffer, flags: number): Promise<void> {
    const e = await this.paths.resolve(p)
    const backing = this.#xattrName(name)
    const sealed = this.volume.xattrs.encryptValue(backing, value)
    if (sealed.length > XATTR_SIZE_MAX) throw new FsError('E2BIG')
    check(posix.lsetxattr(e.path, backing, sealed, flags))
  }

  async getxattr (p: string, name: string): Promise<Buffer> {
    const e = await this.paths.resolve(p)
    if (!name.startsWith('user.')) throw new FsError('ENODATA')
    const backing = this.#xattrName(name)
    const sealed = posix.lgetxattr(e.path, backing)
    if (typeof sealed === 'number') { check(sealed); throw new FsError('EIO') }
    return this.volume.xattrs.decryptValue(backing, sealed)
  }

  async listxattr (p: string): Promise<string[]> {
    const e = await this.paths.resolve(p)
    const raw = posix.llistxattr(e.path)
    if (typeof raw === 'number') { check(raw); return [] }
    const names: string[] = []
    for (const backing of raw.toString('utf8').split('\0')) {
      if (!backing.startsWith(XATTR_PREFIX)) continue
      try {
        names.push(this.volume.xattrs.decryptName(backing.slice(XATTR_PREFIX.length)).toString('utf8'))
      } catch { /* not ours or damaged: not listed */ }
    }
    return names
  }

  async removexattr (p: string, name: string): Promise<void> {
    const e = await this.paths.resolve(p)
    if (!name.startsWith('user.')) throw new FsError('ENODATA')
    check(posix.lremovexattr(e.path, this.#xattrName(name)))
  }

  async readlink (p: string): Promise<string> {
    const e = await this.paths.resolve(p)
    return this.volume.links.decrypt(await fs.promises.readlink(e.path)).toString('utf8')
  }

  // chmod, chown and utimens come with a file handle (fh > 0) when the kernel has one: the
  // file may have no name left (unlinked while open).

  async chmod (p: string, mode: number, fh = 0): Promise<void> {
    if (fh > 0) {
      const h = this.files.get(fh)
      await new Promise<void>((resolve, reject) => fs.fchmod(h.fd, mode & 0o7777, err => err ? reject(err) : resolve()))
      return this.#invalidateOtherLinks(h.path)
    }
    // Checked and changed through one O_PATH descriptor: a backing file swapped for a symlink
    // between a check by path and a chmod by path would hand the mode to the link's target.
    const e = await this.paths.resolve(p)
    const fd = await openFd(e.path, O_PATH | fs.constants.O_NOFOLLOW)
    try {
      if ((Number((await fstatFd(fd)).mode) & S_IFMT) === S_IFLNK) throw new FsError('EOPNOTSUPP')
      await new Promise<void>((resolve, reject) => fs.chmod(`/proc/self/fd/${fd}`, mode & 0o7777, err => err ? reject(err) : resolve()))
    } finally {
      closeQuietly(fd)
    }
    await this.#invalidateOtherLinks(p)
  }

  async chown (p: string, uid: number, gid: number, fh = 0): Promise<void> {
    if (fh > 0) {
      const h = this.files.get(fh)
      await new Promise<void>((resolve, reject) => fs.fchown(h.fd, uid, gid, err => err ? reject(err) : resolve()))
      return this.#invalidateOtherLinks(h.path)
    }
    const e = await this.paths.resolve(p)
    await new Promise<void>((resolve, reject) => fs.lchown(e.path, uid, gid, err => err ? reject(err) : resolve()))
    await this.#invalidateOtherLinks(p)
  }

  async utimens (p: string, atime: Time, mtime: Time, fh = 0): Promise<void> {
    if (fh > 0) {
      const h = this.files.get(fh)
      check(posix.futimens(h.fd, atime.sec, atime.nsec, mtime.sec, mtime.nsec))
      return this.#invalidateOtherLinks(h.path)
    }
    const e = await this.paths.resolve(p)
    check(posix.utimensat(e.path, atime.sec, atime.nsec, mtime.sec, mtime.nsec))
    await this.#invalidateOtherLinks(p)
  }

  /** fuse-native's operation table: callback style, errno in one place. `caller` reads the request's caller. */
  handlers (caller: () => Caller, invalidate?: (p: string) => Promise<void>): Record<string, unknown> {
    if (invalidate !== undefined) this.#invalidate = invalidate
    const run = <T>(fn: () => Promise<T>, cb: (err: number, value?: T) => void, ok: (v: T) => void = v => cb(0, v)): void => {
      this.requests++
      fn().then(ok, err => cb(toErrno(err, (err as { fileId?: Buffer })?.fileId)))
    }
    return {
      init: (cb: Cb) => cb(0),
      getattr: (p: string, cb: Cb<Attr>) => run(() => this.getattr(p), cb),
      fgetattr: (_p: string, fh: number, cb: Cb<Attr>) => run(() => this.fgetattr(fh), cb),
      opendir: (p: string, _flags: number, cb: Cb<number>) => run(() => this.opendir(p), cb),
      readdir: (_p: string, fh: number, cb: Cb<string[]>) => run(() => this.readdir(fh), cb),
      releasedir: (_p: string, fh: number, cb: Cb) => { this.files.releaseDir(fh); cb(0) },
      fsyncdir: (_p: string, _datasync: number, fh: number, cb: Cb) => run(() => this.fsyncdir(fh), cb, () => cb(0)),
      statfs: (_p: string, cb: Cb<object>) => run(() => this.statfs(), cb, s => cb(0, {
        bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail,
        files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255
      })),
      mkdir: (p: string, mode: number, cb: Cb) => { const c = caller(); run(() => this.mkdir(p, mode, c), cb, () => cb(0)) },
      mknod: (p: string, mode: number, dev: number, cb: Cb) => { const c = caller(); run(() => this.mknod(p, mode, dev, c), cb, () => cb(0)) },
      rmdir: (p: string, cb: Cb) => run(() => this.rmdir(p), cb, () => cb(0)),
      create: (p: string, mode: number, flags: number, cb: Cb<number>) => { const c = caller(); run(() => this.create(p, mode, flags, c), cb) },
      open: (p: string, flags: number, cb: Cb<number>) => run(() => this.open(p, flags), cb),
      read: (_p: string, fh: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) =>
        run(() => this.read(fh, buf, len, pos), cb, n => cb(n)),
      write: (_p: string, fh: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) =>
        run(() => this.write(fh, buf, len, pos), cb, n => cb(n)),
      truncate: (p: string, size: number, cb: Cb) => run(() => this.truncate(p, size), cb, () => cb(0)),
      ftruncate: (_p: string, fh: number, size: number, cb: Cb) => run(() => this.ftruncate(fh, size), cb, () => cb(0)),
      flush: (_p: string, _fh: number, cb: Cb) => cb(0),
      fsync: (_p: string, datasync: number, fh: number, cb: Cb) => run(() => this.fsync(fh, datasync !== 0), cb, () => cb(0)),
      release: (_p: string, fh: number, cb: Cb) => run(() => this.release(fh), cb, () => cb(0)),
      unlink: (p: string, cb: Cb) => run(() => this.unlink(p), cb, () => cb(0)),
      rename: (from: string, to: string, flags: number, cb: Cb) => run(() => this.rename(from, to, flags), cb, () => cb(0)),
      link: (from: string, to: string, cb: Cb) => run(() => this.link(from, to), cb, () => cb(0)),
      symlink: (target: string, p: string, cb: Cb) => { const c = caller(); run(() => this.symlink(target, p, c), cb, () => cb(0)) },
      setxattr: (p: string, name: string, value: Buffer, _pos: number, flags: number, cb: Cb) => run(() => this.setxattr(p, name, Buffer.from(value), flags), cb, () => cb(0)),
      getxattr: (p: string, name: string, _pos: number, cb: Cb<Buffer>) => run(() => this.getxattr(p, name), cb),
      listxattr: (p: string, cb: Cb<string[]>) => run(() => this.listxattr(p), cb),
      removexattr: (p: string, name: string, cb: Cb) => run(() => this.removexattr(p, name), cb, () => cb(0)),
      readlink: (p: string, cb: Cb<string>) => run(() => this.readlink(p), cb),
      chmod: (p: string, mode: number, fh: number, cb: Cb) => run(() => this.chmod(p, mode, fh), cb, () => cb(0)),
      chown: (p: string, uid: number, gid: number, fh: number, cb: Cb) => run(() => this.chown(p, uid, gid, fh), cb, () => cb(0)),
      utimens: (p: string, atime: Time, mtime: Time, fh: number, cb: Cb) => run(() => this.utimens(p, atime, mtime, fh), cb, () => cb(0))
    }
  }

  /**
   * Whether the backing filesystem shows hard links as one inode with a link count (local
   * filesystems, NFS), which attribute caching needs to keep every name of a file coherent.
   * sshfs, for one, gives each name its own inode number and a link count of 1. A read-only
   * mount changes nothing, so nothing it caches can go stale through it.
   */
  async linksAreVisible (): Promise<boolean> {
    if (this.volume.readOnly) return true
    const a = path.join(this.volume.dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`)
    const b = `${a}.link`
    return this.#keepingMtime(this.volume.dir, async () => {
      try {
        await fs.promises.writeFile(a, '', { flag: 'wx', mode: 0o600 })
        await fs.promises.link(a, b)
        const [sa, sb] = await Promise.all([lstatBig(a), lstatBig(b)])
        return sa.ino === sb.ino && sa.nlink === 2n && sb.nlink === 2n
      } catch {
        return false
      } finally {
        await Promise.all([a, b].map(f => fs.promises.rm(f, { force: true })))
      }
    })
  }

  /**
   * Removes files left in the cipher dir's root by a daemon that died while they were open
   * after their directory was removed (see CipherPaths.evictHidden): nothing can name them.
   */
  async sweepOrphans (): Promise<void> {
    if (this.volume.readOnly) return
    const orphans = (await fs.promises.readdir(this.volume.dir)).filter(n => n.startsWith(ORPHAN_PREFIX))
    if (orphans.length === 0) return
    await this.#keepingMtime(this.volume.dir, async () => {
      for (const name of orphans) {
        const backing = path.join(this.volume.dir, name)
        this.#forgetFile(await unlinkLast(backing))
      }
    })
  }

  async close (): Promise<void> {
    await this.files.closeAll()
    this.volume.close()
  }
}
