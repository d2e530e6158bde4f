import { loadAddon } from '../native'

// The FUSE binding (native-deps/fuse/session.c): a libfuse 3 low-level session whose
// requests arrive on the JS thread. Handlers receive the request id first and answer it
// once with one of the reply functions, now or later. Node ids are ours (1 is the root);
// names, symlink targets and xattr names are Buffers, byte for byte as the kernel sent them.

/** The handlers a session calls (with the session object as `this`). */
export interface RequestHandlers {
  lookup (id: number, parent: number, name: Buffer): void
  /** No reply: the kernel dropped `n` lookups of a node. */
  forget (id: undefined, node: number, n: number): void
  getattr (id: number, node: number, fh: number): void
  setattr (id: number, node: number, toSet: number, fh: number, mode: number, uid: number, gid: number, size: number,
    atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void
  readlink (id: number, node: number): void
  mknod (id: number, parent: number, name: Buffer, mode: number, rdev: number, uid: number, gid: number): void
  mkdir (id: number, parent: number, name: Buffer, mode: number, uid: number, gid: number): void
  unlink (id: number, parent: number, name: Buffer): void
  rmdir (id: number, parent: number, name: Buffer): void
  symlink (id: number, target: Buffer, parent: number, name: Buffer, uid: number, gid: number): void
  rename (id: number, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): void
  link (id: number, node: number, newParent: number, newName: Buffer): void
  open (id: number, node: number, flags: number): void
  read (id: number, node: number, fh: number, size: number, offset: number): void
  /** `borrowed`: `data` is a view of the session's receive buffer, valid only until the handler returns (writes over 64 KiB). */
  write (id: number, node: number, fh: number, data: Buffer, offset: number, borrowed: boolean): void
  release (id: number, node: number, fh: number): void
  fsync (id: number, node: number, fh: number, datasync: number): void
  opendir (id: number, node: number): void
  readdir (id: number, node: number, fh: number, size: number, offset: number): void
  releasedir (id: number, node: number, fh: number): void
  fsyncdir (id: number, node: number, fh: number, datasync: number): void
  statfs (id: number, node: number): void
  setxattr (id: number, node: number, name: Buffer, value: Buffer, flags: number): void
  getxattr (id: number, node: number, name: Buffer, size: number): void
  listxattr (id: number, node: number, size: number): void
  removexattr (id: number, node: number, name: Buffer): void
  create (id: number, parent: number, name: Buffer, mode: number, flags: number, uid: number, gid: number): void
  /** Only without default_permissions: access(2) and chdir by the mount's own user. */
  access (id: number, node: number, mask: number): void
  /** No reply: the connection ended (unmounted from outside). */
  exited (id: undefined): void
}

/** Each reply returns false when the id was unknown (already answered, or the session ended). */
export interface FuseSessionAddon {
  mount (handlers: RequestHandlers, mountPoint: Buffer, options: string, maxReadahead: number): void
  unmount (handlers: RequestHandlers): void
  end (handlers: RequestHandlers): void
  /**
   * Asks the kernel, from a pool thread, to drop cached entries (each: u64 LE parent node,
   * u8 name length, name); `done` gets how many it dropped. False if it could not start;
   * throws once the session has ended.
   */
  invalEntries (handlers: RequestHandlers, entries: Buffer, done: (dropped: number) => void): boolean
  replyErr (id: number, errno: number): boolean
  replyEntry (id: number, node: number, attrs: Float64Array, attrTimeout: number, entryTimeout: number): boolean
  replyCreate (id: number, node: number, attrs: Float64Array, attrTimeout: number, entryTimeout: number, fh: number, keepCache: boolean, directIo: boolean): boolean
  replyAttr (id: number, attrs: Float64Array, attrTimeout: number): boolean
  replyOpen (id: number, fh: number, keepCache: boolean, directIo: boolean): boolean
  replyBuf (id: number, data: Buffer, length: number): boolean
  replyReadlink (id: number, target: Buffer, length: number): boolean
  replyWrite (id: number, count: number): boolean
  replyXattr (id: number, size: number): boolean
  /** [bsize, frsize, blocks, bfree, bavail, files, ffree, namemax] */
  replyStatfs (id: number, counts: Float64Array): boolean
  /** A page of `listing` (readdirFd's encoding) from byte `offset`, at most `size` bytes of dirents. */
  replyDir (id: number, listing: Buffer, offset: number, size: number): boolean
}

export const fuse = loadAddon<FuseSessionAddon>('fuse_session')

export const ROOT_NODE = 1

// setattr's toSet bits (fuse_lowlevel.h)
export const SET_MODE = 1 << 0
export const SET_UID = 1 << 1
export const SET_GID = 1 << 2
export const SET_SIZE = 1 << 3
export const SET_ATIME = 1 << 4
export const SET_MTIME = 1 << 5
export const SET_ATIME_NOW = 1 << 7
export const SET_MTIME_NOW = 1 << 8
