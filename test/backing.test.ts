import { spawnSync } from 'child_process'
import fs from 'fs'
import os from 'os'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { removeTree, tempDir } from './helpers'
import {
  AT_REMOVEDIR, backing as b, BackingAddon, DIRENT_HEADER, DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_REG,
  HEADER_OUT_BYTES, HEADER_OUT_SIZE, HEADER_OUT_LENGTH, O_CLOEXEC, O_PATH, READLINK_BUFFER, RENAME_EXCHANGE, RENAME_NOREPLACE,
  STAT_ATIME_NSEC, STAT_ATIME_SEC, STAT_BLKSIZE, STAT_BLOCKS, STAT_CTIME_NSEC, STAT_CTIME_SEC, STAT_DEV, STAT_GID,
  STAT_INO_HI, STAT_INO_LO, STAT_LENGTH, STAT_MODE, STAT_MTIME_NSEC, STAT_MTIME_SEC, STAT_NLINK, STAT_RDEV,
  STAT_SIZE, STAT_UID, STATFS_BSIZE, STATFS_LENGTH, STATFS_NAMELEN, STATFS_TYPE, TYPE_ANY, TYPE_DIR, TYPE_REG,
  UTIME_NOW, UTIME_OMIT, XATTR_CREATE
} from '../src/filesystem/backing-addon'
import { projectRoot } from '../src/native'

// Unit tests of native-deps/backing on real directories. Everything lives in this file's
// temporary directory; the "outside" files that a followed symlink would reach are in it too.

const C = fs.constants
const E = os.constants.errno
const ADDON = path.join(projectRoot, 'native-deps', 'build', 'Release', 'backing.node')
const EMPTY = Buffer.alloc(0)
const B = (s: string): Buffer => Buffer.from(s)
/** A descriptor number no test has open: any syscall on it fails with EBADF. */
const NOT_OPEN = 0x7fffffff
const DIR_PATH = O_PATH | C.O_DIRECTORY

type Outcome = [number, Buffer | undefined]
type Fn = (...args: unknown[]) => number | Buffer | undefined
type Run = (name: keyof BackingAddon, ...args: unknown[]) => Promise<Outcome>

function fn (name: keyof BackingAddon): Fn {
  return b[name] as unknown as Fn
}

const runSync: Run = async (name, ...args) => {
  const r = fn(name)(...args)
  return typeof r === 'number' ? [r, undefined] : [r!.length, r]
}

const runAsync: Run = (name, ...args) =>
  new Promise(resolve => { fn(name)(...args, (r: number, d?: Buffer) => resolve([r, d])) })

/** The 64-bit inode number from a STAT array. */
function inoOf (st: Float64Array): bigint {
  return (BigInt(st[STAT_INO_HI]) << 32n) | BigInt(st[STAT_INO_LO])
}

interface Dirent { ino: bigint, type: number, name: Buffer }

function decodeDirents (raw: Buffer): Dirent[] {
  const out: Dirent[] = []
  for (let at = 0; at < raw.length;) {
    const len = raw[at + 9]
    out.push({ ino: raw.readBigUInt64LE(at), type: raw[at + 8], name: raw.subarray(at + DIRENT_HEADER, at + DIRENT_HEADER + len) })
    at += DIRENT_HEADER + len
  }
  expect(out.reduce((n, e) => n + DIRENT_HEADER + e.name.length, 0)).toBe(raw.length)
  return out
}

/** The status flags of one of this process's descriptors. */
function fdFlags (fd: number): number {
  return parseInt(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/flags:\s*(\d+)/)![1], 8)
}

/** Runs a script in a fresh node with the addon as `b` (a hang is killed, not waited for); its stdout as JSON. */
function inChild (script: string, dir: string): unknown {
  const code = `const b = require(process.env.ADDON); const fs = require('fs'); const C = fs.constants; const dir = process.env.DIR;\n${script}`
  const r = spawnSync(process.execPath, ['-e', code], {
    encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL', env: { ...process.env, ADDON, DIR: dir }
  })
  expect(r.signal).toBe(null)
  expect(r.stderr).toBe('')
  return JSON.parse(r.stdout)
}

describe('backing addon (native-deps/backing)', () => {
  let base: string
  let opened: number[] = []
  beforeAll(() => { base = tempDir('backing') })
  afterAll(async () => { await removeTree(base) })
  afterEach(() => {
    for (const fd of opened) b.closeFd(fd)
    opened = []
  })

  /** A descriptor (>= 0) closed after the test. */
  function keep (fd: number): number {
    expect(fd).toBeGreaterThanOrEqual(0)
    opened.push(fd)
    return fd
  }

  /** A new directory of this test's and an O_PATH descriptor of it. */
  function newDir (): { dir: string, fd: number } {
    const dir = fs.mkdtempSync(path.join(base, 'case-'))
    return { dir, fd: keep(b.openPath(B(dir), DIR_PATH)) }
  }

  it('never follows a symlink planted as a name', () => {
    const { dir, fd } = newDir()
    const outside = fs.mkdtempSync(path.join(base, 'outside-'))
    const target = path.join(outside, 'target')
    fs.writeFileSync(target, 'outside', { mode: 0o644 })
    fs.utimesSync(target, 1000, 2000)
    fs.symlinkSync(target, path.join(dir, 'link'))
    fs.symlinkSync(outside, path.join(dir, 'dirlink'))
    fs.symlinkSync(path.join(outside, 'new'), path.join(dir, 'dangling'))
    const before = fs.statSync(target, { bigint: true })
    const st = new Float64Array(STAT_LENGTH)
    const header = Buffer.alloc(16)

    expect(b.openAt(fd, B('link'), C.O_RDONLY, 0, TYPE_ANY)).toBe(-E.ELOOP)
    expect(b.openAt(fd, B('link'), C.O_RDWR | C.O_TRUNC, 0, TYPE_REG)).toBe(-E.ELOOP)
    expect(b.openAt(fd, B('dangling'), C.O_WRONLY | C.O_CREAT, 0o644, TYPE_REG)).toBe(-E.ELOOP)
    expect(b.openAt(fd, B('dirlink'), C.O_RDONLY | C.O_DIRECTORY, 0, TYPE_DIR)).toBe(-E.ELOOP)  // seen as a symlink before any open
    expect(b.readSmallFileAt(fd, B('link'), 100)).toBe(-E.ELOOP)
    expect(b.fsyncAt(fd, B('link'))).toBe(-E.ELOOP)
    expect(b.writeFileAt(fd, B('link'), B('planted'), 0o644, false)).toBe(-E.EEXIST)
    expect(b.writeFileAt(fd, B('dangling'), B('planted'), 0o644, false)).toBe(-E.EEXIST)
    expect(b.createWithHeaderAt(fd, B('dangling'), C.O_RDWR, 0o600, B('planted'))).toBe(-E.EEXIST)

    expect(b.statAt(fd, B('link'), st)).toBe(0)
    expect(st[STAT_MODE] & C.S_IFMT).toBe(C.S_IFLNK)
    expect(inoOf(st)).toBe(fs.lstatSync(path.join(dir, 'link'), { bigint: true }).ino)

    const link = keep(b.lookupAt(fd, B('link'), st))
    expect(st[STAT_MODE] & C.S_IFMT).toBe(C.S_IFLNK)
    expect(inoOf(st)).toBe(fs.lstatSync(path.join(dir, 'link'), { bigint: true }).ino)
    const dirlink = keep(b.lookupAt(fd, B('dirlink'), st))
    expect(st[STAT_MODE] & C.S_IFMT).toBe(C.S_IFLNK)
    expect(b.readdirFd(dirlink)).toBe(-E.ENOTDIR)

    const out = Buffer.alloc(READLINK_BUFFER)
    expect(b.readlinkAt(link, EMPTY, out)).toBe(Buffer.byteLength(target))
    expect(out.subarray(0, Buffer.byteLength(target)).toString()).toBe(target)
    expect(b.readlinkAt(fd, B('link'), out)).toBe(Buffer.byteLength(target))

    // Through the symlink's O_PATH descriptor: the symlink itself, or a refusal.
    expect(b.reopen(link, C.O_RDONLY, TYPE_ANY)).toBe(-E.EIO)
    expect(b.reopen(link, C.O_RDONLY, TYPE_REG)).toBe(-E.EIO)
    expect(b.openHeaderFd(link, C.O_RDONLY, header, new Float64Array(HEADER_OUT_LENGTH), false)).toBe(-E.EIO)
    expect(b.chmodFd(link, 0o600)).toBe(-E.EOPNOTSUPP)
    expect(b.chownFd(link, 4321, 4322)).toBe(0)
    expect(fs.lstatSync(path.join(dir, 'link')).uid).toBe(4321)
    expect(b.utimensFd(link, 5000, 1, 6000, 2)).toBe(0)
    expect(fs.lstatSync(path.join(dir, 'link'), { bigint: true }).mtimeNs).toBe(6000_000_000_002n)
    expect(b.getxattrFd(link, B('user.x'), Buffer.alloc(10))).toBe(-E.ENODATA)
    expect(b.listxattrFd(link, Buffer.alloc(10))).toBe(0)
    expect(b.setxattrFd(link, B('user.x'), B('v'), 0)).toBe(-E.EPERM)
    expect(b.removexattrFd(link, B('user.x'))).toBe(-E.ENODATA)
    expect(b.statAt(link, EMPTY, st)).toBe(0)
    expect(st[STAT_UID]).toBe(4321)
    expect(st[STAT_MTIME_SEC]).toBe(6000)

    // A new name for the symlink is a symlink with the same target, not a link to the target.
    expect(b.linkFd(link, fd, B('link2'))).toBe(0)
    expect(fs.lstatSync(path.join(dir, 'link2')).isSymbolicLink()).toBe(true)
    expect(fs.readlinkSync(path.join(dir, 'link2'))).toBe(target)

    // Unlinking the symlink reads nothing and removes only the symlink.
    expect(b.unlinkLastAt(fd, B('link'), header)).toBe(0)
    expect(header.equals(Buffer.alloc(16))).toBe(true)
    expect(fs.existsSync(path.join(dir, 'link'))).toBe(false)

    const after = fs.statSync(target, { bigint: true })
    expect(fs.readFileSync(target, 'utf8')).toBe('outside')
    expect([after.ino, after.mode, after.uid, after.gid, after.nlink, after.mtimeNs, after.atimeNs])
      .toEqual([before.ino, before.mode, before.uid, before.gid, before.nlink, before.mtimeNs, before.atimeNs])
    expect(fs.readdirSync(outside)).toEqual(['target'])
  })

  it('a FIFO or device planted where a file is expected is an error at once, never a wait', () => {
    const { dir } = newDir()
    // In a child: were an open to block on the FIFO, it would be killed, not hang this run.
    const r = inChild(`
      const d = b.openPath(Buffer.from(dir), ${DIR_PATH})
      const n = s => Buffer.from(s)
      const st = new Float64Array(17)
      const r = {
        mkfifo: b.mknodAt(d, n('fifo'), C.S_IFIFO | 0o600, 0),
        mknod: b.mknodAt(d, n('null'), C.S_IFCHR | 0o600, 0x103),  // 1:3, as /dev/null
        openReg: b.openAt(d, n('fifo'), C.O_RDONLY, 0, C.S_IFREG),
        openAny: b.openAt(d, n('fifo'), C.O_RDONLY, 0, 0),
        openWrite: b.openAt(d, n('fifo'), C.O_WRONLY, 0, C.S_IFREG),
        openDir: b.openAt(d, n('fifo'), C.O_RDONLY, 0, C.S_IFDIR),
        readSmall: b.readSmallFileAt(d, n('fifo'), 100),
        fsyncAt: b.fsyncAt(d, n('fifo')),
        openDevice: b.openAt(d, n('null'), C.O_RDWR, 0, 0),
        readDevice: b.readSmallFileAt(d, n('null'), 100),
      }
      const p = b.lookupAt(d, n('fifo'), st)
      r.lookupType = st[2] & C.S_IFMT
      r.reopen = b.reopen(p, C.O_RDONLY, 0)
      r.openHeader = b.openHeaderFd(p, C.O_RDONLY, Buffer.alloc(8), new Float64Array(2), true)
      b.openAt(d, n('fifo'), C.O_RDONLY, 0, C.S_IFREG, openAsync => {
        b.readSmallFileAt(d, n('fifo'), 100, (readAsync, data) => {
          r.openAsync = openAsync
          r.readAsync = [readAsync, data === undefined]
          r.unlinkLast = b.unlinkLastAt(d, n('fifo'), Buffer.alloc(8))
          r.gone = fs.readdirSync(dir)
          console.log(JSON.stringify(r))
        })
      })
    `, dir) as Record<string, unknown>
    // /dev/null's numbers: refused as not regular, or by a nodev mount before that.
    expect([-E.EIO, -E.EACCES]).toContain(r.openDevice)
    expect([-E.EIO, -E.EACCES]).toContain(r.readDevice)
    delete r.openDevice
    delete r.readDevice
    expect(r).toEqual({
      mkfifo: 0,
      mknod: 0,
      openReg: -E.EIO,
      openAny: -E.EIO,
      openWrite: -E.EIO,  // its type is seen before any open: a FIFO is never opened
      openDir: -E.EIO,
      readSmall: -E.EIO,
      fsyncAt: -E.EIO,
      lookupType: C.S_IFIFO,
      reopen: -E.EIO,
      openHeader: -E.EIO,
      openAsync: -E.EIO,
      readAsync: [-E.EIO, true],
      unlinkLast: 0,
      gone: ['null']
    })
  })

  it('refuses bad names, descriptors and numbers before any syscall', async () => {
    const { dir, fd } = newDir()
    const st = new Float64Array(STAT_LENGTH)
    const buf = Buffer.alloc(64)
    const long = Buffer.alloc(256, 0x61)
    const bad: Array<[Buffer, number]> = [
      [B('a/b'), -E.EINVAL], [B('/'), -E.EINVAL], [B('.'), -E.EINVAL], [B('..'), -E.EINVAL],
      [B('a\0b'), -E.EINVAL], [long, -E.ENAMETOOLONG]
    ]
    // With a descriptor that is not open, a syscall would have answered EBADF.
    const withName = (name: Buffer): number[] => [
      b.statAt(NOT_OPEN, name, st), b.lookupAt(NOT_OPEN, name, st), b.openAt(NOT_OPEN, name, C.O_RDONLY, 0, TYPE_ANY),
      b.mkdirAt(NOT_OPEN, name, 0o755), b.unlinkAt(NOT_OPEN, name, 0), b.renameAt(NOT_OPEN, name, NOT_OPEN, B('x'), 0),
      b.renameAt(NOT_OPEN, B('x'), NOT_OPEN, name, 0), b.symlinkAt(B('t'), NOT_OPEN, name), b.mknodAt(NOT_OPEN, name, C.S_IFIFO | 0o600, 0),
      b.linkFd(NOT_OPEN, NOT_OPEN, name), b.readlinkAt(NOT_OPEN, name, buf), b.readSmallFileAt(NOT_OPEN, name, 10) as number,
      b.writeFileAt(NOT_OPEN, name, buf, 0o600, false), b.fsyncAt(NOT_OPEN, name), b.createWithHeaderAt(NOT_OPEN, name, C.O_RDWR, 0o600, buf),
      b.unlinkLastAt(NOT_OPEN, name, buf)
    ]
    for (const [name, errno] of bad) {
      const got = withName(name)
      expect(got).toEqual(got.map(() => errno))
    }
    // Empty: the descriptor itself where that is allowed (statAt, readlinkAt, fsyncAt), refused elsewhere.
    expect(withName(EMPTY)).toEqual([-E.EBADF, -E.EINVAL, -E.EINVAL, -E.EINVAL, -E.EINVAL, -E.EINVAL, -E.EINVAL, -E.EINVAL, -E.EINVAL,
      -E.EINVAL, -E.EBADF, -E.EINVAL, -E.EINVAL, -E.EBADF, -E.EINVAL, -E.EINVAL])

    // With a real directory nothing happens either: no 'sub/x', nothing beside the directory.
    fs.mkdirSync(path.join(dir, 'sub'))
    expect(b.mkdirAt(fd, B('sub/x'), 0o755)).toBe(-E.EINVAL)
    expect(b.writeFileAt(fd, B('../escape'), B('x'), 0o644, false)).toBe(-E.EINVAL)
    expect(b.writeFileAt(fd, B('..'), B('x'), 0o644, false)).toBe(-E.EINVAL)
    expect(fs.readdirSync(path.join(dir, 'sub'))).toEqual([])
    expect(fs.existsSync(path.join(base, 'escape'))).toBe(false)
    expect(b.writeFileAt(fd, Buffer.alloc(255, 0x62), B('x'), 0o644, false)).toBe(0)
    expect(b.writeFileAt(fd, Buffer.alloc(256, 0x62), B('x'), 0o644, false)).toBe(-E.ENAMETOOLONG)
    // Type bits in a mode are ignored where open and mkdir ignore them (FUSE's create passes S_IFREG).
    expect(b.mkdirAt(fd, B('typed'), C.S_IFDIR | 0o700)).toBe(0)
    keep(b.openAt(fd, B('typed-file'), C.O_WRONLY | C.O_CREAT | C.O_EXCL, C.S_IFREG | 0o600, TYPE_REG))
    expect([fs.statSync(path.join(dir, 'typed')).mode, fs.statSync(path.join(dir, 'typed-file')).mode]).toEqual([C.S_IFDIR | 0o700, C.S_IFREG | 0o600])

    // Descriptors: only non-negative int32s; never AT_FDCWD.
    for (const d of [-1, -100, 2 ** 31, 1.5, NaN, Infinity]) {
      expect([b.statAt(d, B('x'), st), b.closeFd(d), b.fsyncFd(d, false), b.statfsFd(d, new Float64Array(STATFS_LENGTH)),
        b.renameAt(fd, B('x'), d, B('y'), 0), b.linkFd(d, fd, B('y'))]).toEqual(Array(6).fill(-E.EBADF))
    }

    // Other numbers out of range.
    const xname = B('user.x')
    expect([
      b.mkdirAt(NOT_OPEN, B('x'), 0o200000), b.mkdirAt(NOT_OPEN, B('x'), -1), b.mkdirAt(NOT_OPEN, B('x'), 0.5),
      b.openAt(NOT_OPEN, B('x'), C.O_RDONLY, 0, 0o020000), b.openAt(NOT_OPEN, B('x'), 2 ** 31, 0, TYPE_ANY),
      b.openAt(NOT_OPEN, B('x'), C.O_RDONLY, 0o200000, TYPE_ANY), b.reopen(NOT_OPEN, C.O_RDONLY, C.S_IFLNK),
      b.unlinkAt(NOT_OPEN, B('x'), 1), b.renameAt(NOT_OPEN, B('x'), NOT_OPEN, B('y'), 4),
      b.mknodAt(NOT_OPEN, B('x'), 0o1000000, 0), b.mknodAt(NOT_OPEN, B('x'), C.S_IFIFO, -1), b.mknodAt(NOT_OPEN, B('x'), C.S_IFIFO, 2 ** 32),
      b.chmodFd(NOT_OPEN, 0o200000), b.chownFd(NOT_OPEN, -2, 0), b.chownFd(NOT_OPEN, 0, 2 ** 32),
      b.utimensFd(NOT_OPEN, 1.5, 0, 0, 0), b.utimensFd(NOT_OPEN, 0, 1e9, 0, 0), b.utimensFd(NOT_OPEN, 0, 0, 0, -1),
      b.utimensFd(NOT_OPEN, 2 ** 60, 0, 0, 0), b.utimensFd(NOT_OPEN, 0, UTIME_NOW + 1, 0, 0),
      b.setxattrFd(NOT_OPEN, xname, buf, 3), b.readSmallFileAt(NOT_OPEN, B('x'), -1) as number,
      b.readSmallFileAt(NOT_OPEN, B('x'), 2 ** 31) as number
    ]).toEqual(Array(23).fill(-E.EINVAL))
    // xattr names (the kernel's ERANGE for too long) and whole paths.
    expect([b.getxattrFd(NOT_OPEN, EMPTY, buf), b.getxattrFd(NOT_OPEN, B('user.a\0b'), buf), b.removexattrFd(NOT_OPEN, Buffer.alloc(256, 0x61)),
      b.openPath(EMPTY, DIR_PATH), b.openPath(B('/tmp\0/x'), DIR_PATH), b.openPath(Buffer.alloc(4096, 0x61), DIR_PATH),
      b.symlinkAt(EMPTY, NOT_OPEN, B('x')), b.symlinkAt(Buffer.alloc(4096, 0x61), NOT_OPEN, B('x'))])
      .toEqual([-E.EINVAL, -E.EINVAL, -E.ERANGE, -E.EINVAL, -E.EINVAL, -E.ENAMETOOLONG, -E.EINVAL, -E.ENAMETOOLONG])
    // The longest allowed still reach the kernel.
    expect([b.removexattrFd(NOT_OPEN, Buffer.alloc(255, 0x61)), b.symlinkAt(Buffer.alloc(4095, 0x61), NOT_OPEN, B('x')),
      b.utimensFd(NOT_OPEN, -(2 ** 53), UTIME_NOW, 2 ** 53, UTIME_OMIT), b.chownFd(NOT_OPEN, -1, 0xffffffff)])
      .toEqual(Array(4).fill(-E.EBADF))

    // The asynchronous form refuses the same way, through its callback, never before returning.
    let called = false
    const refused = new Promise<number>(resolve => b.statAt(NOT_OPEN, B('..'), st, r => { called = true; resolve(r) }))
    expect(called).toBe(false)
    expect(await refused).toBe(-E.EINVAL)

    // Arguments of the wrong JS type are the caller's bug: TypeErrors, for both forms.
    const any = b as unknown as Record<string, (...args: unknown[]) => unknown>
    expect(() => any.statAt(fd, 'x', st)).toThrow(TypeError)
    expect(() => any.statAt(fd, B('x'))).toThrow(TypeError)
    expect(() => any.statAt(fd, B('x'), st, 'not a callback')).toThrow(TypeError)
    expect(() => any.statAt(fd, B('x'), new Float64Array(STAT_LENGTH - 1))).toThrow(TypeError)
    expect(() => any.statAt(fd, B('x'), new Float32Array(STAT_LENGTH))).toThrow(TypeError)
    expect(() => any.statAt('3', B('x'), st)).toThrow(TypeError)
    expect(() => any.writeFileAt(fd, B('x'), 'data', 0o644, false)).toThrow(TypeError)
    expect(() => any.writeFileAt(fd, B('x'), B('data'), 0o644, 0)).toThrow(TypeError)
    expect(() => any.closeFd(NOT_OPEN, () => undefined, () => undefined)).toThrow(TypeError)
    expect(() => any.mkdirAt(fd, B('x'), '0755', () => undefined)).toThrow(TypeError)
    expect(fs.existsSync(path.join(dir, 'x'))).toBe(false)
  })

  /**
   * One run of every operation, with results made comparable (descriptors as 'fd'), and the
   * directory it leaves.
   */
  async function everyOperation (run: Run): Promise<{ log: unknown[], tree: unknown[] }> {
    const dir = fs.mkdtempSync(path.join(base, 'ops-'))
    const log: unknown[] = []
    const fds: number[] = []
    const st = new Float64Array(STAT_LENGTH)
    const note = async (name: keyof BackingAddon, ...args: unknown[]): Promise<number> => {
      const [r, data] = await run(name, ...args)
      log.push([name, r, data?.toString('latin1')])
      return r
    }
    const noteFd = async (name: keyof BackingAddon, ...args: unknown[]): Promise<number> => {
      const [r] = await run(name, ...args)
      log.push([name, r >= 0 ? 'fd' : r])
      if (r >= 0) fds.push(r)
      return r
    }
    const noteClose = async (fd: number): Promise<void> => {
      fds.splice(fds.indexOf(fd), 1)
      await note('closeFd', fd)
    }
    /** The stat fields that are the same in both runs (the times once they were set). */
    const noteStat = (times = false): void => {
      log.push([STAT_MODE, STAT_NLINK, STAT_UID, STAT_GID, STAT_SIZE, ...(times ? [STAT_MTIME_SEC, STAT_MTIME_NSEC] : [])].map(i => st[i]))
    }
    try {
      const d = await noteFd('openPath', B(dir), DIR_PATH)
      await note('mkdirAt', d, B('sub'), 0o750)
      await note('mkdirAt', d, B('sub'), 0o750)
      await note('writeFileAt', d, B('small'), B('abcdef'), 0o640, true)
      await note('writeFileAt', d, B('small'), B('abcdef'), 0o640, false)
      await note('readSmallFileAt', d, B('small'), 10)
      await note('readSmallFileAt', d, B('small'), 5)
      await note('readSmallFileAt', d, B('none'), 10)
      await note('readSmallFileAt', d, B('sub'), 10)
      await note('statAt', d, B('small'), st)
      noteStat()
      await note('statAt', d, B('none'), st)
      await note('statAt', d, B('a/b'), st)

      const small = await noteFd('lookupAt', d, B('small'), st)
      noteStat()
      let fd = await noteFd('openAt', d, B('small'), C.O_RDONLY, 0, TYPE_REG)
      await noteClose(fd)
      await note('openAt', d, B('small'), C.O_RDONLY, 0, TYPE_DIR)
      fd = await noteFd('openAt', d, B('sub'), C.O_RDONLY | C.O_DIRECTORY, 0, TYPE_DIR)
      await noteClose(fd)
      fd = await noteFd('openAt', d, B('created'), C.O_RDWR | C.O_CREAT | C.O_EXCL, 0o604, TYPE_REG)
      log.push([fs.fstatSync(fd).mode, fdFlags(fd) & (C.O_RDWR | C.O_NOFOLLOW | O_CLOEXEC | C.O_NONBLOCK)])
      await noteClose(fd)
      fd = await noteFd('reopen', small, C.O_RDWR, TYPE_REG)
      log.push(fs.readFileSync(fd, 'latin1'))
      await noteClose(fd)
      await note('reopen', small, C.O_RDONLY, TYPE_DIR)

      fd = await noteFd('createWithHeaderAt', d, B('hdr'), C.O_RDWR, 0o600, B('HEADER'))
      await noteClose(fd)
      await note('createWithHeaderAt', d, B('hdr'), C.O_RDWR, 0o600, B('HEADER'))
      const hdr = await noteFd('lookupAt', d, B('hdr'), st)
      const header = Buffer.alloc(4)
      const hout = new Float64Array(HEADER_OUT_LENGTH)
      fd = await noteFd('openHeaderFd', hdr, C.O_RDONLY, header, hout, true)
      log.push([header.toString(), hout[HEADER_OUT_BYTES], hout[HEADER_OUT_SIZE]])
      await noteClose(fd)
      fd = await noteFd('openHeaderFd', hdr, C.O_RDONLY, Buffer.alloc(10), hout, false)
      log.push([hout[HEADER_OUT_BYTES], hout[HEADER_OUT_SIZE]])
      await noteClose(fd)

      await note('symlinkAt', B('small'), d, B('sl'))
      await note('readlinkAt', d, B('sl'), Buffer.alloc(READLINK_BUFFER))
      await note('readlinkAt', d, B('sl'), Buffer.alloc(5))
      await note('readlinkAt', d, B('small'), Buffer.alloc(READLINK_BUFFER))
      await note('mknodAt', d, B('fifo'), C.S_IFIFO | 0o640, 0)
      await note('linkFd', small, d, B('small2'))
      await note('linkFd', small, d, B('small2'))
      await note('renameAt', d, B('small2'), d, B('small3'), RENAME_NOREPLACE)
      await note('renameAt', d, B('small3'), d, B('small'), RENAME_NOREPLACE)
      await note('renameAt', d, B('sl'), d, B('fifo'), RENAME_EXCHANGE)

      await note('chownFd', small, 1000, -1)
      await note('chownFd', small, 0xffffffff, 1001)
      await note('chmodFd', small, C.S_IFREG | 0o4711)  // after chown, which clears set-user-ID
      await note('utimensFd', small, -86400, 123, 1e9, 456)
      await note('statAt', small, EMPTY, st)
      noteStat(true)
      log.push([st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC]])

      await note('setxattrFd', small, B('user.k'), B('value'), XATTR_CREATE)
      await note('setxattrFd', small, B('user.k'), B('value'), XATTR_CREATE)
      await note('getxattrFd', small, B('user.k'), EMPTY)
      await note('getxattrFd', small, B('user.k'), Buffer.alloc(2))
      const value = Buffer.alloc(16)
      log.push([await note('getxattrFd', small, B('user.k'), value), value.subarray(0, 5).toString()])
      await note('listxattrFd', small, EMPTY)
      const list = Buffer.alloc(16)
      log.push([await note('listxattrFd', small, list), list.toString('latin1')])
      await note('listxattrFd', small, Buffer.alloc(3))
      await note('removexattrFd', small, B('user.k'))
      await note('removexattrFd', small, B('user.k'))
      await note('getxattrFd', small, B('user.none'), value)

      const gone = Buffer.alloc(2)
      log.push([await note('unlinkLastAt', d, B('small'), gone), gone.toString('latin1')])
      log.push([await note('unlinkLastAt', d, B('small3'), gone), gone.toString('latin1')])
      await note('unlinkLastAt', d, B('small3'), gone)
      await note('unlinkAt', d, B('sub'), 0)
      await note('unlinkAt', d, B('sub'), AT_REMOVEDIR)
      await note('unlinkAt', d, B('sub'), AT_REMOVEDIR)

      await note('fsyncAt', d, EMPTY)
      await note('fsyncAt', d, B('hdr'))
      fd = await noteFd('openAt', d, B('hdr'), C.O_RDWR, 0, TYPE_ANY)
      await note('fsyncFd', fd, true)
      await note('fsyncFd', fd, false)
      await noteClose(fd)
      await note('closeFd', NOT_OPEN)
      const sfs = new Float64Array(STATFS_LENGTH)
      await note('statfsFd', d, sfs)
      log.push([sfs[STATFS_NAMELEN], sfs[STATFS_TYPE] === fs.statfsSync(dir).type, sfs[STATFS_BSIZE] === fs.statfsSync(dir).bsize])
      const [n, raw] = await run('readdirFd', d)
      log.push([n === raw!.length, decodeDirents(raw!).map(e => [e.name.toString(), e.type]).sort()])
      await note('readdirFd', hdr)
    } finally {
      for (const fd of fds) b.closeFd(fd)
    }
    const tree = fs.readdirSync(dir).sort().map(name => {
      const p = path.join(dir, name)
      const s = fs.lstatSync(p)
      const body = s.isFile() ? fs.readFileSync(p, 'latin1') : s.isSymbolicLink() ? fs.readlinkSync(p) : ''
      return [name, s.mode, s.nlink, s.uid, s.gid, s.size, body]
    })
    return { log, tree }
  }

  it('sync and async forms give the same results', async () => {
    const sync = await everyOperation(runSync)
    const async = await everyOperation(runAsync)
    expect(async).toEqual(sync)
    // Spot checks that the run did what it says.
    expect(sync.log).toContainEqual(['readSmallFileAt', 6, 'abcdef'])
    expect(sync.log).toContainEqual(['readSmallFileAt', -E.EFBIG, undefined])
    expect(sync.log).toContainEqual(['readlinkAt', -E.ENAMETOOLONG, undefined])
    expect(sync.log).toContainEqual(['renameAt', -E.EEXIST, undefined])
    expect(sync.log).toContainEqual([0o100604, C.O_RDWR | C.O_NOFOLLOW | O_CLOEXEC])  // no O_NONBLOCK left
    expect(sync.log).toContainEqual([C.S_IFREG | 0o4711, 2, 1000, 1001, 6, 1e9, 456])
    expect(sync.log).toContainEqual([7, 'user.k\0' + '\0'.repeat(9)])
    expect(sync.log).toContainEqual([255, true, true])
    expect(sync.log).toContainEqual([-86400, 123])
    expect(sync.log).toContainEqual(['HEAD', 4, 6])
    expect(sync.log).toContainEqual([6, 6])
    expect(sync.log).toContainEqual([5, 'value'])
    expect(sync.log).toContainEqual([0, '\0\0'])  // small had a second link: nothing read
    expect(sync.log).toContainEqual([2, 'ab'])  // small3 was the last
    expect(sync.tree).toEqual([
      ['created', 0o100604, 1, 0, 0, 0, ''],
      ['fifo', 0o120777, 1, 0, 0, 5, 'small'],  // exchanged with the symlink
      ['hdr', 0o100600, 1, 0, 0, 6, 'HEADER'],
      ['sl', C.S_IFIFO | 0o640, 1, 0, 0, 0, '']
    ])
  })

  it('readdirFd: non-UTF-8 names round-trip, with their inode numbers and types; . and .. left out', async () => {
    const { dir, fd } = newDir()
    const names = [
      Buffer.from([0xff, 0xfe]), Buffer.from([0x80]), Buffer.from('caf\xe9', 'latin1'), B('日本'), B('a\nb'), B('-'),
      Buffer.concat([Buffer.alloc(254, 0xc3), Buffer.from([0x28])])
    ]
    const types = [DT_REG, DT_DIR, DT_LNK, DT_FIFO, DT_CHR, DT_REG, DT_DIR]
    names.forEach((name, i) => {
      const t = types[i]
      const r = t === DT_REG ? b.writeFileAt(fd, name, name, 0o600, false)
        : t === DT_DIR ? b.mkdirAt(fd, name, 0o700)
          : t === DT_LNK ? b.symlinkAt(B('target'), fd, name)
            : b.mknodAt(fd, name, (t === DT_FIFO ? C.S_IFIFO : C.S_IFCHR) | 0o600, 0x103)
      expect(r).toBe(0)
    })
    const hex = (e: Dirent[]): string[] => e.map(x => x.name.toString('hex')).sort()
    const raw = b.readdirFd(fd) as Buffer
    expect(Buffer.isBuffer(raw)).toBe(true)
    const entries = decodeDirents(raw)
    expect(hex(entries)).toEqual(names.map(n => n.toString('hex')).sort())
    const st = new Float64Array(STAT_LENGTH)
    for (const e of entries) {
      expect(b.statAt(fd, e.name, st)).toBe(0)
      expect(e.ino).toBe(inoOf(st))
      expect(e.type).toBe(types[names.findIndex(n => n.equals(e.name))])
    }
    const [n, data] = await runAsync('readdirFd', fd)
    expect([n, data!.equals(raw)]).toEqual([raw.length, true])

    // A directory whose listing takes several getdents64 calls and a growing buffer.
    const big = Buffer.from('big')
    expect(b.mkdirAt(fd, big, 0o700)).toBe(0)
    const bigFd = keep(b.lookupAt(fd, big, st))
    const many = Array.from({ length: 1500 }, (_, i) => Buffer.concat([Buffer.from([0xfe]), B(`${i}`.padStart(120, 'x'))]))
    for (const name of many) expect(b.mknodAt(bigFd, name, C.S_IFREG | 0o600, 0)).toBe(0)
    const listed = decodeDirents(b.readdirFd(bigFd) as Buffer)
    expect(hex(listed)).toEqual(many.map(x => x.toString('hex')).sort())
    expect(listed.every(e => e.type === DT_REG)).toBe(true)
    expect(decodeDirents((await runAsync('readdirFd', bigFd))[1]!)).toHaveLength(1500)

    // An empty directory lists as an empty Buffer; a file is not a directory.
    expect(b.mkdirAt(fd, B('empty'), 0o700)).toBe(0)
    const emptyFd = keep(b.lookupAt(fd, B('empty'), st))
    expect(b.readdirFd(emptyFd)).toEqual(Buffer.alloc(0))
    expect(await runAsync('readdirFd', emptyFd)).toEqual([0, Buffer.alloc(0)])
    const fileFd = keep(b.lookupAt(fd, names[0], st))
    expect(b.readdirFd(fileFd)).toBe(-E.ENOTDIR)
    expect(await runAsync('readdirFd', fileFd)).toEqual([-E.ENOTDIR, undefined])
    expect(fs.readdirSync(dir, { encoding: 'buffer' })).toHaveLength(names.length + 2)
  })

  it('stat: st_ino halves exact, times exact to the nanosecond before 1970 too, fields as lstat has them', () => {
    const { dir, fd } = newDir()
    fs.writeFileSync(path.join(dir, 'f'), 'x'.repeat(5000))
    const st = new Float64Array(STAT_LENGTH)
    const f = keep(b.lookupAt(fd, B('f'), st))
    const check = (): void => {
      expect(b.statAt(fd, B('f'), st)).toBe(0)
      const l = fs.lstatSync(path.join(dir, 'f'), { bigint: true })
      expect(st[STAT_INO_LO]).toBeLessThan(2 ** 32)
      expect(Number.isInteger(st[STAT_INO_HI]) && Number.isInteger(st[STAT_INO_LO])).toBe(true)
      expect(inoOf(st)).toBe(l.ino)
      const ns = (sec: number, nsec: number): bigint => BigInt(st[sec]) * 1_000_000_000n + BigInt(st[nsec])
      expect([ns(STAT_ATIME_SEC, STAT_ATIME_NSEC), ns(STAT_MTIME_SEC, STAT_MTIME_NSEC), ns(STAT_CTIME_SEC, STAT_CTIME_NSEC)])
        .toEqual([l.atimeNs, l.mtimeNs, l.ctimeNs])
      expect([STAT_MODE, STAT_NLINK, STAT_UID, STAT_GID, STAT_RDEV, STAT_SIZE, STAT_BLOCKS, STAT_DEV, STAT_BLKSIZE].map(i => BigInt(st[i])))
        .toEqual([l.mode, l.nlink, l.uid, l.gid, l.rdev, l.size, l.blocks, l.dev, l.blksize])
    }
    check()
    expect(b.utimensFd(f, -1234567890, 987654321, -1, 999999999)).toBe(0)
    check()
    expect([st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC], st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC]]).toEqual([-1234567890, 987654321, -1, 999999999])
    expect(b.utimensFd(f, 0, UTIME_OMIT, 0, UTIME_NOW)).toBe(0)
    check()
    expect(st[STAT_ATIME_SEC]).toBe(-1234567890)
    expect(Math.abs(st[STAT_MTIME_SEC] - Date.now() / 1000)).toBeLessThan(60)
    // The same inode number from lookupAt (fstat of its descriptor) and readdirFd (8 bytes).
    const again = new Float64Array(STAT_LENGTH)
    keep(b.lookupAt(fd, B('f'), again))
    expect(inoOf(again)).toBe(inoOf(st))
    expect(decodeDirents(b.readdirFd(fd) as Buffer)[0].ino).toBe(inoOf(st))
    // The directory itself (empty name), through its O_PATH descriptor.
    expect(b.statAt(fd, EMPTY, st)).toBe(0)
    expect(inoOf(st)).toBe(fs.statSync(dir, { bigint: true }).ino)
  })

  it('reopen and openHeaderFd reach the inode the O_PATH descriptor names, whatever was put in its name since', () => {
    const { dir, fd } = newDir()
    const st = new Float64Array(STAT_LENGTH)
    fs.writeFileSync(path.join(dir, 'a'), 'original')
    const a = keep(b.lookupAt(fd, B('a'), st))
    fs.writeFileSync(path.join(dir, 'planted'), 'planted!')
    fs.renameSync(path.join(dir, 'planted'), path.join(dir, 'a'))
    const rd = keep(b.reopen(a, C.O_RDONLY, TYPE_REG))
    expect(fs.readFileSync(rd, 'utf8')).toBe('original')
    const header = Buffer.alloc(4)
    const out = new Float64Array(HEADER_OUT_LENGTH)
    const hd = keep(b.openHeaderFd(a, C.O_RDWR, header, out, true))
    expect([header.toString(), out[HEADER_OUT_BYTES], out[HEADER_OUT_SIZE]]).toEqual(['orig', 4, 8])
    fs.writeSync(hd, 'ORIG', 0)
    expect(fs.readFileSync(path.join(dir, 'a'), 'utf8')).toBe('planted!')
    // A symlink in its place: still the original inode.
    fs.unlinkSync(path.join(dir, 'a'))
    fs.symlinkSync(path.join(dir, 'planted-target'), path.join(dir, 'a'))
    const again = keep(b.reopen(a, C.O_RDONLY | C.O_NOFOLLOW, TYPE_ANY))
    expect(fs.readFileSync(again, 'utf8')).toBe('ORIGinal')
    expect(fs.existsSync(path.join(dir, 'planted-target'))).toBe(false)
    // O_NONBLOCK is only while opening, unless asked for.
    expect(fdFlags(rd) & C.O_NONBLOCK).toBe(0)
    expect(fdFlags(keep(b.reopen(a, C.O_RDONLY | C.O_NONBLOCK, TYPE_REG))) & C.O_NONBLOCK).toBe(C.O_NONBLOCK)
    // A directory reopens read-only as a directory.
    fs.mkdirSync(path.join(dir, 'd'))
    fs.writeFileSync(path.join(dir, 'd', 'inside'), '')
    const dp = keep(b.lookupAt(fd, B('d'), st))
    expect(b.reopen(dp, C.O_RDONLY, TYPE_REG)).toBe(-E.EIO)
    const dd = keep(b.reopen(dp, C.O_RDWR, TYPE_DIR))
    expect(decodeDirents(b.readdirFd(dd) as Buffer).map(e => e.name.toString())).toEqual(['inside'])
    expect(b.openHeaderFd(dp, C.O_RDONLY, header, out, false)).toBe(-E.EIO)
  })

  it('chmodFd, chownFd, utimensFd, the xattr calls and linkFd act on the entry the O_PATH descriptor names', () => {
    const { dir, fd } = newDir()
    const st = new Float64Array(STAT_LENGTH)
    fs.mkdirSync(path.join(dir, 'd'), 0o700)
    fs.writeFileSync(path.join(dir, 'f'), 'data')
    const d = keep(b.lookupAt(fd, B('d'), st))
    const f = keep(b.lookupAt(fd, B('f'), st))
    fs.renameSync(path.join(dir, 'f'), path.join(dir, 'moved'))  // the descriptor follows the inode, not the name
    fs.writeFileSync(path.join(dir, 'f'), 'planted')
    expect(b.chmodFd(f, 0o640)).toBe(0)
    expect(b.chmodFd(d, C.S_IFDIR | 0o751)).toBe(0)
    expect(b.chownFd(f, 123, 456)).toBe(0)
    expect(b.chownFd(d, -1, 789)).toBe(0)
    expect(b.utimensFd(f, 10, 20, 30, 40)).toBe(0)
    const moved = fs.lstatSync(path.join(dir, 'moved'), { bigint: true })
    expect([moved.mode, moved.uid, moved.gid, moved.atimeNs, moved.mtimeNs]).toEqual([0o100640n, 123n, 456n, 10_000_000_020n, 30_000_000_040n])
    const dst = fs.lstatSync(path.join(dir, 'd'))
    expect([dst.mode, dst.uid, dst.gid]).toEqual([0o40751, 0, 789])
    const planted = fs.lstatSync(path.join(dir, 'f'))
    expect([planted.mode & 0o7777, planted.uid, planted.gid]).toEqual([0o644, 0, 0])

    for (const p of [f, d]) {
      expect(b.setxattrFd(p, B('user.one'), B('1'), 0)).toBe(0)
      expect(b.setxattrFd(p, B('user.two'), B('22'), XATTR_CREATE)).toBe(0)
      expect(b.getxattrFd(p, B('user.two'), EMPTY)).toBe(2)
      expect(b.getxattrFd(p, B('user.two'), Buffer.alloc(1))).toBe(-E.ERANGE)
      const size = b.listxattrFd(p, EMPTY)
      expect(size).toBe('user.one\0user.two\0'.length)
      expect(b.listxattrFd(p, Buffer.alloc(size - 1))).toBe(-E.ERANGE)
      const list = Buffer.alloc(size)
      expect(b.listxattrFd(p, list)).toBe(size)
      expect(list.toString().split('\0').filter(Boolean).sort()).toEqual(['user.one', 'user.two'])
      expect(b.removexattrFd(p, B('user.one'))).toBe(0)
      expect(b.getxattrFd(p, B('user.one'), Buffer.alloc(8))).toBe(-E.ENODATA)
    }
    expect(b.getxattrFd(keep(b.lookupAt(fd, B('f'), st)), B('user.two'), EMPTY)).toBe(-E.ENODATA)  // nothing went to the planted file

    expect(b.linkFd(f, fd, B('third'))).toBe(0)
    expect(b.linkFd(f, fd, B('third'))).toBe(-E.EEXIST)
    expect(fs.lstatSync(path.join(dir, 'third'), { bigint: true }).ino).toBe(moved.ino)
    expect(fs.lstatSync(path.join(dir, 'moved')).nlink).toBe(2)
    expect(b.linkFd(d, fd, B('dirlink'))).toBe(-E.EPERM)
  })

  it('writeFileAt and createWithHeaderAt remove the file they created when the write fails', () => {
    const { dir } = newDir()
    // A file size limit (RLIMIT_FSIZE) makes the second write fail with EFBIG.
    const r = spawnSync('prlimit', ['--fsize=4096', process.execPath, '-e', `
      process.on('SIGXFSZ', () => {})
      const b = require(process.env.ADDON); const C = require('fs').constants
      const d = b.openPath(Buffer.from(process.env.DIR), ${DIR_PATH})
      const big = Buffer.alloc(10000, 1)
      const r = { write: b.writeFileAt(d, Buffer.from('w'), big, 0o644, true), create: b.createWithHeaderAt(d, Buffer.from('c'), C.O_RDWR, 0o644, big) }
      b.writeFileAt(d, Buffer.from('wa'), big, 0o644, false, w => b.createWithHeaderAt(d, Buffer.from('ca'), C.O_RDWR, 0o644, big, c => {
        r.writeAsync = w; r.createAsync = c; r.small = b.writeFileAt(d, Buffer.from('ok'), Buffer.from('fits'), 0o644, true)
        console.log(JSON.stringify(r))
      }))
    `], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL', env: { ...process.env, ADDON, DIR: dir } })
    expect(r.stderr).toBe('')
    expect(JSON.parse(r.stdout)).toEqual({ write: -E.EFBIG, create: -E.EFBIG, writeAsync: -E.EFBIG, createAsync: -E.EFBIG, small: 0 })
    expect(fs.readdirSync(dir)).toEqual(['ok'])
    expect(fs.readFileSync(path.join(dir, 'ok'), 'utf8')).toBe('fits')
  })
})
