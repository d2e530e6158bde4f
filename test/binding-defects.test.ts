import { ChildProcess, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { mountTable } from '../src/filesystem/mountinfo'
import { cleanup, makeVolume, mount, plainBeside, PY_ERR, py as runPy, removeTree, sleep, takeDown, tempDir, Vol } from './helpers'

// Tests pinning defects of the path-string binding (issue 12: defects 5, 6, 7 and 8), each
// through a real mount and, where it makes sense, against a plain directory doing the same.

const ERR = PY_ERR

function py (code: string, args: string[] = [], timeout = 120_000): unknown {
  return runPy(code, { args, timeout })
}

/**
 * Aborts the FUSE connection of the mount at `mnt` (this test's own: found by its mount point,
 * its connection by the minor number of the mount's device), so processes stuck on it return.
 * fusectl is used where the host has it mounted; otherwise it is mounted in a private mount
 * namespace that ends with the command, never on the host.
 */
function abortConnection (mnt: string): string {
  const entry = mountTable().find(m => m.mountpoint === mnt)
  if (entry === undefined) return `${mnt} is not mounted`
  const minor = entry.device.split(':')[1]
  if (!/^\d+$/.test(minor ?? '')) return `no minor number in ${entry.device}`
  const direct = `/sys/fs/fuse/connections/${minor}/abort`
  if (fs.existsSync(direct)) {
    fs.writeFileSync(direct, '1')
    return `aborted connection ${minor}`
  }
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c',
    'mount -t fusectl fusectl /sys/fs/fuse/connections && echo 1 > "/sys/fs/fuse/connections/$0/abort"', minor],
  { encoding: 'utf8', timeout: 10_000, killSignal: 'SIGKILL' })
  return r.status === 0 ? `aborted connection ${minor} (fusectl in a private namespace)` : `abort of ${minor} failed: ${r.stderr}`
}

/** The state letter of a process (R, S, D, ...), or '-' once it is gone. */
function procState (pid: number | undefined): string {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[0]
  } catch { return '-' }
}

// ---------------------------------------------------------------- defect 5

/**
 * A writer ('w': 4 KiB at random offsets, through one name) or a reader ('r': the whole file
 * from offset 0, through another name) for `secs` seconds, each on a descriptor it keeps open. Prints its count of
 * operations at least every 100 ms while it makes progress, then "done N".
 */
const WORKER = `
const fs = require('fs')
const [role, file, secs] = process.argv.slice(1)
const SIZE = 1 << 20, BLOCK = 4096
const end = Date.now() + Number(secs) * 1000
let n = 0, last = 0
const say = s => fs.writeSync(1, s + '\\n')
try {
  const block = Buffer.alloc(BLOCK)
  const whole = Buffer.alloc(SIZE)
  const fd = fs.openSync(file, role === 'w' ? 'r+' : 'r')
  while (Date.now() < end) {
    if (role === 'w') {
      block.fill(n & 0xff)
      fs.writeSync(fd, block, 0, BLOCK, Math.floor(Math.random() * (SIZE - BLOCK)))
    } else {
      let got = 0
      for (let r; got < SIZE && (r = fs.readSync(fd, whole, got, SIZE - got, got)) > 0;) got += r
      if (got !== SIZE) throw new Error('read ' + got + ' bytes')
    }
    n++
    if (Date.now() - last >= 100) { say(String(n)); last = Date.now() }
  }
  say('done ' + n)
} catch (e) {
  say('error ' + (e.code || e.message))
  process.exit(1)
}
`

interface Worker { name: string, child: ChildProcess, count: number, lastChange: number, done: boolean, error?: string }

describe('hard links under concurrent writers and readers (defect 5)', () => {
  let v: Vol
  const workers: Worker[] = []
  beforeAll(() => { v = makeVolume(); mount(v) })
  afterEach(async () => {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL')
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) await new Promise(resolve => w.child.once('exit', resolve))
  })
  afterAll(async () => { await cleanup(v) })

  it('4 writers through a_i and 4 readers through hard link b_i keep making progress; the mount never deadlocks', async () => {
    const PAIRS = 4
    const SECS = Number(process.env.SEALFS_DEADLOCK_SECS ?? 30)
    const STALL_MS = 10_000
    for (let i = 0; i < PAIRS; i++) {
      fs.writeFileSync(path.join(v.mnt, `a${i}`), Buffer.alloc(1 << 20, i))
      fs.linkSync(path.join(v.mnt, `a${i}`), path.join(v.mnt, `b${i}`))
    }
    const start = Date.now()
    for (let i = 0; i < PAIRS; i++) {
      for (const [role, name] of [['w', `a${i}`], ['r', `b${i}`]]) {
        const child = spawn(process.execPath, ['-e', WORKER, role, path.join(v.mnt, name), String(SECS)], { stdio: ['ignore', 'pipe', 'pipe'] })
        const w: Worker = { name: `${role === 'w' ? 'writer' : 'reader'} ${name}`, child, count: 0, lastChange: Date.now(), done: false }
        let buf = ''
        child.stdout!.on('data', d => {
          buf += d.toString()
          const lines = buf.split('\n')
          buf = lines.pop()!
          for (const l of lines) {
            if (l.startsWith('done ')) { w.done = true; w.count = Number(l.slice(5)) } else if (l.startsWith('error ')) w.error = l.slice(6)
            else if (Number(l) > w.count) { w.count = Number(l); w.lastChange = Date.now() }
          }
        })
        child.stderr!.on('data', d => { w.error = (w.error ?? '') + d.toString() })
        workers.push(w)
      }
    }
    // The watchdog: this process never touches the mount while the workers run, so it cannot
    // get stuck itself; a worker without progress for 10 s is a deadlock.
    let stalled: Worker[] = []
    const running = (w: Worker): boolean => w.child.exitCode === null && w.child.signalCode === null
    while (workers.some(running)) {
      await sleep(250)
      stalled = workers.filter(w => running(w) && !w.done && Date.now() - w.lastChange > STALL_MS)
      if (stalled.length > 0) break
      if (Date.now() - start > (SECS + 40) * 1000) break  // never reached: a stall is seen first
    }
    const report = workers.map(w => `${w.name}: ${w.count} ops, ${w.done ? 'done' : `state ${procState(w.child.pid)}`}${w.error !== undefined ? `, ${w.error.trim()}` : ''}`).join('\n  ')
    if (stalled.length > 0) {
      const aborted = abortConnection(v.mnt)  // so the workers and the unmount can return
      console.error(`deadlock after ${((Date.now() - start) / 1000).toFixed(1)} s; ${aborted}:\n  ${report}`)
    } else {
      console.log(`${PAIRS} pairs for ${((Date.now() - start) / 1000).toFixed(1)} s:\n  ${report}`)
    }
    expect(stalled.map(w => w.name), `no progress for ${STALL_MS / 1000} s (deadlock):\n  ${report}`).toEqual([])
    expect(workers.filter(w => !w.done || w.error !== undefined).map(w => w.name), report).toEqual([])
    // Both names still show the same file.
    for (let i = 0; i < PAIRS; i++) {
      expect(fs.readFileSync(path.join(v.mnt, `b${i}`)).equals(fs.readFileSync(path.join(v.mnt, `a${i}`)))).toBe(true)
    }
  }, 90_000)
})

// ---------------------------------------------------------------- defects 7 and 8

describe('names as bytes and long paths (defects 7 and 8)', () => {
  let v: Vol
  let plain: string
  beforeAll(() => { v = makeVolume(); plain = plainBeside(v); mount(v) })
  afterAll(async () => { await cleanup(v) })

  /** Names, contents, listings and a symlink target holding bytes that are not UTF-8, in `root`/nonutf8. */
  function nonUtf8 (root: string): Record<string, unknown> {
    const dir = path.join(root, 'nonutf8')
    fs.mkdirSync(dir)
    const p = (s: string, ...bytes: number[]): Buffer => Buffer.concat([Buffer.from(`${dir}/${s}`), Buffer.from(bytes)])
    const names = (): string[] => (fs.readdirSync(dir, { encoding: 'buffer' })).map(b => b.toString('hex')).sort()
    const out: Record<string, unknown> = {}
    /** The result of a step, or its error code: the comparison then shows every difference. */
    const t = (f: () => unknown): unknown => { try { return f() ?? 'ok' } catch (e) { return (e as NodeJS.ErrnoException).code ?? String(e) } }
    fs.writeFileSync(p('report-', 0xe8), 'the report with e8')
    fs.writeFileSync(p('report-', 0xe9), 'the other one, e9')
    out.e8 = t(() => fs.readFileSync(p('report-', 0xe8), 'utf8'))
    out.e9 = t(() => fs.readFileSync(p('report-', 0xe9), 'utf8'))
    out.distinctInodes = t(() => fs.statSync(p('report-', 0xe8)).ino !== fs.statSync(p('report-', 0xe9)).ino)
    out.listed = t(names)
    // A symlink with a non-UTF-8 name and target.
    out.symlink = t(() => fs.symlinkSync(Buffer.from([0x74, 0x2d, 0xe8, 0xff, 0x2d, 0xc3]), p('link-', 0xfe)))
    out.target = t(() => fs.readlinkSync(p('link-', 0xfe), { encoding: 'buffer' }).toString('hex'))
    out.listedWithLink = t(names)
    // Rename and unlink by byte names; the twin stays.
    out.rename = t(() => fs.renameSync(p('report-', 0xe8), p('moved-', 0xe8, 0x80)))
    out.afterRename = t(names)
    out.moved = t(() => fs.readFileSync(p('moved-', 0xe8, 0x80), 'utf8'))
    out.unlink = t(() => fs.unlinkSync(p('report-', 0xe9)))
    out.afterUnlink = t(names)
    // A directory with a non-UTF-8 name holding a file.
    out.mkdir = t(() => fs.mkdirSync(p('dir-', 0xa0)))
    out.inner = t(() => fs.writeFileSync(Buffer.concat([p('dir-', 0xa0), Buffer.from('/inner-'), Buffer.from([0xf0])]), 'inner'))
    out.innerListed = t(() => fs.readdirSync(p('dir-', 0xa0), { encoding: 'buffer' }).map(b => b.toString('hex')))
    return out
  }

  it('two names differing only in a non-UTF-8 byte are two files; names and symlink targets round-trip as bytes', () => {
    const expected = nonUtf8(plain)
    const got = nonUtf8(v.mnt)
    const hex = (s: string, ...bytes: number[]): string => Buffer.concat([Buffer.from(s), Buffer.from(bytes)]).toString('hex')
    expect(expected.listed).toEqual([hex('report-', 0xe8), hex('report-', 0xe9)])  // the plain directory as the reference
    expect(got).toEqual(expected)  // every step, as the plain directory did it
    expect(got.listed).toEqual([hex('report-', 0xe8), hex('report-', 0xe9)])
    expect(got.target).toBe('742de8ff2dc3')
    fs.rmSync(path.join(v.mnt, 'nonutf8'), { recursive: true })
  })

  it('xattr names with non-UTF-8 bytes are distinct and round-trip as bytes', () => {
    const run = (root: string): unknown => py(ERR + `
d = sys.argv[1].encode() + b'/xnonutf8'
os.mkdir(d)
p = d + b'/f'
open(p, 'w').write('x')
out = [e(lambda: os.setxattr(p, b'user.tag-\\xe8', b'one')), e(lambda: os.setxattr(p, b'user.tag-\\xe9', b'two'))]
out.append(sorted(os.fsencode(n).hex() for n in os.listxattr(p)))
out.append(e(lambda: os.getxattr(p, b'user.tag-\\xe8').decode()))
out.append(e(lambda: os.getxattr(p, b'user.tag-\\xe9').decode()))
out.append(e(lambda: os.removexattr(p, b'user.tag-\\xe8')))
out.append(sorted(os.fsencode(n).hex() for n in os.listxattr(p)))
print(json.dumps(out))`, [root])
    const expected = run(plain)
    expect((expected as unknown[])[3]).toBe('one')  // the plain directory as the reference
    expect(run(v.mnt)).toEqual(expected)
  })

  /**
   * Nested directories of N-byte names, built one level at a time relative to the parent's
   * descriptor, as deep as a 4,095-byte path allows (PATH_MAX less its NUL); then, at the
   * deepest level, every operation by a 4,095-byte path relative to a descriptor of `root`
   * (the last component takes the bytes left over).
   */
  const LONG_PATHS = ERR + `
root, N = sys.argv[1], int(sys.argv[2])
rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
k = (4095 - 1) // (N + 1)
L = 4095 - k * (N + 1)
dirs = [('d%02d-' % i).ljust(N, 'x') for i in range(k)]
base = '/'.join(dirs)
def p(c): return base + '/' + c * L
out = {'lengths': [len(p('f')), len(base), L]}
fd = rfd
built = 0
for d in dirs:
    r = e(lambda: os.mkdir(d, 0o755, dir_fd=fd))
    if r != 'ok':
        out['built'] = ['failed at depth %d, %d bytes' % (built + 1, len('/'.join(dirs[:built + 1]))), r]
        break
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    built += 1
else:
    out['built'] = 'ok'
deep = fd
def create():
    f = os.open(p('f'), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=rfd)
    os.write(f, b'deep down'); os.close(f)
def readback():
    f = os.open(p('f'), os.O_RDONLY, dir_fd=rfd)
    try: return os.read(f, 100).decode()
    finally: os.close(f)
out['mkdir'] = e(lambda: os.mkdir(p('m'), 0o755, dir_fd=rfd))
out['create'] = e(create)
out['read'] = e(readback)
out['stat'] = e(lambda: os.stat(p('f'), dir_fd=rfd).st_size)
out['rename'] = e(lambda: os.rename(p('f'), p('g'), src_dir_fd=rfd, dst_dir_fd=rfd))
out['link'] = e(lambda: os.link(p('g'), p('h'), src_dir_fd=rfd, dst_dir_fd=rfd))
out['nlink'] = e(lambda: os.stat(p('h'), dir_fd=rfd).st_nlink)
out['symlink'] = e(lambda: os.symlink('t' * 200, p('s'), dir_fd=rfd))
out['readlink'] = e(lambda: len(os.readlink(p('s'), dir_fd=rfd)))
out['listing'] = e(lambda: sorted(n[0] for n in os.listdir(deep))) if built == len(dirs) else 'not built'
out['unlink'] = [e(lambda: os.unlink(p(c), dir_fd=rfd)) for c in 'ghs']
out['rmdir'] = e(lambda: os.rmdir(p('m'), dir_fd=rfd))
out['empty'] = e(lambda: os.listdir(deep)) if built == len(dirs) else 'not built'
out['rmtree'] = e(lambda: shutil.rmtree(dirs[0], dir_fd=rfd))
print(json.dumps(out))`

  // 175 bytes is the longest name whose encrypted form (base64url of tag and name) still fits
  // in one backing name, so the backing path is about 1.45 times the plaintext path; longer
  // names go to short hashed backing names, which hides a whole-path limit.
  for (const [n, what] of [[175, 'names that encrypt to 255 bytes'], [255, '255-byte names (hashed backing names)']] as const) {
    it(`a 4,095-byte path of ${what}: mkdir, create, write, read, rename, link, symlink, unlink and rmdir at the deepest level`, () => {
      const expected = py(LONG_PATHS, [plain, String(n)]) as Record<string, unknown>
      expect((expected.lengths as number[])[0]).toBe(4095)
      expect(expected.built).toBe('ok')  // the plain directory as the reference
      expect(expected.read).toBe('deep down')
      const got = py(LONG_PATHS, [v.mnt, String(n)])
      expect(got).toEqual(expected)
    })
  }
})

// ---------------------------------------------------------------- defect 6

/** Whether loop devices and mkfs.xfs are there; otherwise why not. */
function xfsUnavailable (): string | null {
  if (spawnSync('sh', ['-c', 'command -v mkfs.xfs']).status !== 0) return 'mkfs.xfs is missing (Debian package xfsprogs)'
  if (!fs.existsSync('/dev/loop-control')) return '/dev/loop-control is missing: no loop devices here'
  const r = spawnSync('losetup', ['--find'], { encoding: 'utf8' })
  if (r.status !== 0) return `losetup --find fails: ${r.stderr.trim()}`
  if (!fs.readFileSync('/proc/filesystems', 'utf8').includes('\txfs\n')) {
    const m = spawnSync('modprobe', ['xfs'])
    if (m.status !== 0 && !fs.readFileSync('/proc/filesystems', 'utf8').includes('\txfs\n')) return 'the kernel has no XFS'
  }
  return null
}

describe('a cipher dir on XFS with 64-bit inode numbers (defect 6)', () => {
  const why = xfsUnavailable()
  let base: string
  let loop: string | undefined
  let xfs: string
  let v: Vol | undefined

  beforeAll(() => {
    if (why !== null) return
    base = tempDir('xfs')
    const img = path.join(base, 'xfs.img')
    xfs = path.join(base, 'xfs')
    fs.mkdirSync(xfs)
    // 5 TiB, sparse (about 65 MB on disk): 1 KiB blocks make more than 2^32 blocks (statfs
    // counts above 32 bits), and 5 allocation groups of 2^30 blocks give inode numbers of
    // AG n about n × 2^31, so directories in AG 2 and up (XFS spreads new directories over
    // the AGs) and the files in them have inode numbers above 2^32.
    fs.closeSync(fs.openSync(img, 'w'))
    fs.truncateSync(img, 5 * 2 ** 40)
    const mkfs = spawnSync('mkfs.xfs', ['-q', '-K', '-b', 'size=1024', '-l', 'size=64m', img], { encoding: 'utf8' })
    if (mkfs.status !== 0) throw new Error(`mkfs.xfs: ${mkfs.stderr}`)
    const lo = spawnSync('losetup', ['--find', '--show', img], { encoding: 'utf8' })
    if (lo.status !== 0) throw new Error(`losetup: ${lo.stderr}`)
    loop = lo.stdout.trim()
    const m = spawnSync('mount', ['-t', 'xfs', '-o', 'inode64', loop, xfs], { encoding: 'utf8' })
    if (m.status !== 0) throw new Error(`mount of the XFS image: ${m.stderr}`)
    v = makeVolume({ cipherParent: xfs })
    mount(v)
  }, 60_000)

  afterAll(async () => {
    try {
      if (v !== undefined) await cleanup(v)
    } finally {
      if (base !== undefined) {
        try {
          await takeDown(base)  // unmounts the XFS
        } finally {
          if (loop !== undefined) spawnSync('losetup', ['-d', loop])
          await removeTree(base)
        }
      }
    }
  })

  /** Backing entries of the cipher dir by inode number. */
  function backingByIno (): Map<bigint, string> {
    const out = new Map<bigint, string>()
    const visit = (d: string): void => {
      for (const n of fs.readdirSync(d)) {
        const p = path.join(d, n)
        const st = fs.lstatSync(p, { bigint: true })
        out.set(st.ino, p)
        if (st.isDirectory()) visit(p)
      }
    }
    visit(v!.cipher)
    return out
  }

  it('st_ino through the mount is the backing entry\'s, above 2^32 too; distinct files have distinct st_ino; tar and cp -a make no false hard links', async (ctx) => {
    if (why !== null) { console.warn(`SKIPPED st_ino above 2^32: ${why}`); ctx.skip(); return }
    const tree = path.join(v!.mnt, 'tree')
    fs.mkdirSync(tree)
    // Each file with a second name (l<f>): tar and cp -a look for hard links among files
    // with more than one link, by st_ino, and a false match merges two distinct files.
    const names: string[] = []
    for (let d = 0; d < 12; d++) {
      fs.mkdirSync(path.join(tree, `d${d}`))
      names.push(`d${d}`)
      for (let f = 0; f < 4; f++) {
        fs.writeFileSync(path.join(tree, `d${d}`, `f${f}`), `file ${d}/${f}\n`)
        fs.linkSync(path.join(tree, `d${d}`, `f${f}`), path.join(tree, `d${d}`, `l${f}`))
        names.push(`d${d}/f${f}`)
      }
    }
    const backing = backingByIno()
    const high = [...backing.keys()].filter(i => i > 2n ** 32n)
    expect(high.length, 'the XFS image gave no inode numbers above 2^32: the test proves nothing').toBeGreaterThan(0)
    const seen = new Map<bigint, string>()
    const wrong: string[] = []
    let highSeen = 0
    for (const name of names) {
      const ino = fs.lstatSync(path.join(tree, name), { bigint: true }).ino
      if (!backing.has(ino)) wrong.push(`${name}: st_ino ${ino} is no backing entry's`)
      if (seen.has(ino)) wrong.push(`${name}: st_ino ${ino} is also ${seen.get(ino)}'s`)
      seen.set(ino, name)
      if (ino > 2n ** 32n) highSeen++
    }
    // Soft: the copies below are checked (and reported) too when this fails.
    expect.soft(wrong, `backing inode numbers above 2^32: ${high.length}`).toEqual([])
    expect.soft(highSeen, 'no st_ino above 2^32 through the mount').toBeGreaterThan(0)
    // Copies by cp -a and by tar: every file its own, with its own second name and no other.
    const check = (copy: string): string[] => {
      const bad: string[] = []
      for (let d = 0; d < 12; d++) {
        for (let f = 0; f < 4; f++) {
          const [a, b] = [`f${f}`, `l${f}`].map(n => path.join(copy, 'tree', `d${d}`, n))
          const [sa, sb] = [a, b].map(p => fs.statSync(p, { throwIfNoEntry: false }))
          if (sa === undefined || sb === undefined) { bad.push(`d${d}/f${f}: not copied`); continue }
          const body = fs.readFileSync(a, 'utf8')
          if (sa.ino !== sb.ino || sa.nlink !== 2 || body !== `file ${d}/${f}\n`) bad.push(`d${d}/f${f}: nlink ${sa.nlink}, ${sa.ino === sb.ino ? 'one file with' : 'not'} l${f}, holds ${JSON.stringify(body)}`)
        }
      }
      return bad
    }
    const byCp = path.join(v!.base, 'copy-cp')
    fs.mkdirSync(byCp)
    const cp = spawnSync('cp', ['-a', tree, byCp], { encoding: 'utf8', timeout: 60_000 })
    expect.soft(cp.status, `cp -a of the mount: ${cp.stderr}`).toBe(0)
    expect.soft(check(byCp), 'cp -a of the mount').toEqual([])
    const byTar = path.join(v!.base, 'copy-tar')
    fs.mkdirSync(byTar)
    const tar = spawnSync('sh', ['-c', 'tar -C "$0" -cf - tree | tar -C "$1" -xf -', v!.mnt, byTar], { encoding: 'utf8', timeout: 60_000 })
    expect.soft(tar.status, `tar of the mount: ${tar.stderr}`).toBe(0)
    expect(check(byTar), 'tar of the mount').toEqual([])
  }, 120_000)

  it('statfs counts through the mount are the backing filesystem\'s, above 2^32 blocks too', async (ctx) => {
    if (why !== null) { console.warn(`SKIPPED statfs above 2^32: ${why}`); ctx.skip(); return }
    const pick = (s: fs.BigIntStatsFs): Record<string, bigint> => ({ bsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree })
    let last: unknown
    // Free counts move while the daemon writes its index: equal once the backing is the same before and after.
    for (let i = 0; i < 20; i++) {
      const before = pick(fs.statfsSync(v!.cipher, { bigint: true }))
      const through = pick(fs.statfsSync(v!.mnt, { bigint: true }))
      const after = pick(fs.statfsSync(v!.cipher, { bigint: true }))
      expect(before.blocks).toBeGreaterThan(2n ** 32n)
      last = { backing: before, mount: through }
      if (JSON.stringify(before, (_k, x) => typeof x === 'bigint' ? String(x) : x) === JSON.stringify(after, (_k, x) => typeof x === 'bigint' ? String(x) : x)) {
        expect(through).toEqual(before)
        return
      }
      await sleep(300)
    }
    throw new Error(`the backing filesystem's counts never held still: ${JSON.stringify(last, (_k, x) => typeof x === 'bigint' ? String(x) : x)}`)
  }, 60_000)
})
