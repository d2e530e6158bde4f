// Prototype for issue 12 (not part of sealfs): a read-only passthrough on the low-level
// prototype binding (bench/prototype/ll_proto.c), with an inode table of O_PATH descriptors
// like libfuse's passthrough_hp. Enough for stat, ls, cat and fio randread.
//   node dist/bench/prototype/ll-passthrough.js BACKING MNT loop|loop-pool|threads
import fs from 'fs'
import path from 'path'
import { projectRoot } from '../../src/native'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const ll = require(path.join(projectRoot, 'bench', 'prototype', 'build', 'Release', 'll_proto.node'))

const [backing, mnt, mode] = process.argv.slice(2)
if (backing === undefined || mnt === undefined || !['loop', 'loop-pool', 'threads'].includes(mode)) {
  process.stderr.write('usage: ll-passthrough BACKING MNT loop|loop-pool|threads\n')
  process.exit(2)
}

const O_PATH = 0o10000000
const O_DIRECTORY = 0o200000
const attrs = new Float64Array(14)
const EMPTY = Buffer.alloc(0)

interface Inode { fd: number, lookups: number, key: string }
const inodes = new Map<number, Inode>()
const byKey = new Map<string, number>()
let nextId = 2
const rootFd = fs.openSync(backing, O_PATH | O_DIRECTORY)
inodes.set(1, { fd: rootFd, lookups: 1 << 30, key: 'root' })
const dirs = new Map<number, { names: string[], inos: number[] }>()
let nextDir = 1

const handlers = {
  lookup (id: number, parent: bigint, name: Buffer) {
    const p = inodes.get(Number(parent))
    if (p === undefined) return ll.replyErr(id, 116)  // ESTALE
    const rc = ll.statAt(p.fd, name, attrs)
    if (rc < 0) return ll.replyErr(id, -rc)
    const key = `${attrs[0]}`
    let nodeid = byKey.get(key)
    if (nodeid !== undefined) {
      inodes.get(nodeid)!.lookups++
    } else {
      const fd = ll.openAt(p.fd, name, O_PATH)
      if (fd < 0) return ll.replyErr(id, -fd)
      nodeid = nextId++
      inodes.set(nodeid, { fd, lookups: 1, key })
      byKey.set(key, nodeid)
    }
    ll.replyEntry(id, nodeid, attrs)
  },
  forget (ino: bigint, n: number) {
    const i = inodes.get(Number(ino))
    if (i === undefined) return
    i.lookups -= n
    if (i.lookups <= 0) { fs.closeSync(i.fd); inodes.delete(Number(ino)); byKey.delete(i.key) }
  },
  getattr (id: number, ino: bigint) {
    const i = inodes.get(Number(ino))
    if (i === undefined) return ll.replyErr(id, 116)
    const rc = ll.statAt(i.fd, EMPTY, attrs)
    if (rc < 0) return ll.replyErr(id, -rc)
    ll.replyAttr(id, attrs)
  },
  open (id: number, ino: bigint, flags: number) {
    const i = inodes.get(Number(ino))
    if (i === undefined) return ll.replyErr(id, 116)
    try {
      const fd = fs.openSync(`/proc/self/fd/${i.fd}`, flags & ~(0o100000 /* O_NOFOLLOW */ | 0o1000 /* O_TRUNC */ | 0o40000 /* O_DIRECT: the page cache is the kernel's business */))
      ll.replyOpen(id, fd, true)
    } catch (e) {
      ll.replyErr(id, Math.abs((e as NodeJS.ErrnoException).errno ?? 5))
    }
  },
  read (id: number, _ino: bigint, fh: number, size: number, off: number) {
    if (mode === 'loop') return ll.replyPread(id, fh, size, off)
    // loop-pool: the read goes to the libuv pool and the reply comes from its callback, as a
    // request to a slow backing (or big crypto) would.
    const buf = Buffer.allocUnsafe(size)
    fs.read(fh, buf, 0, size, off, (e, n) => e !== null ? ll.replyErr(id, Math.abs(e.errno ?? 5)) : ll.replyBuf(id, buf, n))
  },
  release (id: number, _ino: bigint, fh: number) {
    fs.close(fh, () => undefined)
    ll.replyErr(id, 0)
  },
  opendir (id: number, ino: bigint) {
    const i = inodes.get(Number(ino))
    if (i === undefined) return ll.replyErr(id, 116)
    const names = ['.', '..', ...fs.readdirSync(`/proc/self/fd/${i.fd}`)]
    const h = nextDir++
    dirs.set(h, { names, inos: names.map((_n, k) => k + 1) })  // any non-zero: glibc skips d_ino 0
    ll.replyOpen(id, h, false)
  },
  readdir (id: number, _ino: bigint, fh: number, size: number, off: number) {
    const d = dirs.get(fh)
    if (d === undefined) return ll.replyErr(id, 9)
    ll.replyDir(id, d.names, d.inos, size, off)
  },
  releasedir (id: number, _ino: bigint, fh: number) {
    dirs.delete(fh)
    ll.replyErr(id, 0)
  },
  statfs (id: number) { ll.replyErr(id, 38) }
}

ll.mount(mnt, 'fsname=ll-proto,default_permissions,allow_other', handlers, mode === 'threads', 1.0)
process.stdout.write('mounted\n')
process.on('SIGTERM', () => process.exit(0))
