import { loadAddon } from '../native'

// The backing store through descriptors (native-deps/backing). Every name is one path
// component (a Buffer of 1..255 bytes, no '/' or NUL, not '.' or '..') relative to a
// directory descriptor, and no symlink is followed in any component: the cipher dir is
// hostile input. A name out of those bounds is refused (-EINVAL, -ENAMETOOLONG) without a
// syscall; so is a descriptor that is not a non-negative int32 (-EBADF) and any other
// number out of its range (-EINVAL). An argument of the wrong JS type throws a TypeError.
// A `mode` is at most 0o177777; only its permission bits (0o7777) apply, except in mknodAt.
//
// Every function runs synchronously and returns its result (>= 0, or -errno); given a
// trailing callback it runs as one job on the libuv pool instead and calls cb(result), or
// cb(result, buffer) for readdirFd and readSmallFileAt. A job reads and writes the Buffers
// and Float64Arrays passed to it on a pool thread: leave them alone until its callback.

/** The result of a job that produces no data: >= 0, or -errno. */
export type Done = (result: number) => void
/** The result of a job that produces data: its length and the data, or -errno and undefined. */
export type DoneWithData = (result: number, data: Buffer | undefined) => void

export interface BackingAddon {
  /** fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) into `out` (STAT_LENGTH); an empty name: dirfd itself (AT_EMPTY_PATH; may be O_PATH). */
  statAt (dirfd: number, name: Buffer, out: Float64Array): number
  statAt (dirfd: number, name: Buffer, out: Float64Array, cb: Done): void
  /** A new O_PATH|O_NOFOLLOW descriptor of the entry, of any type (a symlink, FIFO or device is never opened); fstat of that descriptor into `out`. */
  lookupAt (dirfd: number, name: Buffer, out: Float64Array): number
  lookupAt (dirfd: number, name: Buffer, out: Float64Array, cb: Done): void
  /**
   * A descriptor for I/O (O_NOFOLLOW|O_CLOEXEC|O_NOCTTY added; opened O_NONBLOCK, which stays
   * only if `flags` has it). Not of `type` (TYPE_ANY: neither regular nor a directory): -EIO.
   * With O_CREAT, `mode` applies (O_EXCL is the caller's to give).
   */
  openAt (dirfd: number, name: Buffer, flags: number, mode: number, type: number): number
  openAt (dirfd: number, name: Buffer, flags: number, mode: number, type: number, cb: Done): void
  /**
   * A descriptor for I/O of the inode the O_PATH descriptor names (through /proc/self/fd,
   * checked to be the same st_dev/st_ino): -EIO if not of `type` (a symlink never is). A
   * directory is opened O_RDONLY|O_DIRECTORY whatever `flags` say; O_NOFOLLOW is ignored.
   */
  reopen (pathfd: number, flags: number, type: number): number
  reopen (pathfd: number, flags: number, type: number, cb: Done): void
  mkdirAt (dirfd: number, name: Buffer, mode: number): number
  mkdirAt (dirfd: number, name: Buffer, mode: number, cb: Done): void
  /** `flags`: 0 or AT_REMOVEDIR. */
  unlinkAt (dirfd: number, name: Buffer, flags: number): number
  unlinkAt (dirfd: number, name: Buffer, flags: number, cb: Done): void
  /** renameat2; `flags`: 0, RENAME_NOREPLACE or RENAME_EXCHANGE. */
  renameAt (olddirfd: number, oldname: Buffer, newdirfd: number, newname: Buffer, flags: number): number
  renameAt (olddirfd: number, oldname: Buffer, newdirfd: number, newname: Buffer, flags: number, cb: Done): void
  /** A symlink `name` to `target` (1..SYMLINK_TARGET_MAX bytes, no NUL). */
  symlinkAt (target: Buffer, dirfd: number, name: Buffer): number
  symlinkAt (target: Buffer, dirfd: number, name: Buffer, cb: Done): void
  /** `mode`: type and permission bits; `dev`: as STAT_RDEV reports it. */
  mknodAt (dirfd: number, name: Buffer, mode: number, dev: number): number
  mknodAt (dirfd: number, name: Buffer, mode: number, dev: number, cb: Done): void
  /** A new name for the entry the O_PATH descriptor names (a symlink stays a symlink). */
  linkFd (pathfd: number, newdirfd: number, newname: Buffer): number
  linkFd (pathfd: number, newdirfd: number, newname: Buffer, cb: Done): void
  /** The target's length in `out`; -ENAMETOOLONG if it fills `out` (give READLINK_BUFFER bytes). An empty name: dirfd is an O_PATH descriptor of the symlink. */
  readlinkAt (dirfd: number, name: Buffer, out: Buffer): number
  readlinkAt (dirfd: number, name: Buffer, out: Buffer, cb: Done): void
  /** chmod of the entry the O_PATH descriptor names; a symlink: -EOPNOTSUPP. */
  chmodFd (pathfd: number, mode: number): number
  chmodFd (pathfd: number, mode: number, cb: Done): void
  /** access(2) by the daemon's effective IDs; mode: R_OK|W_OK|X_OK bits (0: exists). */
  accessFd (pathfd: number, mode: number): number
  accessFd (pathfd: number, mode: number, cb: Done): void
  /** chown of the entry itself (never a symlink's target); -1 (or 0xffffffff) leaves one unchanged. */
  chownFd (pathfd: number, uid: number, gid: number): number
  chownFd (pathfd: number, uid: number, gid: number, cb: Done): void
  /** Times of the entry itself (a symlink's own, never its target's). Seconds integral, may be negative; nanoseconds < 1e9, UTIME_NOW or UTIME_OMIT. */
  utimensFd (pathfd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): number
  utimensFd (pathfd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number, cb: Done): void
  /**
   * The xattr calls on an O_PATH descriptor. `name`: 1..255 bytes, no NUL (longer: -ERANGE).
   * get and list return the size; an empty `out` asks for it, a short one is -ERANGE. A
   * symlink has none: get and remove -ENODATA, list 0, set -EPERM.
   */
  getxattrFd (pathfd: number, name: Buffer, out: Buffer): number
  getxattrFd (pathfd: number, name: Buffer, out: Buffer, cb: Done): void
  /** `flags`: 0, XATTR_CREATE or XATTR_REPLACE. */
  setxattrFd (pathfd: number, name: Buffer, value: Buffer, flags: number): number
  setxattrFd (pathfd: number, name: Buffer, value: Buffer, flags: number, cb: Done): void
  /** NUL-terminated names into `out`. */
  listxattrFd (pathfd: number, out: Buffer): number
  listxattrFd (pathfd: number, out: Buffer, cb: Done): void
  removexattrFd (pathfd: number, name: Buffer): number
  removexattrFd (pathfd: number, name: Buffer, cb: Done): void
  /**
   * The directory's entries ('.' and '..' left out; dirfd may be O_PATH), each as d_ino
   * (8 bytes, little-endian), d_type (DT_*), the name's length (1 byte) and the name's bytes
   * (DIRENT_HEADER bytes before the name). A name over 255 bytes is left out.
   */
  readdirFd (dirfd: number): Buffer | number
  readdirFd (dirfd: number, cb: DoneWithData): void
  /** The whole of a regular file (else -EIO) of at most `max` bytes (else -EFBIG); a FIFO never blocks. */
  readSmallFileAt (dirfd: number, name: Buffer, max: number): Buffer | number
  readSmallFileAt (dirfd: number, name: Buffer, max: number, cb: DoneWithData): void
  /** A new file (O_EXCL) holding `data`, fsynced if `sync`; on a failure after the create the name is removed again. */
  writeFileAt (dirfd: number, name: Buffer, data: Buffer, mode: number, sync: boolean): number
  writeFileAt (dirfd: number, name: Buffer, data: Buffer, mode: number, sync: boolean, cb: Done): void
  /** fsync of a regular file or directory by name (else -EIO); an empty name: the directory dirfd itself. */
  fsyncAt (dirfd: number, name: Buffer): number
  fsyncAt (dirfd: number, name: Buffer, cb: Done): void
  /** fsync (fdatasync if `datasync`) of a descriptor opened for I/O. */
  fsyncFd (fd: number, datasync: boolean): number
  fsyncFd (fd: number, datasync: boolean, cb: Done): void
  /** The descriptor is gone even when this reports an error: never retry. */
  closeFd (fd: number): number
  closeFd (fd: number, cb: Done): void
  /** A new file (O_CREAT|O_EXCL added to `flags`) with `header` written at 0; on a failed write it is closed and removed again. */
  createWithHeaderAt (dirfd: number, name: Buffer, flags: number, mode: number, header: Buffer): number
  createWithHeaderAt (dirfd: number, name: Buffer, flags: number, mode: number, header: Buffer, cb: Done): void
  /** reopen(pathfd, flags, TYPE_REG), then up to header.length bytes at 0 read into `header`; out[HEADER_OUT_BYTES] = bytes read, out[HEADER_OUT_SIZE] = the file's size. `prefetch`: the file's first 128 KiB are asked for with the header (POSIX_FADV_WILLNEED), for an open that will read. */
  openHeaderFd (pathfd: number, flags: number, header: Buffer, out: Float64Array, prefetch: boolean): number
  openHeaderFd (pathfd: number, flags: number, header: Buffer, out: Float64Array, prefetch: boolean, cb: Done): void
  /** unlinkat(dirfd, name, 0); a regular file's last link longer than `header` has its first header.length bytes read into `header` first. Bytes read (0: none), or -errno of the unlink. */
  unlinkLastAt (dirfd: number, name: Buffer, header: Buffer): number
  unlinkLastAt (dirfd: number, name: Buffer, header: Buffer, cb: Done): void
  /** fstatfs (an O_PATH descriptor will do) into `out` (STATFS_LENGTH). */
  statfsFd (fd: number, out: Float64Array): number
  statfsFd (fd: number, out: Float64Array, cb: Done): void
  /** open(path, flags|O_CLOEXEC|O_NOCTTY) of a whole path (1..PATH_BYTES_MAX bytes): only for the cipher dir's root and the mount point. */
  openPath (path: Buffer, flags: number): number
  openPath (path: Buffer, flags: number, cb: Done): void
}

/** The STAT layout: a Float64Array(STAT_LENGTH) filled by statAt and lookupAt. */
export const STAT_INO_HI = 0
/** st_ino & 0xffffffff (st_ino = STAT_INO_HI * 2^32 + STAT_INO_LO, exact as a bigint). */
export const STAT_INO_LO = 1
export const STAT_MODE = 2
export const STAT_NLINK = 3
export const STAT_UID = 4
export const STAT_GID = 5
export const STAT_RDEV = 6
export const STAT_SIZE = 7
export const STAT_BLOCKS = 8
/** Seconds, signed (before 1970: negative). */
export const STAT_ATIME_SEC = 9
export const STAT_ATIME_NSEC = 10
export const STAT_MTIME_SEC = 11
export const STAT_MTIME_NSEC = 12
export const STAT_CTIME_SEC = 13
export const STAT_CTIME_NSEC = 14
export const STAT_DEV = 15
export const STAT_BLKSIZE = 16
export const STAT_LENGTH = 17

/** The statfsFd layout: a Float64Array(STATFS_LENGTH). */
export const STATFS_BSIZE = 0
export const STATFS_FRSIZE = 1
export const STATFS_BLOCKS = 2
export const STATFS_BFREE = 3
export const STATFS_BAVAIL = 4
export const STATFS_FILES = 5
export const STATFS_FFREE = 6
export const STATFS_NAMELEN = 7
/** The filesystem's magic number (unsigned). */
export const STATFS_TYPE = 8
/** ST_* mount flags. */
export const STATFS_FLAGS = 9
export const STATFS_LENGTH = 10

/** openHeaderFd's `out`: a Float64Array(HEADER_OUT_LENGTH). */
export const HEADER_OUT_BYTES = 0
export const HEADER_OUT_SIZE = 1
export const HEADER_OUT_LENGTH = 2

/** Expected types (openAt, reopen): regular or directory, regular only, directory only. */
export const TYPE_ANY = 0
export const TYPE_REG = 0o100000
export const TYPE_DIR = 0o040000

/** readdirFd: bytes before each name (d_ino 8, d_type 1, length 1), and the d_type values. */
export const DIRENT_HEADER = 10
export const DT_UNKNOWN = 0
export const DT_FIFO = 1
export const DT_CHR = 2
export const DT_DIR = 4
export const DT_BLK = 6
export const DT_REG = 8
export const DT_LNK = 10
export const DT_SOCK = 12

/** Open flags node:fs does not export (the same on every Linux architecture). */
export const O_PATH = 0o10000000
export const O_CLOEXEC = 0o2000000

export const AT_REMOVEDIR = 0x200
export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
export const XATTR_CREATE = 1
export const XATTR_REPLACE = 2
export const UTIME_NOW = 0x3fffffff
export const UTIME_OMIT = 0x3ffffffe

/** Longest name (one path component) and xattr name, in bytes. */
export const NAME_MAX = 255
/** Longest symlink target and openPath path, in bytes. */
export const PATH_BYTES_MAX = 4095
export const SYMLINK_TARGET_MAX = PATH_BYTES_MAX
/** A readlinkAt buffer that holds any target (a result of this length means too long). */
export const READLINK_BUFFER = 4096

export const backing = loadAddon<BackingAddon>('backing')

/** A directory's entries, read on this thread (tools that walk an unmounted volume): readdirFd's encoding taken apart, or -errno. */
export function listDirSync (dirfd: number): Array<{ name: Buffer, type: number }> | number {
  const raw = backing.readdirFd(dirfd)
  if (typeof raw === 'number') return raw
  const out: Array<{ name: Buffer, type: number }> = []
  for (let at = 0; at + DIRENT_HEADER <= raw.length;) {
    const len = raw[at + DIRENT_HEADER - 1]
    out.push({ type: raw[at + 8], name: Buffer.from(raw.subarray(at + DIRENT_HEADER, at + DIRENT_HEADER + len)) })
    at += DIRENT_HEADER + len
  }
  return out
}
