import { LINK_TARGET_MAX } from '../crypto/link-cipher'
import { DIR_ID_FILE, newDirId } from '../volume/dir-id'
import { decodeHeader, HEADER_BYTES } from '../volume/file-header'
import { STAT_LENGTH, STAT_MODE } from './backing-addon'
import { BackingName, LONG_PREFIX, LONG_SIDECAR_SUFFIX, TEMP_PREFIX, tempName } from './entry-names'
import { Caller, EMPTY, Filesystem } from './filesystem'
import { FsError } from './fs-error'
import { Inode, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from './inodes'

const AT_REMOVEDIR = 0x200
const RENAME_NOREPLACE = 1
const RENAME_EXCHANGE = 2
const DIR_ID_NAME = Buffer.from(DIR_ID_FILE)
/** Backing attribute names: this, then the encrypted name. */
export const XATTR_PREFIX = 'user.sealfs.'
const XATTR_NAME_MAX = 255
const XATTR_SIZE_MAX = 65536
/** Room for the largest value we store: 64 KiB of ciphertext. */
export const XATTR_BUF = XATTR_SIZE_MAX
const LINK_BUF = 4096

export interface Entry { inode: Inode, st: Float64Array }

/**
 * Operations on names and nodes: lookup, the entries a directory holds (mkdir, mknod,
 * symlink, link, unlink, rmdir, rename), and a node's attributes, link target and xattrs.
 * Every one works from the descriptors of the nodes involved.
 */
export class Entries {
  constructor (private readonly fs: Filesystem) {}

  get #b () { return this.fs.backing }

  async lookup (parent: number, name: Buffer): Promise<Entry> {
    const dir = this.fs.dir(parent)
    const bn = await this.fs.names.backingName(dir, name)
    // A name the kernel knew is most likely still that node: one fstatat tells (stat, ls -l
    // after the 1 s entry timeout). A name it did not know is opened at once (a cold walk).
    return this.fs.inodes.knownAs(parent, name) ? this.fs.lookup(dir, bn.name) : this.fs.lookupNew(dir, bn.name)
  }

  async getattr (node: number): Promise<Float64Array> {
    return this.fs.statNode(this.fs.inodes.get(node))
  }

  /** A name for a new entry in `dir`: its sidecar (for a long name) is written first. */
  async #prepare (dir: Inode, name: Buffer): Promise<BackingName> {
    const bn = await this.fs.names.backingName(dir, name)
    await this.fs.names.writeSidecar(dir, bn)
    return bn
  }

  /** After a failed create: the sidecar goes unless an entry of that name exists (then it is that entry's). */
  async #dropUnusedSidecar (dir: Inode, bn: BackingName): Promise<void> {
    if (bn.sidecar === null) return
    const exists = await this.#b.statAt(dir.fd, bn.name, new Float64Array(STAT_LENGTH)).then(() => true, () => false)
    if (!exists) await this.fs.names.removeSidecar(dir, bn)
  }

  /**
   * Makes a new entry in `dir` with `make` and gives it to its creator. If a step fails,
   * nothing is left behind: not the entry (chown may be refused, as over SFTP) and not a
   * long name's sidecar, unless an entry of that name already existed (the sidecar is its).
   */
  async #makeEntry (parent: number, name: Buffer, caller: Caller, make: (dir: Inode, bn: BackingName) => Promise<unknown>): Promise<Entry> {
    const dir = this.fs.dir(parent)
    const bn = await this.#prepare(dir, name)
    try {
      await make(dir, bn)
    } catch (err) {
      await this.#dropUnusedSidecar(dir, bn)
      throw err
    }
    let made: Entry | null = null
    try {
      made = await this.fs.lookupNew(dir, bn.name)
      await this.fs.own(made.inode.fd, caller, dir)
      return { inode: made.inode, st: await this.fs.statNode(made.inode) }
    } catch (err) {
      if (made !== null) this.fs.inodes.forget(made.inode.node, 1)  // the kernel will never hear of it
      await this.#b.unlinkAt(dir.fd, bn.name, 0).catch(() => undefined)
      await this.fs.names.removeSidecar(dir, bn)
      // SFTP cannot chown a symlink itself: it follows it and says ENOENT, which would tell the
      // caller that something in its path is missing. The truth is that the backing refused.
      if ((err as FsError).code === 'ENOENT') throw new FsError('EPERM')
      throw err
    }
  }

  async symlink (target: Buffer, parent: number, name: Buffer, caller: Caller): Promise<Entry> {
    if (target.length > LINK_TARGET_MAX) throw new FsError('ENAMETOOLONG')
    const link = Buffer.from(this.fs.volume.links.encrypt(target), 'latin1')
    return this.#makeEntry(parent, name, caller, (dir, bn) => this.#b.symlinkAt(link, dir.fd, bn.name))
  }

  /** FIFOs, sockets and device nodes (regular files come through create). */
  async mknod (parent: number, name: Buffer, mode: number, rdev: number, caller: Caller): Promise<Entry> {
    return this.#makeEntry(parent, name, caller, (dir, bn) => this.#b.mknodAt(dir.fd, bn.name, mode, rdev))
  }

  async mkdir (parent: number, name: Buffer, mode: number, caller: Caller): Promise<Entry> {
    const dir = this.fs.dir(parent)
    const bn = await this.fs.names.backingName(dir, name)
    // Build the directory with its ID under a temporary name, then rename it into place,
    // so that a crash never leaves a directory whose entries cannot be named.
    const tmp = tempName()
    await this.#b.mkdirAt(dir.fd, tmp, 0o700)
    let fd = -1
    const id = newDirId()
    try {
      fd = await this.#b.lookupAt(dir.fd, tmp, new Float64Array(STAT_LENGTH))
      await this.#b.writeFileAt(fd, DIR_ID_NAME, id, 0o400, true)
      await this.#b.chmodFd(fd, mode & 0o7777)
      if (this.fs.root && !(caller.uid === 0 && caller.gid === 0)) {
        const idFd = await this.#b.lookupAt(fd, DIR_ID_NAME, new Float64Array(STAT_LENGTH))
        try { await this.fs.own(idFd, caller, dir) } finally { await this.#b.closeFd(idFd).catch(() => undefined) }
        await this.fs.own(fd, caller, dir)
      }
      await this.fs.names.writeSidecar(dir, bn)
      await this.#b.renameAt(dir.fd, tmp, dir.fd, bn.name, 0).catch(async (err: FsError) => {
        await this.#dropUnusedSidecar(dir, bn)
        if (err.code === 'ENOTEMPTY' || err.code === 'EISDIR' || err.code === 'ENOTDIR' || err.code === 'EEXIST') throw new FsError('EEXIST')
        throw err
      })
      const st = new Float64Array(STAT_LENGTH)
      await this.#b.statAt(fd, EMPTY, st)
      return { inode: this.fs.inodes.add(fd, st, id), st: this.fs.plainAttrs(st) }
    } catch (err) {
      if (fd >= 0) {
        await this.#b.unlinkAt(fd, DIR_ID_NAME, 0).catch(() => undefined)
        await this.#b.closeFd(fd).catch(() => undefined)
      }
      await this.#b.unlinkAt(dir.fd, tmp, AT_REMOVEDIR).catch(() => undefined)
      throw err
    }
  }

  async unlink (parent: number, name: Buffer): Promise<void> {
    const dir = this.fs.dir(parent)
    const bn = await this.fs.names.backingName(dir, name)
    if (await this.fs.moveAside(dir, bn.name) !== null) {
      await this.fs.names.removeSidecar(dir, bn)
      return
    }
    const header = Buffer.alloc(HEADER_BYTES)
    const n = await this.#b.unlinkLastAt(dir.fd, bn.name, header)
    await this.fs.names.removeSidecar(dir, bn)
    // The file's DEK goes with its last link, unless it is still open (then at its last release).
    if (n === HEADER_BYTES) this.fs.forgetFile(decodeHeader(header)?.fileId ?? null)
  }

  async rmdir (parent: number, name: Buffer): Promise<void> {
    const dir = this.fs.dir(parent)
    const bn = await this.fs.names.backingName(dir, name)
    const st = new Float64Array(STAT_LENGTH)
    const fd = await this.#b.lookupAt(dir.fd, bn.name, st)
    try {
      if ((st[STAT_MODE] & S_IFMT) !== S_IFDIR) throw new FsError('ENOTDIR')
      await this.#emptyBackingDir(fd)
      const id = await this.#b.readSmallFileAt(fd, DIR_ID_NAME, 64).catch(() => null)
      await this.#b.unlinkAt(fd, DIR_ID_NAME, 0).catch(() => undefined)
      try {
        await this.#b.unlinkAt(dir.fd, bn.name, AT_REMOVEDIR)
      } catch (err) {
        if (id !== null) await this.#b.writeFileAt(fd, DIR_ID_NAME, id, 0o400, true).catch(() => undefined)
        throw err
      }
    } finally {
      await this.#b.closeFd(fd).catch(() => undefined)
    }
    await this.fs.names.removeSidecar(dir, bn)
  }

  /**
   * Throws ENOTEMPTY unless a backing directory holds nothing but its ID file and what a
   * crash can leave behind, which then goes: temporary files of sidecars being written, and
   * sidecars whose entry is gone. Said here, not left to the backing: over SFTP (sshfs)
   * removing or renaming onto a non-empty directory fails with EPERM, as SFTP has no ENOTEMPTY.
   */
  async #emptyBackingDir (fd: number): Promise<void> {
    const names = new Set((await this.#b.listDir(fd)).map(e => e.name.toString('latin1')))
    names.delete(DIR_ID_FILE)
    const leftovers = [...names].filter(n => n.startsWith(TEMP_PREFIX) ||
      (n.startsWith(LONG_PREFIX) && n.endsWith(LONG_SIDECAR_SUFFIX) && !names.has(n.slice(0, -LONG_SIDECAR_SUFFIX.length))))
    if (leftovers.length !== names.size) throw new FsError('ENOTEMPTY')
    // A temporary directory of a crashed mkdir has its ID file in it; anything else there is not ours to delete.
    for (const n of leftovers) {
      const name = Buffer.from(n, 'latin1')
      await this.#b.unlinkAt(fd, name, 0).catch(async (err: FsError) => {
        if (err.code !== 'EISDIR' && err.code !== 'EPERM') throw err
        const tmp = await this.#b.lookupAt(fd, name, new Float64Array(STAT_LENGTH))
        try { await this.#b.unlinkAt(tmp, DIR_ID_NAME, 0).catch(() => undefined) } finally { await this.#b.closeFd(tmp) }
        await this.#b.unlinkAt(fd, name, AT_REMOVEDIR)
      }).catch(() => { throw new FsError('ENOTEMPTY') })
    }
  }

  async rename (parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): Promise<void> {
    if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) !== 0 || flags === (RENAME_NOREPLACE | RENAME_EXCHANGE)) throw new FsError('EINVAL')
    const from = this.fs.dir(parent)
    const to = this.fs.dir(newParent)
    const src = await this.fs.names.backingName(from, name)
    const dst = await this.fs.names.backingName(to, newName)
    if ((flags & RENAME_EXCHANGE) !== 0) {
      // The two entries swap places; each name keeps its own encrypted name and sidecar.
      await this.#b.renameAt(from.fd, src.name, to.fd, dst.name, RENAME_EXCHANGE)
      return
    }
    const srcStat = new Float64Array(STAT_LENGTH)
    await this.#b.statAt(from.fd, src.name, srcStat)
    const dstStat = new Float64Array(STAT_LENGTH)
    const dstExists = await this.#b.statAt(to.fd, dst.name, dstStat).then(() => true, () => false)
    // The kernel holds both parent directories locked, so no other request through the mount
    // can create the target between this check and the rename.
    if (dstExists && (flags & RENAME_NOREPLACE) !== 0) throw new FsError('EEXIST')
    // A file replaced while open through us waits aside for its last close (network backings).
    const aside = dstExists && (dstStat[STAT_MODE] & S_IFMT) === S_IFREG ? await this.fs.moveAside(to, dst.name) : null
    const replaced = dstExists && aside === null ? await this.fs.lastLinkFileId(to, dst.name) : null
    await this.fs.names.writeSidecar(to, dst)
    try {
      if ((srcStat[STAT_MODE] & S_IFMT) === S_IFDIR && dstExists && (dstStat[STAT_MODE] & S_IFMT) === S_IFDIR) {
        await this.#renameDirOver(from, src, to, dst)
      } else {
        await this.#b.renameAt(from.fd, src.name, to.fd, dst.name, 0)
      }
    } catch (err) {
      if (aside !== null) await this.fs.moveBack(to, dst.name, aside).catch(() => undefined)
      throw err
    }
    if (src.sidecar !== null && !(from === to && src.sidecar.equals(dst.sidecar ?? EMPTY))) await this.fs.names.removeSidecar(from, src)
    this.fs.forgetFile(replaced)
  }

  /** rename(2) of a directory over an empty one: the target's own ID file must not make it look non-empty. */
  async #renameDirOver (from: Inode, src: BackingName, to: Inode, dst: BackingName): Promise<void> {
    const fd = await this.#b.lookupAt(to.fd, dst.name, new Float64Array(STAT_LENGTH))
    try {
      await this.#emptyBackingDir(fd)
      const id = await this.#b.readSmallFileAt(fd, DIR_ID_NAME, 64).catch(() => null)
      await this.#b.unlinkAt(fd, DIR_ID_NAME, 0).catch(() => undefined)
      try {
        await this.#b.renameAt(from.fd, src.name, to.fd, dst.name, 0)
      } catch (err) {
        if (id !== null) await this.#b.writeFileAt(fd, DIR_ID_NAME, id, 0o400, true).catch(() => undefined)
        throw err
      }
    } finally {
      await this.#b.closeFd(fd).catch(() => undefined)
    }
  }

  async link (node: number, newParent: number, newName: Buffer): Promise<Entry> {
    const inode = this.fs.inodes.get(node)
    if ((inode.type & S_IFMT) === S_IFDIR) throw new FsError('EPERM')
    const dir = this.fs.dir(newParent)
    const bn = await this.#prepare(dir, newName)
    try {
      await this.#b.linkFd(inode.fd, dir.fd, bn.name)
    } catch (err) {
      await this.#dropUnusedSidecar(dir, bn)
      throw err
    }
    return this.fs.lookupNew(dir, bn.name)
  }

  async readlink (node: number): Promise<Buffer> {
    const inode = this.fs.inodes.get(node)
    if ((inode.type & S_IFMT) !== S_IFLNK) throw new FsError('EINVAL')
    const buf = Buffer.alloc(LINK_BUF)
    const n = await this.#b.readlinkAt(inode.fd, EMPTY, buf)
    return this.fs.volume.links.decrypt(buf.toString('latin1', 0, n))
  }

  /** chown and chmod of a node (size and times are the caller's: setattr in requests.ts). */
  async chown (inode: Inode, uid: number, gid: number): Promise<void> {
    await this.#b.chownFd(inode.fd, uid, gid)
  }

  /**
   * access(2), asked only of a mount without allow_other, where every caller has the
   * daemon's user ID (FUSE refuses the others), so the backing entry's own check by the
   * daemon's IDs is the caller's: its mode and owner are the plaintext entry's.
   */
  async access (node: number, mask: number): Promise<void> {
    await this.#b.accessFd(this.fs.inodes.get(node).fd, mask & 7)
  }

  async chmod (inode: Inode, mode: number): Promise<void> {
    await this.#b.chmodFd(inode.fd, mode & 0o7777)
  }

  async utimens (inode: Inode, as: number, an: number, ms: number, mn: number): Promise<void> {
    await this.#b.utimensFd(inode.fd, as, an, ms, mn)
  }

  #xattrName (name: Buffer): { backing: Buffer, encrypted: string } {
    const encrypted = XATTR_PREFIX + this.fs.volume.xattrs.encryptName(name)
    if (encrypted.length > XATTR_NAME_MAX) throw new FsError('ERANGE')
    return { backing: Buffer.from(encrypted, 'latin1'), encrypted }
  }

  /** Only user.* names reach here (the binding answers the others). */
  async setxattr (node: number, name: Buffer, value: Buffer, flags: number): Promise<void> {
    const inode = this.fs.inodes.get(node)
    const x = this.#xattrName(name)
    const sealed = this.fs.volume.xattrs.encryptValue(x.encrypted, value)
    if (sealed.length > XATTR_SIZE_MAX) throw new FsError('E2BIG')
    await this.#b.setxattrFd(inode.fd, x.backing, sealed, flags)
  }

  async getxattr (node: number, name: Buffer): Promise<Buffer> {
    const inode = this.fs.inodes.get(node)
    const x = this.#xattrName(name)
    const buf = Buffer.alloc(XATTR_BUF)
    const n = await this.#b.getxattrFd(inode.fd, x.backing, buf)
    return this.fs.volume.xattrs.decryptValue(x.encrypted, buf.subarray(0, n))
  }

  /** The plaintext names, each NUL-terminated, as listxattr(2) gives them. */
  async listxattr (node: number): Promise<Buffer> {
    const inode = this.fs.inodes.get(node)
    const buf = Buffer.alloc(XATTR_BUF)
    const n = await this.#b.listxattrFd(inode.fd, buf)
    const names: Buffer[] = []
    for (const backing of buf.toString('latin1', 0, n).split('\0')) {
      if (!backing.startsWith(XATTR_PREFIX)) continue
      try {
        names.push(this.fs.volume.xattrs.decryptName(backing.slice(XATTR_PREFIX.length)), NUL)
      } catch { /* not ours or damaged: not listed */ }
    }
    return Buffer.concat(names)
  }

  async removexattr (node: number, name: Buffer): Promise<void> {
    const inode = this.fs.inodes.get(node)
    await this.#b.removexattrFd(inode.fd, this.#xattrName(name).backing)
  }

  /** [bsize, frsize, blocks, bfree, bavail, files, ffree, namemax] of the backing store. */
  async statfs (): Promise<Float64Array> {
    const s = new Float64Array(10)
    await this.#b.statfsFd(this.fs.inodes.root.fd, s)
    s[7] = 255  // long names are stored hashed: any name Linux allows fits
    return s
  }

  /** Whether a node is a regular file (the kernel opens only those through open/create). */
  static isRegular (inode: Inode): boolean {
    return (inode.type & S_IFMT) === S_IFREG
  }
}

const NUL = Buffer.alloc(1)
