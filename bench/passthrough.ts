// A no-crypto passthrough on the same FUSE binding, node table and backing calls as sealfs
// (native-deps/fuse, src/filesystem/inodes.ts and backing.ts; the same cache times, 1 MiB
// requests and readahead, non-user xattr names answered in the binding). The bench compares
// sealfs with it to separate what encryption and names cost from what the binding costs.
//   node dist/bench/passthrough.js BACKING MOUNTPOINT   (foreground; SIGTERM unmounts)
import path from 'path'
import { backing as addon, O_PATH, STAT_LENGTH } from '../src/filesystem/backing-addon'
import { Backing, isLocalFilesystem } from '../src/filesystem/backing'
import { requestBuffers } from '../src/filesystem/request-buffers'
import { fuse, RequestHandlers, SET_ATIME, SET_ATIME_NOW, SET_GID, SET_MODE, SET_MTIME, SET_MTIME_NOW, SET_SIZE, SET_UID } from '../src/filesystem/fuse-session'
import { Inode, InodeTable, S_IFREG } from '../src/filesystem/inodes'
import { widenReadahead } from '../src/filesystem/readahead'
import { toErrno } from '../src/filesystem/errno'
import fs from 'fs'

const [backingDir, mnt] = process.argv.slice(2)
if (backingDir === undefined || mnt === undefined) {
  process.stderr.write('usage: passthrough BACKING MOUNTPOINT\n')
  process.exit(2)
}

const O_DIRECTORY = 0o200000
const O_WRONLY = 1
const O_NOFOLLOW = 0o400000
const O_DIRECT = 0o40000
const AT_REMOVEDIR = 0x200
const EOPNOTSUPP = 95
const ENODATA = 61
const UTIME_NOW = (1 << 30) - 1
const UTIME_OMIT = (1 << 30) - 2
const EMPTY = Buffer.alloc(0)
const TIMEOUT = 1

const rootFd = addon.openPath(Buffer.from(backingDir), O_PATH | O_DIRECTORY)
const counts = new Float64Array(10)
const rootStat = new Float64Array(STAT_LENGTH)
addon.statfsFd(rootFd, counts)
addon.statAt(rootFd, EMPTY, rootStat)
const b = new Backing(isLocalFilesystem(counts[8]))
const inodes = new InodeTable(b, rootFd, rootStat)
const dirs = new Map<number, Buffer>()
let nextDir = 1

function run<T> (id: number, op: () => Promise<T>, reply: (v: T) => void): void {
  op().then(reply, err => fuse.replyErr(id, -toErrno(err)))
}

async function entry (dir: Inode, name: Buffer): Promise<{ node: number, st: Float64Array }> {
  const st = new Float64Array(STAT_LENGTH)
  const fd = await b.lookupAt(dir.fd, name, st)
  return { node: inodes.add(fd, st).node, st }
}

function replyEntry (id: number): (e: { node: number, st: Float64Array }) => void {
  return e => { if (!fuse.replyEntry(id, e.node, e.st, TIMEOUT, TIMEOUT)) inodes.forget(e.node, 1) }
}

async function stat (inode: Inode): Promise<Float64Array> {
  const st = new Float64Array(STAT_LENGTH)
  await b.statAt(inode.fd, EMPTY, st)
  return st
}

const ok = (id: number) => () => fuse.replyErr(id, 0)

const handlers: RequestHandlers = {
  lookup: (id, parent, name) => run(id, () => entry(inodes.get(parent), name), replyEntry(id)),
  forget: (_id, node, n) => inodes.forget(node, n),
  getattr: (id, node) => run(id, () => stat(inodes.get(node)), st => fuse.replyAttr(id, st, TIMEOUT)),
  setattr: (id, node, toSet, fh, mode, uid, gid, size, as, an, ms, mn) => run(id, async () => {
    const i = inodes.get(node)
    if ((toSet & (SET_UID | SET_GID)) !== 0) await b.chownFd(i.fd, (toSet & SET_UID) !== 0 ? uid : -1, (toSet & SET_GID) !== 0 ? gid : -1)
    if ((toSet & SET_MODE) !== 0) await b.chmodFd(i.fd, mode & 0o7777)
    if ((toSet & SET_SIZE) !== 0) {
      const fd = fh >= 0 ? fh : await b.reopen(i.fd, O_WRONLY, S_IFREG)
      try { fs.ftruncateSync(fd, size) } finally { if (fh < 0) await b.closeFd(fd) }
    }
    if ((toSet & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW)) !== 0) {
      await b.utimensFd(i.fd, (toSet & SET_ATIME) !== 0 ? as : 0, (toSet & SET_ATIME_NOW) !== 0 ? UTIME_NOW : (toSet & SET_ATIME) !== 0 ? an : UTIME_OMIT,
        (toSet & SET_MTIME) !== 0 ? ms : 0, (toSet & SET_MTIME_NOW) !== 0 ? UTIME_NOW : (toSet & SET_MTIME) !== 0 ? mn : UTIME_OMIT)
    }
    return stat(i)
  }, st => fuse.replyAttr(id, st, TIMEOUT)),
  access: (id, node, mask) => run(id, () => b.accessFd(inodes.get(node).fd, mask & 7), ok(id)),
  readlink: (id, node) => run(id, async () => {
    const buf = Buffer.alloc(4096)
    return buf.subarray(0, await b.readlinkAt(inodes.get(node).fd, EMPTY, buf))
  }, t => fuse.replyReadlink(id, t, t.length)),
  mknod: (id, parent, name, mode, rdev) => run(id, async () => {
    const dir = inodes.get(parent)
    await b.mknodAt(dir.fd, name, mode, rdev)
    return entry(dir, name)
  }, replyEntry(id)),
  mkdir: (id, parent, name, mode) => run(id, async () => {
    const dir = inodes.get(parent)
    await b.mkdirAt(dir.fd, name, mode)
    return entry(dir, name)
  }, replyEntry(id)),
  unlink: (id, parent, name) => run(id, () => b.unlinkAt(inodes.get(parent).fd, name, 0), ok(id)),
  rmdir: (id, parent, name) => run(id, () => b.unlinkAt(inodes.get(parent).fd, name, AT_REMOVEDIR), ok(id)),
  symlink: (id, target, parent, name) => run(id, async () => {
    const dir = inodes.get(parent)
    await b.symlinkAt(target, dir.fd, name)
    return entry(dir, name)
  }, replyEntry(id)),
  rename: (id, parent, name, newParent, newName, flags) =>
    run(id, () => b.renameAt(inodes.get(parent).fd, name, inodes.get(newParent).fd, newName, flags), ok(id)),
  link: (id, node, newParent, newName) => run(id, async () => {
    const dir = inodes.get(newParent)
    await b.linkFd(inodes.get(node).fd, dir.fd, newName)
    return entry(dir, newName)
  }, replyEntry(id)),
  // O_DIRECT is the caller's wish for the FUSE file; on the backing file it would need aligned buffers.
  open: (id, node, flags) => run(id, () => b.reopen(inodes.get(node).fd, flags & ~(O_NOFOLLOW | O_DIRECT), S_IFREG), fd => fuse.replyOpen(id, fd, true, false)),
  create: (id, parent, name, mode, flags) => run(id, async () => {
    const dir = inodes.get(parent)
    const fd = await b.openAt(dir.fd, name, (flags & ~(O_NOFOLLOW | O_DIRECT)) | 0o100, mode, S_IFREG)
    const st = new Float64Array(STAT_LENGTH)
    const node = inodes.add(await b.pathFdOf(fd, st), st).node
    return { node, st, fd }
  }, e => fuse.replyCreate(id, e.node, e.st, TIMEOUT, TIMEOUT, e.fd, true, false)),
  read: (id, _node, fh, size, offset) => {
    const buf = requestBuffers.take(size)
    fs.read(fh, buf, 0, size, offset, (err, n) => {
      if (err !== null) fuse.replyErr(id, -toErrno(err))
      else fuse.replyBuf(id, buf, n)
      requestBuffers.give(buf)
    })
  },
  write: (id, _node, fh, data, offset, borrowed) => {
    // A borrowed payload is valid only now: copied into a reused buffer, as sealfs does.
    const own = borrowed ? requestBuffers.take(data.length) : data
    if (borrowed) data.copy(own)
    fs.write(fh, own, 0, own.length, offset, (err, n) => {
      requestBuffers.give(own)
      if (err !== null) fuse.replyErr(id, -toErrno(err))
      else fuse.replyWrite(id, n)
    })
  },
  release: (id, _node, fh) => run(id, () => b.closeFd(fh), ok(id)),
  fsync: (id, _node, fh, datasync) => run(id, () => b.fsyncFd(fh, datasync !== 0), ok(id)),
  opendir: (id, node) => { inodes.get(node); const h = nextDir++; dirs.set(h, EMPTY); fuse.replyOpen(id, h, false, false) },
  readdir: (id, node, fh, size, offset) => run(id, async () => {
    if (offset === 0) {
      const dots = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0x2e, 1, 0, 0, 0, 0, 0, 0, 0, 4, 2, 0x2e, 0x2e])
      dirs.set(fh, Buffer.concat([dots, await b.readdirFd(inodes.get(node).fd)]))
    }
    return dirs.get(fh) ?? EMPTY
  }, listing => fuse.replyDir(id, listing, offset, size)),
  releasedir: (id, _node, fh) => { dirs.delete(fh); fuse.replyErr(id, 0) },
  fsyncdir: (id, node) => run(id, () => b.fsyncAt(inodes.get(node).fd, EMPTY), ok(id)),
  statfs: (id) => run(id, async () => { const s = new Float64Array(10); await b.statfsFd(rootFd, s); return s }, s => fuse.replyStatfs(id, s)),
  setxattr: (id) => fuse.replyErr(id, EOPNOTSUPP),
  getxattr: (id) => fuse.replyErr(id, ENODATA),
  listxattr: (id, _node, size) => size === 0 ? fuse.replyXattr(id, 0) : fuse.replyBuf(id, EMPTY, 0),
  removexattr: (id) => fuse.replyErr(id, ENODATA),
  exited: () => process.exit(0)
}

process.umask(0)
try {
  fuse.mount(handlers, Buffer.from(mnt), 'fsname=passthrough,subtype=passthrough', 1024 * 1024)  // as sealfs without allow_other
} catch (err) {
  process.stderr.write(`passthrough: cannot mount: ${(err as Error).message}\n`)
  process.exit(9)
}
widenReadahead(path.resolve(mnt), 1024)
process.stdout.write('ready\n')
const stop = (): void => { fuse.unmount(handlers); process.exit(0) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
