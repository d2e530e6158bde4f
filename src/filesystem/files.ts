import { decodeHeader, FileHeader, HEADER_BYTES } from '../volume/file-header'
import { STAT_LENGTH, STAT_NLINK, TYPE_REG } from './backing-addon'
import { Entry } from './entries'
import { Caller, EMPTY, Filesystem } from './filesystem'
import { fstatFd, ftruncateFd, readAt } from './fd-io'
import { FileContents } from './file-contents'
import { FsError } from './fs-error'
import { S_IFMT, S_IFREG } from './inodes'
import { Handle } from './open-files'
import { requestBuffers } from './request-buffers'

const O_ACCMODE = 3
const O_RDONLY = 0
const O_WRONLY = 1
const O_RDWR = 2
const O_CREAT = 0o100
const O_EXCL = 0o200
const O_TRUNC = 0o1000
const O_APPEND = 0o2000
const O_NOATIME = 0o1000000

/** Open files: create, open, read, write, truncate, fsync, release. */
export class Files {
  /** Identities being given to header-less files, by node (see #writableContents). */
  readonly #identities = new Map<number, Promise<FileContents | null>>()

  constructor (private readonly fs: Filesystem) {}

  get #b () { return this.fs.backing }

  async create (parent: number, name: Buffer, mode: number, flags: number, caller: Caller): Promise<Entry & { fh: number }> {
    const dir = this.fs.dir(parent)
    const bn = await this.fs.names.backingName(dir, name)
    await this.fs.names.writeSidecar(dir, bn)
    let fd = -1
    let pathFd = -1
    try {
      // Created empty, without a header (docs/FORMAT.md §6): the file gets its identity (ID,
      // DEK, header, index row) at its first write, as a header-less file does; an empty file
      // (touch, a lock file) never needs one.
      fd = await this.#b.createWithHeaderAt(dir.fd, bn.name, O_RDWR | O_CREAT | O_EXCL, mode & 0o7777, EMPTY)
      // The node's O_PATH descriptor is taken from the descriptor just created, not by name
      // again: nothing swapped in between can become this node.
      const st = new Float64Array(STAT_LENGTH)
      pathFd = await this.#b.pathFdOf(fd, st)
      await this.fs.own(pathFd, caller, dir)
      const inode = this.fs.inodes.add(pathFd, st)
      const fh = this.fs.files.add({ fd, node: inode.node, contents: null, append: (flags & O_APPEND) !== 0, writable: true })
      return { inode, st: this.fs.nodeAttrs(inode, st), fh }
    } catch (err) {
      // No file, and no sidecar left behind (unless the name exists: then it is that entry's).
      if (pathFd >= 0) await this.#b.closeFd(pathFd).catch(() => undefined)
      if (fd >= 0) {
        await this.#b.closeFd(fd).catch(() => undefined)
        await this.#b.unlinkAt(dir.fd, bn.name, 0).catch(() => undefined)
      }
      if (fd >= 0 || !(await this.#b.statAt(dir.fd, bn.name, new Float64Array(STAT_LENGTH)).then(() => true, () => false))) {
        await this.fs.names.removeSidecar(dir, bn)
      }
      throw err
    }
  }

  async open (node: number, flags: number): Promise<number> {
    const inode = this.fs.inodes.get(node)
    if ((inode.type & S_IFMT) !== S_IFREG) throw new FsError('EIO')
    const writable = (flags & O_ACCMODE) !== O_RDONLY
    // Its first READ is then asked for with the header (not when the open truncates it).
    const prefetch = (flags & O_ACCMODE) !== O_WRONLY && (flags & O_TRUNC) === 0
    // Reading the header of a file opened write-only must not change its atime (touch -m),
    // and a read-only mount changes nothing in the cipher dir, atimes included.
    const noatime = (flags & O_ACCMODE) === O_WRONLY || this.fs.volume.readOnly ? O_NOATIME : 0
    const header = Buffer.alloc(HEADER_BYTES)
    const sizes = new Float64Array(2)
    let fd: number
    try {
      fd = await this.#b.openHeaderFd(inode.fd, (writable ? O_RDWR : O_RDONLY) | noatime, header, sizes, prefetch)
    } catch (err) {
      // O_NOATIME is refused for a file the caller does not own (unless root): open without it.
      if ((err as FsError).code !== 'EPERM' || noatime === 0) throw err
      fd = await this.#b.openHeaderFd(inode.fd, writable ? O_RDWR : O_RDONLY, header, sizes, prefetch)
    }
    let fh: number
    try {
      // A header-only file is empty whatever its header says (see OpenFiles.contentsOf).
      const parsed = sizes[0] === 0 || sizes[1] === HEADER_BYTES ? null : sizes[0] === HEADER_BYTES ? decodeHeader(header) : undefined
      if (parsed === undefined || (parsed === null && sizes[1] > HEADER_BYTES)) throw new FsError('EIO')
      const contents = this.fs.files.contentsOf(node, parsed, sizes[1])
      fh = this.fs.files.add({ fd, node, contents, append: (flags & O_APPEND) !== 0, writable })
    } catch (err) {
      await this.#b.closeFd(fd).catch(() => undefined)
      throw err
    }
    await this.#settleInterrupted(node, this.fs.files.get(fh).contents)
    if ((flags & O_TRUNC) !== 0 && writable) {
      await this.truncate(fh, 0).catch(async (err: unknown) => {
        await this.release(fh)
        throw err
      })
    }
    return fh
  }

  /**
   * A file some write of which the volume's last stop interrupted (the write journal has its
   * records): settled before its first read or write, through a descriptor of its own.
   */
  async #settleInterrupted (node: number, contents: FileContents | null): Promise<void> {
    if (contents === null || !contents.interrupted) return
    const inode = this.fs.inodes.get(node)
    await contents.settle(async () => await this.#b.reopen(inode.fd, O_RDWR, TYPE_REG).catch(() => null))
  }

  /**
   * The contents of a handle opened on a file without an identity of its own (empty, or
   * header-only), once the file has them: another handle of the node may have given it its
   * identity since, or written and closed (the header is then on disk); else, with `create`,
   * a new identity (the first write). Null while the file is still empty. One decision per
   * node at a time, so a file never gets two identities (one handle's chunks would be
   * unreadable under the other's header).
   */
  async #contentsFor (h: Handle, create: boolean): Promise<FileContents | null> {
    if (h.contents !== null) return h.contents
    // Where hard links show as separate nodes, two names of one empty file are two nodes:
    // their identity decisions are taken one at a time across the whole mount.
    return await this.#serial(this.fs.files.shareByFileId ? 0 : h.node, () => this.#settle(h, create))
  }

  /** Runs `fn` after every identity decision of `node` (0: all of them) before it (see #contentsFor). */
  async #serial<T> (node: number, fn: () => Promise<T>): Promise<T> {
    const before = this.#identities.get(node) ?? Promise.resolve(null)
    const run = before.catch(() => null).then(fn)
    const tail = run.then(() => null, () => null)
    this.#identities.set(node, tail)
    void tail.then(() => { if (this.#identities.get(node) === tail) this.#identities.delete(node) })
    return await run
  }

  /**
   * After the last close of a file left empty (truncated to zero): its backing file, then only
   * a header, is cut to nothing and its row removed, so that it is empty as a new file is (a
   * header-only file's header is never trusted: see OpenFiles.contentsOf) and its DEK goes.
   * In the node's identity order, so that a first write meanwhile is not undone.
   */
  async #dropIdentity (node: number, fileId: Buffer): Promise<void> {
    await this.#serial(node, async () => {
      if (this.fs.files.contentsOfNode(node) !== undefined) return  // opened and written again meanwhile
      let inode
      try { inode = this.fs.inodes.get(node) } catch { return }
      const fd = await this.#b.reopen(inode.fd, O_WRONLY, TYPE_REG).catch(() => -1)
      if (fd < 0) return  // not writable by the daemon: the header stays, and so does the row
      try {
        if ((await fstatFd(fd)).size !== HEADER_BYTES) return
        await this.fs.keepingTimes(inode, () => ftruncateFd(fd, 0))
        inode.identified = false
        this.fs.forgetFile(fileId)
      } finally {
        await this.#b.closeFd(fd).catch(() => undefined)
      }
    }).catch(() => undefined)
  }

  async #settle (h: Handle, create: boolean): Promise<FileContents | null> {
    const files = this.fs.files
    if (h.contents !== null) return h.contents
    const onNode = files.contentsOfNode(h.node)
    if (onNode !== undefined) return files.share(h, onNode)
    const inode = this.fs.inodes.get(h.node)
    if (inode.identified || files.shareByFileId) {
      // Written through another handle of this node, which has closed since: the header is on
      // disk (rare: the file's other handles have all closed), unless it has been cut back to
      // header-only since. Where hard links show as separate nodes, another name may have
      // given the file its identity: always looked at.
      const header = Buffer.alloc(HEADER_BYTES)
      const got = await readAt(h.fd, header, 0)
      const parsed = got === HEADER_BYTES ? decodeHeader(header) : null
      const size = (await fstatFd(h.fd)).size
      if (size > HEADER_BYTES && parsed === null) throw new FsError('EIO')
      const onNodeNow = files.contentsOfNode(h.node)  // the awaits above let other requests run
      if (onNodeNow !== undefined) return files.share(h, onNodeNow)
      const contents = files.contentsOf(h.node, parsed, size)
      if (contents !== null) {
        h.contents = contents
        files.attachToNode(h.node, contents)
        await this.#settleInterrupted(h.node, contents)
        return contents
      }
    }
    if (!create) return null
    // Registered before the header reaches the disk, so that an open reading the new header
    // shares these contents rather than making a second FileContents; given to this node's
    // handles only once it is there, so that no chunk is written before its header.
    const file = this.fs.volume.newFile()
    const contents = files.adopt(h.node, file, decodeHeader(file.header) as FileHeader)  // its reference becomes this handle's
    inode.identified = true
    try {
      // Over a header-only file's header too: whoever's header that was, this file's data
      // will be under an identity of its own.
      await this.#b.writeAt(h.fd, file.header, 0)
    } catch (err) {
      // Back to an empty file with no identity (a partial header would make it unreadable).
      inode.identified = false
      await ftruncateFd(h.fd, 0).catch(() => undefined)
      files.releaseContents(h.node, contents)
      files.deks.dropPrefix(`${file.fileId.toString('hex')}:`)
      this.fs.volume.index.remove(file.fileId)
      throw err
    }
    files.identified(h.node)
    h.contents = contents
    files.attachToNode(h.node, contents)
    // A header-only file's old header may be a copy of another file's: its row is not ours to
    // remove (one left over costs nothing; fsck --repair removes rows no file holds).
    return contents
  }

  async #writableContents (h: Handle): Promise<FileContents> {
    if (!h.writable) throw new FsError('EBADF')
    return h.contents ?? await this.#contentsFor(h, true) as FileContents
  }

  async read (fh: number, size: number, offset: number): Promise<{ buf: Buffer, n: number }> {
    const h = this.fs.files.get(fh)
    const c = h.contents ?? await this.#contentsFor(h, false)
    const buf = requestBuffers.take(size)  // given back once the reply is written (Requests.read)
    if (c === null) return { buf, n: 0 }
    try {
      return { buf, n: await c.lockedRead(h.fd, offset, size, buf) }
    } catch (err) {
      throw Object.assign(err as object, { fileId: c.fileId })
    }
  }

  async write (fh: number, data: Buffer, offset: number): Promise<number> {
    const h = this.fs.files.get(fh)
    const c = await this.#writableContents(h)
    try {
      return await c.lockedWrite(h.fd, h.append ? 'append' : offset, data)
    } catch (err) {
      throw Object.assign(err as object, { fileId: c.fileId })
    }
  }

  async truncate (fh: number, size: number): Promise<void> {
    const h = this.fs.files.get(fh)
    const existing = h.contents ?? await this.#contentsFor(h, false)
    if (size === 0 && existing === null) return  // empty already, and no identity needed
    const c = existing ?? await this.#writableContents(h)
    await c.lockedTruncate(h.fd, size)
  }

  /** truncate(2) by node, without a handle: through a handle of our own for the call. */
  async truncateNode (node: number, size: number): Promise<void> {
    const fh = await this.open(node, O_WRONLY)
    try {
      await this.truncate(fh, size)
    } finally {
      await this.release(fh)
    }
  }

  async fsync (fh: number, datasync: boolean): Promise<void> {
    await this.#b.fsyncFd(this.fs.files.get(fh).fd, datasync)
  }

  /**
   * Closes a handle. A file whose last name went while it was open loses its DEK's index
   * row at its last close (the backing store freed the file itself already).
   */
  async release (fh: number): Promise<void> {
    const h = this.fs.files.get(fh)
    let unlinked = false  // its last name went while it was open (the backing store freed it)
    if (h.contents !== null) {
      const st = new Float64Array(STAT_LENGTH)
      unlinked = await this.#b.statAt(h.fd, EMPTY, st).then(() => st[STAT_NLINK] === 0, () => false)
    }
    // (Not where hard links show as separate nodes: another name's handle may be writing.)
    const emptied = !unlinked && h.contents !== null && h.contents.size === 0 && !this.fs.volume.readOnly && !this.fs.files.shareByFileId && this.fs.files.lastReference(h)
    // A write window that closes through this descriptor closes now (logged if it cannot), and
    // the contents forget the descriptor before it is closed (its number will be reused).
    if (h.contents !== null) await h.contents.releaseFd(h.fd).catch(() => undefined)
    this.fs.files.remove(fh)
    await this.#b.closeFd(h.fd).catch(() => undefined)
    await this.fs.removeAside(h.node)
    if (unlinked && h.contents !== null) this.fs.forgetFile(h.contents.fileId)
    else if (emptied && h.contents !== null) await this.#dropIdentity(h.node, h.contents.fileId)
  }

  async closeAll (): Promise<void> {
    // Windows close first (not after the lease was lost: another client may write the files now).
    if (this.fs.volume.lease?.lost !== true) for (const h of this.fs.files.handles()) await h.contents?.releaseFd(h.fd).catch(() => undefined)
    for (const h of this.fs.files.removeAll()) await this.#b.closeFd(h.fd).catch(() => undefined)
  }
}
