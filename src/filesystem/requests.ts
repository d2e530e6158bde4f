import os from 'os'
import { Directories } from './directories'
import { Entries, Entry } from './entries'
import { toErrno } from './errno'
import { Filesystem } from './filesystem'
import { Files } from './files'
import { FsError } from './fs-error'
import { RENAME_EXCHANGE } from './backing-addon'
import { S_IFMT, S_IFREG } from './inodes'
import { NodeBudget } from './node-budget'
import { requestBuffers } from './request-buffers'
import {
  fuse, RequestHandlers, SET_ATIME, SET_ATIME_NOW, SET_GID, SET_MODE, SET_MTIME, SET_MTIME_NOW, SET_SIZE, SET_UID
} from './fuse-session'

const ERANGE = (os.constants.errno as Record<string, number>).ERANGE
const UTIME_NOW = (1 << 30) - 1
const UTIME_OMIT = (1 << 30) - 2

/**
 * The FUSE request handlers: each request goes to its operation and is answered once.
 * Failures become errno here and only here (errno.ts). A handler never throws: everything
 * it starts ends in a reply.
 */
export class Requests implements RequestHandlers {
  readonly entries: Entries
  readonly files: Files
  readonly dirs: Directories
  /** Requests served so far: an idle timer compares it over time (no clock read per request). */
  count = 0
  /** Called when the kernel ends the connection (unmounted from outside). */
  onExit: () => void = () => undefined
  /** Operations still running (their requests may already have been answered with EIO at unmount). */
  #running = 0
  #idle: (() => void) | null = null

  readonly #budget: NodeBudget

  constructor (readonly fs: Filesystem, descriptorLimit: number) {
    this.entries = new Entries(fs)
    this.files = new Files(fs)
    this.dirs = new Directories(fs)
    this.#budget = new NodeBudget(fs.inodes, descriptorLimit, () => fs.files.count, () => fs.files.openNodes(), (entries, done) => {
      try { return fuse.invalEntries(this, entries, done) } catch { return false }  // the session has ended
    })
  }

  #fail (id: number, err: unknown): void {
    fuse.replyErr(id, -toErrno(err, (err as { fileId?: Buffer })?.fileId))
  }

  /** Runs an operation and answers with `reply`, or with its errno. */
  #run<T> (id: number, op: () => Promise<T>, reply: (v: T) => void): void {
    this.count++
    let p: Promise<T>
    try {
      p = op()
    } catch (err) {
      this.#fail(id, err)
      return
    }
    this.#running++
    p.then(v => {
      try { reply(v) } catch (err) { this.#fail(id, err) }
    }, err => this.#fail(id, err)).finally(() => {
      if (--this.#running === 0 && this.#idle !== null) this.#idle()
    })
  }

  /**
   * Resolves to true when no operation is running, or to false after `ms`: at unmount,
   * descriptors and keys must not go while a pool job still writes through them.
   */
  settled (ms: number): Promise<boolean> {
    if (this.#running === 0) return Promise.resolve(true)
    return new Promise(resolve => {
      const timer = setTimeout(() => resolve(false), ms)
      this.#idle = () => { clearTimeout(timer); resolve(true) }
    })
  }

  /** Operations started and not yet answered. */
  get running (): number {
    return this.#running
  }

  #ok (id: number): () => void {
    return () => fuse.replyErr(id, 0)
  }

  /** Answers with a node the kernel now knows as `name` in `parent`. */
  #entry (id: number, parent: number, name: Buffer): (e: Entry) => void {
    const c = this.fs.cache
    return e => {
      if (!fuse.replyEntry(id, e.inode.node, e.st, this.fs.attrTimeout(e.st), c.entry)) return this.fs.inodes.forget(e.inode.node, 1)
      this.#known(e, parent, name)
    }
  }

  /** Runs an operation that opens a descriptor once the node budget has room for it. */
  #gated<T> (op: () => Promise<T>): () => Promise<T> {
    return () => {
      const wait = this.#budget.room()
      return wait === null ? op() : wait.then(op)
    }
  }

  #known (e: Entry, parent: number, name: Buffer): void {
    this.fs.inodes.named(e.inode, parent, name)
    this.#budget.check()
  }

  lookup (id: number, parent: number, name: Buffer): void {
    this.#run(id, this.#gated(() => this.entries.lookup(parent, name)), this.#entry(id, parent, name))
  }

  forget (_id: undefined, node: number, n: number): void {
    this.fs.inodes.forget(node, n)
    this.#budget.released()
  }

  getattr (id: number, node: number): void {
    this.#run(id, () => this.entries.getattr(node), st => fuse.replyAttr(id, st, this.fs.attrTimeout(st)))
  }

  setattr (id: number, node: number, toSet: number, fh: number, mode: number, uid: number, gid: number, size: number,
    atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void {
    this.#run(id, async () => {
      const inode = this.fs.inodes.get(node)
      if ((toSet & (SET_UID | SET_GID)) !== 0) {
        await this.entries.chown(inode, (toSet & SET_UID) !== 0 ? uid : -1, (toSet & SET_GID) !== 0 ? gid : -1)
      }
      if ((toSet & SET_MODE) !== 0) await this.entries.chmod(inode, mode)
      if ((toSet & SET_SIZE) !== 0) {
        if (fh >= 0) await this.files.truncate(fh, size)
        else await this.files.truncateNode(node, size)
      }
      if ((toSet & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW)) !== 0) {
        // A write window of the file closes first: its header write must come before the times
        // (which it keeps, unless they are the ones set here).
        await this.fs.files.contentsOfNode(node)?.closeWindow((toSet & (SET_MTIME | SET_MTIME_NOW)) === 0)
        const an = (toSet & SET_ATIME_NOW) !== 0 ? UTIME_NOW : (toSet & SET_ATIME) !== 0 ? atimeNsec : UTIME_OMIT
        const mn = (toSet & SET_MTIME_NOW) !== 0 ? UTIME_NOW : (toSet & SET_MTIME) !== 0 ? mtimeNsec : UTIME_OMIT
        await this.entries.utimens(inode, (toSet & SET_ATIME) !== 0 ? atimeSec : 0, an, (toSet & SET_MTIME) !== 0 ? mtimeSec : 0, mn)
      }
      return this.fs.statNode(inode)
    }, st => fuse.replyAttr(id, st, this.fs.attrTimeout(st)))
  }

  access (id: number, node: number, mask: number): void {
    this.#run(id, () => this.entries.access(node, mask), this.#ok(id))
  }

  readlink (id: number, node: number): void {
    this.#run(id, () => this.entries.readlink(node), t => fuse.replyReadlink(id, t, t.length))
  }

  mknod (id: number, parent: number, name: Buffer, mode: number, rdev: number, uid: number, gid: number): void {
    this.#run(id, this.#gated(async () => {
      if ((mode & S_IFMT) === S_IFREG || (mode & S_IFMT) === 0) {
        // A regular file made by mknod(2) is a created file (empty: its identity comes with its first write).
        const made = await this.files.create(parent, name, mode, 1, { uid, gid })
        await this.files.release(made.fh)
        return made
      }
      return this.entries.mknod(parent, name, mode, rdev, { uid, gid })
    }), this.#entry(id, parent, name))
  }

  mkdir (id: number, parent: number, name: Buffer, mode: number, uid: number, gid: number): void {
    this.#run(id, this.#gated(() => this.entries.mkdir(parent, name, mode, { uid, gid })), this.#entry(id, parent, name))
  }

  unlink (id: number, parent: number, name: Buffer): void {
    this.#run(id, () => this.entries.unlink(parent, name), () => {
      this.fs.inodes.unlinked(parent, name)
      fuse.replyErr(id, 0)
    })
  }

  rmdir (id: number, parent: number, name: Buffer): void {
    this.#run(id, () => this.entries.rmdir(parent, name), () => {
      this.fs.inodes.unlinked(parent, name)
      fuse.replyErr(id, 0)
    })
  }

  symlink (id: number, target: Buffer, parent: number, name: Buffer, uid: number, gid: number): void {
    this.#run(id, this.#gated(() => this.entries.symlink(target, parent, name, { uid, gid })), this.#entry(id, parent, name))
  }

  rename (id: number, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): void {
    this.#run(id, () => this.entries.rename(parent, name, newParent, newName, flags), () => {
      this.fs.inodes.renamed(parent, name, newParent, newName, (flags & RENAME_EXCHANGE) !== 0)
      fuse.replyErr(id, 0)
    })
  }

  link (id: number, node: number, newParent: number, newName: Buffer): void {
    this.#run(id, this.#gated(() => this.entries.link(node, newParent, newName)), this.#entry(id, newParent, newName))
  }

  open (id: number, node: number, flags: number): void {
    this.#run(id, this.#gated(() => this.files.open(node, flags)), fh => {
      if (!fuse.replyOpen(id, fh, this.fs.cache.keepCache, false)) void this.files.release(fh)
    })
  }

  create (id: number, parent: number, name: Buffer, mode: number, flags: number, uid: number, gid: number): void {
    const c = this.fs.cache
    this.#run(id, this.#gated(() => this.files.create(parent, name, mode, flags, { uid, gid })), e => {
      if (!fuse.replyCreate(id, e.inode.node, e.st, c.fileAttr, c.entry, e.fh, c.keepCache, false)) {
        this.fs.inodes.forget(e.inode.node, 1)
        void this.files.release(e.fh)
        return
      }
      this.#known(e, parent, name)
    })
  }

  read (id: number, _node: number, fh: number, size: number, offset: number): void {
    this.#run(id, () => this.files.read(fh, size, offset), r => {
      fuse.replyBuf(id, r.buf, r.n)  // written to the kernel before it returns
      requestBuffers.give(r.buf)
    })
  }

  /** `borrowed`: `data` is the session's receive buffer, valid only during this call. */
  write (id: number, _node: number, fh: number, data: Buffer, offset: number, borrowed: boolean): void {
    if (!borrowed) {
      this.#run(id, () => this.files.write(fh, data, offset), n => fuse.replyWrite(id, n))
      return
    }
    const own = requestBuffers.take(data.length)
    data.copy(own)
    this.#run(id, () => this.files.write(fh, own, offset).finally(() => requestBuffers.give(own)), n => fuse.replyWrite(id, n))
  }

  release (id: number, _node: number, fh: number): void {
    this.#run(id, () => this.files.release(fh), this.#ok(id))
  }

  fsync (id: number, _node: number, fh: number, datasync: number): void {
    this.#run(id, () => this.files.fsync(fh, datasync !== 0), this.#ok(id))
  }

  opendir (id: number, node: number): void {
    this.#run(id, async () => this.dirs.opendir(node), fh => fuse.replyOpen(id, fh, false, false))
  }

  readdir (id: number, _node: number, fh: number, size: number, offset: number): void {
    this.#run(id, () => this.dirs.readdir(fh, offset), listing => fuse.replyDir(id, listing, offset, size))
  }

  releasedir (id: number, _node: number, fh: number): void {
    this.dirs.releasedir(fh)
    fuse.replyErr(id, 0)
  }

  fsyncdir (id: number, _node: number, fh: number): void {
    this.#run(id, () => this.dirs.fsyncdir(fh), this.#ok(id))
  }

  statfs (id: number): void {
    this.#run(id, () => this.entries.statfs(), s => fuse.replyStatfs(id, s))
  }

  setxattr (id: number, node: number, name: Buffer, value: Buffer, flags: number): void {
    this.#run(id, () => this.entries.setxattr(node, name, value, flags), this.#ok(id))
  }

  getxattr (id: number, node: number, name: Buffer, size: number): void {
    this.#run(id, () => this.entries.getxattr(node, name), v => this.#sized(id, v, size))
  }

  listxattr (id: number, node: number, size: number): void {
    this.#run(id, () => this.entries.listxattr(node), v => this.#sized(id, v, size))
  }

  /** A value for a caller's buffer of `size` bytes: its size for a probe (0), ERANGE if it does not fit. */
  #sized (id: number, v: Buffer, size: number): void {
    if (size === 0) fuse.replyXattr(id, v.length)
    else if (v.length > size) fuse.replyErr(id, ERANGE)
    else fuse.replyBuf(id, v, v.length)
  }

  removexattr (id: number, node: number, name: Buffer): void {
    this.#run(id, () => this.entries.removexattr(node, name), this.#ok(id))
  }

  exited (): void {
    this.onExit()
  }

  /** Whether anything is open (the idle timer waits for nothing to be). */
  get busy (): boolean {
    return this.fs.files.count > 0 || this.dirs.count > 0
  }
}

export { FsError }
