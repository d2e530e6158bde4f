// A no-crypto passthrough on the same FUSE binding and mount settings as sealfs
// (build/fuse-native: libfuse 3, nullpath_ok, use_ino, attr_timeout=1, kernel_cache, default_permissions,
// 1 MiB writes and readahead, non-user xattr names answered in the binding). The bench compares sealfs with it to separate what encryption costs
// from what the binding costs.
//   node dist/bench/passthrough.js BACKING MOUNTPOINT   (foreground; SIGTERM unmounts)
import fs from 'fs'
import path from 'path'
import { projectRoot } from '../src/native'
import { widenReadahead } from '../src/filesystem/readahead'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const Fuse = require(path.join(projectRoot, 'build', 'fuse-native'))

const [backing, mnt] = process.argv.slice(2)
if (backing === undefined || mnt === undefined) {
  process.stderr.write('usage: passthrough BACKING MOUNTPOINT\n')
  process.exit(2)
}

type Cb = (err: number, ...rest: unknown[]) => void
const errno = (e: NodeJS.ErrnoException | null): number => e === null ? 0 : -(e.errno !== undefined ? Math.abs(e.errno) : 5)
const b = (p: string): string => path.join(backing, p)
const done = (cb: Cb) => (e: NodeJS.ErrnoException | null) => cb(errno(e))
const dirs = new Map<number, string>()
let nextDir = 1

const ops = {
  getattr: (p: string, cb: Cb) => fs.lstat(b(p), { bigint: true }, (e, st) => e ? cb(errno(e)) : cb(0, attr(st))),
  fgetattr: (_p: string, fd: number, cb: Cb) => fs.fstat(fd, { bigint: true }, (e, st) => e ? cb(errno(e)) : cb(0, attr(st))),
  opendir: (p: string, _flags: number, cb: Cb) => { const h = nextDir++; dirs.set(h, p); cb(0, h) },
  readdir: (_p: string, h: number, cb: Cb) => fs.readdir(b(dirs.get(h) ?? '/'), (e, names) => e ? cb(errno(e)) : cb(0, ['.', '..', ...names])),
  releasedir: (_p: string, h: number, cb: Cb) => { dirs.delete(h); cb(0) },
  statfs: (_p: string, cb: Cb) => fs.statfs(backing, (e, s) => e ? cb(errno(e)) : cb(0, {
    bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255
  })),
  // O_DIRECT is the caller's wish for the FUSE file; on the backing file it would need aligned buffers.
  create: (p: string, mode: number, flags: number, cb: Cb) => fs.open(b(p), (flags & ~fs.constants.O_DIRECT) | fs.constants.O_CREAT, mode, (e, fd) => e ? cb(errno(e)) : cb(0, fd)),
  open: (p: string, flags: number, cb: Cb) => fs.open(b(p), flags & ~fs.constants.O_DIRECT, (e, fd) => e ? cb(errno(e)) : cb(0, fd)),
  read: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) =>
    fs.read(fd, buf, 0, len, pos, (e, n) => cb(e ? errno(e) : n)),
  write: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) =>
    fs.write(fd, buf, 0, len, pos, (e, n) => cb(e ? errno(e) : n)),
  release: (_p: string, fd: number, cb: Cb) => fs.close(fd, done(cb)),
  flush: (_p: string, _fd: number, cb: Cb) => cb(0),
  fsync: (_p: string, datasync: number, fd: number, cb: Cb) => (datasync !== 0 ? fs.fdatasync : fs.fsync)(fd, done(cb)),
  truncate: (p: string, size: number, cb: Cb) => fs.truncate(b(p), size, done(cb)),
  ftruncate: (_p: string, fd: number, size: number, cb: Cb) => fs.ftruncate(fd, size, done(cb)),
  unlink: (p: string, cb: Cb) => fs.unlink(b(p), done(cb)),
  mkdir: (p: string, mode: number, cb: Cb) => fs.mkdir(b(p), mode, done(cb)),
  rmdir: (p: string, cb: Cb) => fs.rmdir(b(p), done(cb)),
  rename: (from: string, to: string, _flags: number, cb: Cb) => fs.rename(b(from), b(to), done(cb)),
  link: (from: string, to: string, cb: Cb) => fs.link(b(from), b(to), done(cb)),
  symlink: (target: string, p: string, cb: Cb) => fs.symlink(target, b(p), done(cb)),
  readlink: (p: string, cb: Cb) => fs.readlink(b(p), (e, t) => e ? cb(errno(e)) : cb(0, t)),
  chmod: (p: string, mode: number, fd: number, cb: Cb) => fd > 0 ? fs.fchmod(fd, mode, done(cb)) : fs.chmod(b(p), mode, done(cb)),
  chown: (p: string, uid: number, gid: number, fd: number, cb: Cb) => fd > 0 ? fs.fchown(fd, uid, gid, done(cb)) : fs.lchown(b(p), uid, gid, done(cb)),
  utimens: (p: string, atime: { sec: number, nsec: number }, mtime: { sec: number, nsec: number }, _fd: number, cb: Cb) =>
    fs.lutimes(b(p), atime.sec + atime.nsec / 1e9, mtime.sec + mtime.nsec / 1e9, done(cb))
}

function attr (st: fs.BigIntStats): object {
  return {
    mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: Number(st.size), dev: Number(st.dev), nlink: Number(st.nlink),
    ino: Number(st.ino), rdev: Number(st.rdev), blksize: Number(st.blksize), blocks: Number(st.blocks),
    atime: st.atimeNs, mtime: st.mtimeNs, ctime: st.ctimeNs
  }
}

process.umask(0)
const fuse = new Fuse(mnt, ops, { timeout: false, fsname: 'passthrough', subtype: 'passthrough', defaultPermissions: true, extraOptions: ['attr_timeout=1', 'kernel_cache'], maxWrite: 1024 * 1024, userXattrsOnly: true })
fuse.mount((err: Error | null) => {
  if (err !== null) {
    process.stderr.write(`passthrough: cannot mount: ${err.message}\n`)
    process.exit(9)
  }
  widenReadahead(path.resolve(mnt), 1024)
  process.stdout.write('ready\n')
})
const stop = (): void => fuse.unmount(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
