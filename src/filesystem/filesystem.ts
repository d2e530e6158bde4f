import crypto from 'crypto'
import { HEADER_BYTES, decodeHeader } from '../volume/file-header'
import { Volume } from '../volume/volume'
import { STAT_ATIME_NSEC, STAT_ATIME_SEC, STAT_GID, STAT_LENGTH, STAT_MODE, STAT_MTIME_NSEC, STAT_MTIME_SEC, STAT_NLINK, STAT_SIZE } from './backing-addon'
import { Backing } from './backing'
import { EntryNames } from './entry-names'
import { FsError } from './fs-error'
import { identityOf, Inode, InodeTable, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from './inodes'
import { OpenFiles } from './open-files'

/** Who asked for an operation (from FUSE); new entries are given to them when we run as root. */
export interface Caller { uid: number, gid: number }

/**
 * A file unlinked while open, on a network backing, waits in the root under this prefix for
 * its last close (or the next mount, after a crash).
 */
export const ORPHAN_PREFIX = 'sealfs.orphan.'
const O_RDONLY = 0
const O_NOATIME = 0o1000000

/**
 * How long the kernel may keep what we tell it, in seconds (0 where we cannot keep it
 * coherent). Names and directories change only through this mount (sealfs.lock), so they
 * are always cached; a file's attributes and pages only where the backing store shows hard
 * links as one inode (else a write through one name would leave another's stale).
 */
export interface CacheTimes { fileAttr: number, dirAttr: number, entry: number, keepCache: boolean, linksVisible: boolean }

/**
 * What every operation shares: the volume, the backing store, the node table, the names,
 * the open files. The operations themselves live in entries.ts, files.ts and directories.ts.
 */
export class Filesystem {
  readonly names: EntryNames
  readonly files: OpenFiles
  readonly root: boolean = process.geteuid?.() === 0
  /** Nodes moved aside while open (network backings): node → backing name in the root. */
  readonly #asides = new Map<number, Buffer>()

  constructor (
    readonly volume: Volume,
    readonly backing: Backing,
    readonly inodes: InodeTable,
    readonly cache: CacheTimes
  ) {
    this.names = new EntryNames(volume, backing)
    this.files = new OpenFiles(volume, backing.inline, backing.blockSize, !cache.linksVisible)
  }

  /**
   * A stat of a backing entry made plaintext, in place: a regular file's size is its
   * plaintext size (an open file's as its contents know it), a symlink's is its target's.
   */
  plainAttrs (st: Float64Array): Float64Array {
    const type = st[STAT_MODE] & S_IFMT
    if (type === S_IFREG) st[STAT_SIZE] = this.volume.layout.plainSize(st[STAT_SIZE])
    else if (type === S_IFLNK) st[STAT_SIZE] = Math.max(0, Math.floor(st[STAT_SIZE] * 3 / 4) - 40)
    return st
  }

  /** plainAttrs of a node, with the size of its open contents when it is open. */
  nodeAttrs (inode: Inode, st: Float64Array): Float64Array {
    this.plainAttrs(st)
    const open = this.files.contentsOfNode(inode.node)
    if (open !== undefined) st[STAT_SIZE] = open.size
    return st
  }

  async statNode (inode: Inode): Promise<Float64Array> {
    const st = new Float64Array(STAT_LENGTH)
    await this.backing.statAt(inode.fd, EMPTY, st)
    return this.nodeAttrs(inode, st)
  }

  /**
   * The node of an existing entry the kernel knew (the kernel counts it as one lookup). A
   * known node is found by a stat of the name: a lookup that revalidates a cached entry then
   * costs one fstatat, not an open, a stat and a close. Another is opened (lookupNew), and its
   * identity taken from the descriptor.
   */
  async lookup (dir: Inode, name: Buffer): Promise<{ inode: Inode, st: Float64Array }> {
    const st = new Float64Array(STAT_LENGTH)
    await this.backing.statAt(dir.fd, name, st)
    const known = this.inodes.again(st)
    if (known !== undefined) return { inode: known, st: this.nodeAttrs(known, st) }
    return await this.lookupNew(dir, name)
  }

  /** A new node for an entry just made in `dir` (the kernel counts it as one lookup). */
  async lookupNew (dir: Inode, name: Buffer, dirId: Buffer | null = null): Promise<{ inode: Inode, st: Float64Array }> {
    const st = new Float64Array(STAT_LENGTH)
    const fd = await this.backing.lookupAt(dir.fd, name, st)
    const inode = this.inodes.add(fd, st, dirId)
    return { inode, st: this.nodeAttrs(inode, st) }
  }

  /**
   * Gives a new entry (its O_PATH descriptor) to its creator when the daemon runs as root
   * for other users. In a set-group-ID directory it keeps the directory's group, as the
   * kernel gave it.
   */
  async own (fd: number, caller: Caller, dir: Inode): Promise<void> {
    if (!this.root || (caller.uid === 0 && caller.gid === 0)) return
    const parent = new Float64Array(STAT_LENGTH)
    await this.backing.statAt(dir.fd, EMPTY, parent)
    const gid = (parent[STAT_MODE] & 0o2000) !== 0 ? parent[STAT_GID] : caller.gid
    await this.backing.chownFd(fd, caller.uid, gid)
  }

  /** The file ID of a regular file that `name` in `dir` is the last link of, or null. */
  async lastLinkFileId (dir: Inode, name: Buffer): Promise<Buffer | null> {
    const st = new Float64Array(STAT_LENGTH)
    const fd = await this.backing.lookupAt(dir.fd, name, st).catch(() => null)
    if (fd === null) return null
    try {
      if ((st[STAT_MODE] & S_IFMT) !== S_IFREG || st[STAT_NLINK] !== 1 || st[STAT_SIZE] <= HEADER_BYTES) return null  // header-only: see OpenFiles.contentsOf
      const header = Buffer.alloc(HEADER_BYTES)
      const sizes = new Float64Array(2)
      const io = await this.backing.openHeaderFd(fd, O_RDONLY | (this.root ? O_NOATIME : 0), header, sizes, false).catch(() => null)
      if (io === null) return null
      await this.backing.closeFd(io).catch(() => undefined)
      return sizes[0] === HEADER_BYTES ? decodeHeader(header)?.fileId ?? null : null
    } finally {
      await this.backing.closeFd(fd).catch(() => undefined)
    }
  }

  /**
   * A file's last link is gone and no descriptor has it open: its DEK goes from the index.
   * Where the backing store hides hard links (every name has a link count of 1) a last link
   * cannot be told from one of several, so rows stay (an extra row costs nothing; a missing
   * one would lose the file at the next master-key rotation).
   */
  forgetFile (fileId: Buffer | null): void {
    if (fileId === null || !this.cache.linksVisible || this.files.hasFileOpen(fileId)) return
    this.volume.index.remove(fileId)
    this.files.deks.dropPrefix(`${fileId.toString('hex')}:`)
  }

  /**
   * Unlinking a file that is open through us, on a network backing: the backing store would
   * keep the open file under a hidden name of its own in the same directory (sshfs's
   * .fuse_hidden*, NFS's .nfs*), which makes the directory impossible to remove and changes
   * its mtime at the last close. Instead it is moved to the root under ORPHAN_PREFIX, and
   * removed at its last close (removeAside). Returns its name there, or null if `name` is
   * not such a file.
   * The root's times are kept: on a plain directory the root does not change.
   */
  async moveAside (dir: Inode, name: Buffer): Promise<Buffer | null> {
    if (this.backing.inline) return null
    const st = new Float64Array(STAT_LENGTH)
    const fd = await this.backing.lookupAt(dir.fd, name, st).catch(() => null)
    if (fd === null) return null
    await this.backing.closeFd(fd).catch(() => undefined)
    const node = this.inodes.byIdentity(identityOf(st))
    if (node === undefined || (st[STAT_MODE] & S_IFMT) !== S_IFREG || !this.files.isNodeOpen(node.node)) return null
    const aside = Buffer.from(`${ORPHAN_PREFIX}${crypto.randomBytes(12).toString('hex')}`)
    await this.keepingTimes(this.inodes.root, () => this.backing.renameAt(dir.fd, name, this.inodes.root.fd, aside, 0))
    this.#asides.set(node.node, aside)
    return aside
  }

  /** Undoes moveAside (the rename it made way for failed): the file gets its name back. */
  async moveBack (dir: Inode, name: Buffer, aside: Buffer): Promise<void> {
    await this.keepingTimes(this.inodes.root, () => this.backing.renameAt(this.inodes.root.fd, aside, dir.fd, name, 0))
    for (const [node, a] of this.#asides) if (a === aside) this.#asides.delete(node)
  }

  /** After the last close of a node that moveAside moved: the file goes (its DEK too, if that was its last link). */
  async removeAside (node: number): Promise<void> {
    if (this.#asides.size === 0) return
    const aside = this.#asides.get(node)
    if (aside === undefined || this.files.isNodeOpen(node)) return
    this.#asides.delete(node)
    const root = this.inodes.root
    const header = Buffer.alloc(HEADER_BYTES)
    const n = await this.keepingTimes(root, () => this.backing.unlinkLastAt(root.fd, aside, header)).catch(() => 0)
    if (n === HEADER_BYTES) this.forgetFile(decodeHeader(header)?.fileId ?? null)
  }

  /** Files a crashed daemon left moved aside: nothing can name them, so they go (with their DEKs). */
  async sweepAsides (): Promise<void> {
    if (this.volume.readOnly) return
    const root = this.inodes.root
    const prefix = Buffer.from(ORPHAN_PREFIX)
    for (const { name } of await this.backing.listDir(root.fd)) {
      if (!name.subarray(0, prefix.length).equals(prefix)) continue
      const header = Buffer.alloc(HEADER_BYTES)
      const n = await this.keepingTimes(root, () => this.backing.unlinkLastAt(root.fd, name, header)).catch(() => 0)
      if (n === HEADER_BYTES) this.forgetFile(decodeHeader(header)?.fileId ?? null)
    }
  }

  /** Runs `fn`, then puts back the times of a backing directory that it changes as a side effect. */
  async keepingTimes<T> (dir: Inode, fn: () => Promise<T>): Promise<T> {
    const st = new Float64Array(STAT_LENGTH)
    await this.backing.statAt(dir.fd, EMPTY, st)
    try {
      return await fn()
    } finally {
      await this.backing.utimensFd(dir.fd, st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC], st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC]).catch(() => undefined)
    }
  }

  /** The attribute timeout for a stat. */
  attrTimeout (st: Float64Array): number {
    return (st[STAT_MODE] & S_IFMT) === S_IFDIR ? this.cache.dirAttr : this.cache.fileAttr
  }

  dir (node: number): Inode {
    const i = this.inodes.get(node)
    if ((i.type & S_IFMT) !== S_IFDIR) throw new FsError('ENOTDIR')
    return i
  }
}

export const EMPTY = Buffer.alloc(0)
