import { spawn, spawnSync } from 'child_process'
import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { afterEach, describe, expect, it } from 'vitest'
import { HEADER_BYTES } from '../src/volume/file-header'
import { cleanup, fsckJson, isMounted, makeVolume, mount, py, sealfs, sleep, umount, Vol } from './helpers'

/**
 * kill -9 of the daemon at random moments of a busy workload (writes, appends, overwrites,
 * truncates, creates, renames, mkdir and rmdir, with fsyncs): after a remount every file
 * that was fsynced and not touched since reads back exactly, every directory can be listed,
 * written and removed, and fsck repairs whatever it finds (a few rounds here; set
 * SEALFS_CRASH_ROUNDS for more, SEALFS_CRASH_SEED to replay).
 */
const ROUNDS = Number(process.env.SEALFS_CRASH_ROUNDS ?? 4)
const SEED = Number(process.env.SEALFS_CRASH_SEED ?? 1)

/** The workload: runs until the mount dies; `durable` (outside the mount) lists files fsynced and untouched since, one JSON line per change. */
const WORKLOAD = `
import os, sys, random, json, hashlib, errno
m, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = random.Random(seed)
out = open(log, 'a', buffering=1)
def note(kind, p, data=None):
    out.write(json.dumps({'k': kind, 'p': p, 'h': hashlib.sha256(data).hexdigest() if data is not None else None}) + '\\n')
dirs = ['w%d' % seed, 'w%d/a' % seed, 'w%d/b' % seed]
files = {}
try:
    for d in dirs: os.makedirs(os.path.join(m, d), exist_ok=True)
    for step in range(100000):
        d = r.choice(dirs)
        k = r.randrange(12)
        if k < 4 or not files:                                   # write a file whole, fsync it: durable
            p = os.path.join(d, 'f%d' % r.randrange(40))
            data = os.urandom(r.choice([1, 100, 4096, 5000, 30000, 70000]))
            note('dirty', p)
            with open(os.path.join(m, p), 'wb') as f:
                f.write(data); f.flush(); os.fsync(f.fileno())
            files[p] = data
            note('durable', p, data)
        else:
            p = r.choice(sorted(files))
            full = os.path.join(m, p)
            note('dirty', p)
            if k < 6:                                            # append, fsync: durable again
                extra = os.urandom(r.randrange(1, 9000))
                with open(full, 'ab') as f:
                    f.write(extra); f.flush(); os.fsync(f.fileno())
                files[p] += extra
                note('durable', p, files[p])
            elif k < 8:                                          # overwrite inside, no fsync
                with open(full, 'r+b') as f:
                    f.seek(r.randrange(len(files[p]) + 1)); f.write(os.urandom(r.randrange(1, 9000)))
                del files[p]
            elif k < 9:                                          # truncate, no fsync
                os.truncate(full, r.randrange(len(files[p]) + 5000))
                del files[p]
            elif k < 10:                                         # rename to another directory
                q = os.path.join(r.choice(dirs), 'f%d' % r.randrange(40))
                if q != p:
                    note('dirty', q)
                    os.rename(full, os.path.join(m, q))
                    files.pop(q, None)
                    files[q] = files.pop(p)
                    note('durable', q, files[q])                  # data fsynced before, name now moved
                else:
                    note('durable', p, files[p])
            elif k < 11:                                         # unlink
                os.unlink(full)
                del files[p]
            else:                                                # a directory made and removed
                t = os.path.join(m, d, 'tmp%d' % step)
                os.mkdir(t)
                with open(os.path.join(t, 'x'), 'w') as f: f.write('x')
                os.unlink(os.path.join(t, 'x'))
                os.rmdir(t)
                note('durable', p, files[p])
except OSError as e:
    if e.errno not in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO, errno.ENOENT): raise
`

/** After the remount: what each durable file holds, and every directory listed, written to and emptied. */
const CHECK = `
import os, sys, json, hashlib
m, want = sys.argv[1], json.loads(sys.argv[2])
one_of = json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
bad = []
def holds(p, h):
    if h == 'absent': return not os.path.lexists(os.path.join(m, p))
    try: return hashlib.sha256(open(os.path.join(m, p), 'rb').read()).hexdigest() == h
    except OSError: return False
def what(p):
    try:
        b = open(os.path.join(m, p), 'rb').read()
        return '%d bytes, %s' % (len(b), b[:8] + b'...' + b[-8:])
    except OSError as e:
        return os.strerror(e.errno)
if one_of and not any(holds(p, h) for p, h in one_of):
    bad.append('none of %s holds its contents (%s)' % (', '.join(p for p, h in one_of), '; '.join(what(p) for p, h in one_of)))
for p, h in sorted(want.items()):
    try:
        got = hashlib.sha256(open(os.path.join(m, p), 'rb').read()).hexdigest()
        if got != h: bad.append('%s: different contents' % p)
    except OSError as e:
        bad.append('%s: %s' % (p, os.strerror(e.errno)))
def unlistable(e):
    bad.append('%s: cannot be listed: %s' % (e.filename, os.strerror(e.errno)))
for root, ds, fs in os.walk(m, onerror=unlistable):
    for n in fs:
        try: open(os.path.join(root, n), 'rb').read(1)
        except OSError as e:
            if e.errno != 5: bad.append('%s: %s' % (os.path.join(root, n), os.strerror(e.errno)))
    probe = os.path.join(root, 'probe-after-crash')
    try:
        with open(probe, 'w') as f: f.write('p')
        os.unlink(probe)
    except OSError as e:
        bad.append('%s: writing in it: %s' % (root, os.strerror(e.errno)))
print(json.dumps(bad))
`

interface Problem { path: string, what: string, repaired: boolean }

/**
 * The calls of the daemon that can change the cipher dir (openat: also O_CREAT). Not write(2):
 * the event loop's wake-ups use it, which would make the steps depend on timing.
 */
const MUTATING = 'openat,mkdirat,unlinkat,renameat,renameat2,linkat,symlinkat,pwrite64,pwritev,ftruncate,fsync,fdatasync,fallocate'
/** Invocations of each call killed at (all of them: SEALFS_INJECT_STEPS=99). */
const MAX_STEPS = Number(process.env.SEALFS_INJECT_STEPS ?? 1)
const LONG = 'L'.repeat(200)

interface CrashOp {
  name: string
  /** Makes what the operation works on, in `dir` (mounted). */
  setup: (dir: string) => void
  run: (dir: string) => void
  /** Files (relative to the mount) and their sha256 that must survive the crash whatever step it hit. */
  durable: (dir: string) => Record<string, string>
  /** Names one of which must hold the file the operation moves, and its sha256. */
  oneOf?: (dir: string) => Array<[string, string]>
}

/** In a oneOf: the name must not exist. */
const ABSENT = 'absent'
const sha = (b: Buffer | string): string => crypto.createHash('sha256').update(b).digest('hex')
const KEPT = Buffer.alloc(10000, 'k')

/** Each operation's set-up keeps `kept` (a file it never touches) beside what it changes. */
const CRASH_OPS: CrashOp[] = [
  { name: 'mkdir', setup: d => fs.writeFileSync(path.join(d, 'kept'), KEPT), run: d => fs.mkdirSync(path.join(d, 'new')), durable: d => ({ [`${d}/kept`]: sha(KEPT) }) },
  { name: 'rmdir', setup: d => { fs.writeFileSync(path.join(d, 'kept'), KEPT); fs.mkdirSync(path.join(d, 'old')) }, run: d => fs.rmdirSync(path.join(d, 'old')), durable: d => ({ [`${d}/kept`]: sha(KEPT) }) },
  { name: 'create', setup: d => fs.writeFileSync(path.join(d, 'kept'), KEPT), run: d => fs.writeFileSync(path.join(d, 'new'), 'new file'), durable: d => ({ [`${d}/kept`]: sha(KEPT) }), oneOf: d => [[`${d}/new`, ABSENT], [`${d}/new`, sha('')], [`${d}/new`, sha('new file')]] },
  { name: 'unlink', setup: d => { fs.writeFileSync(path.join(d, 'kept'), KEPT); fs.writeFileSync(path.join(d, 'gone'), 'x') }, run: d => fs.unlinkSync(path.join(d, 'gone')), durable: d => ({ [`${d}/kept`]: sha(KEPT) }) },
  { name: 'link', setup: d => fs.writeFileSync(path.join(d, 'kept'), KEPT), run: d => fs.linkSync(path.join(d, 'kept'), path.join(d, 'link')), durable: d => ({ [`${d}/kept`]: sha(KEPT) }) },
  { name: 'rename of a file', setup: d => fs.writeFileSync(path.join(d, 'kept'), KEPT), run: d => fs.renameSync(path.join(d, 'kept'), path.join(d, 'moved')), durable: () => ({}), oneOf: d => [[`${d}/kept`, sha(KEPT)], [`${d}/moved`, sha(KEPT)]] },
  { name: 'rename of a long name to a short one', setup: d => fs.writeFileSync(path.join(d, LONG), KEPT), run: d => fs.renameSync(path.join(d, LONG), path.join(d, 'short')), durable: () => ({}), oneOf: d => [[`${d}/${LONG}`, sha(KEPT)], [`${d}/short`, sha(KEPT)]] },
  { name: 'rename of a directory over an empty one (mv -T)', setup: d => { fs.mkdirSync(path.join(d, 'src')); fs.writeFileSync(path.join(d, 'src', 'kept'), KEPT); fs.mkdirSync(path.join(d, 'dst')) }, run: d => fs.renameSync(path.join(d, 'src'), path.join(d, 'dst')), durable: () => ({}), oneOf: d => [[`${d}/src/kept`, sha(KEPT)], [`${d}/dst/kept`, sha(KEPT)]] },
  // A new file is absent, empty or whole.
  { name: 'append to a new file', setup: d => fs.writeFileSync(path.join(d, 'kept'), KEPT), run: d => fs.appendFileSync(path.join(d, 'log'), 'x'.repeat(100)), durable: d => ({ [`${d}/kept`]: sha(KEPT) }), oneOf: d => [[`${d}/log`, ABSENT], [`${d}/log`, sha('')], [`${d}/log`, sha('x'.repeat(100))]] },
  // Whole chunks overwritten in one pwrite: old or new, never a mix.
  { name: 'write over whole chunks', setup: d => { fs.writeFileSync(path.join(d, 'kept'), KEPT); fs.writeFileSync(path.join(d, 'w'), Buffer.alloc(16384, 'o')) }, run: d => { const fd = fs.openSync(path.join(d, 'w'), 'r+'); try { fs.writeSync(fd, Buffer.alloc(8192, 'n'), 0, 8192, 4096) } finally { fs.closeSync(fd) } }, durable: d => ({ [`${d}/kept`]: sha(KEPT) }), oneOf: d => [[`${d}/w`, sha(Buffer.alloc(16384, 'o'))], [`${d}/w`, sha(Buffer.concat([Buffer.alloc(4096, 'o'), Buffer.alloc(8192, 'n'), Buffer.alloc(4096, 'o')]))]] }
,
  // The partly filled chunk is rewritten in place with one pwrite: a kill before it or after
  // it leaves old or new bytes, never a torn chunk (a kill inside a pwrite, or a power cut,
  // can: docs/SECURITY.md, "Crash behaviour").
  {
    name: 'append to a partly filled chunk',
    setup: d => { fs.writeFileSync(path.join(d, 'log'), Buffer.alloc(1000, 'a')) },
    run: d => fs.appendFileSync(path.join(d, 'log'), Buffer.alloc(5000, 'b')),
    durable: () => ({}),
    // The kernel sends the append as two requests, to the page boundary and on: a kill
    // between them leaves the first done (a write in flight may be cut short, as on any disk).
    oneOf: d => [0, 3096, 5000].map(n => [`${d}/log`, sha(Buffer.concat([Buffer.alloc(1000, 'a'), Buffer.alloc(n, 'b')]))] as [string, string])
  }
]

/** strace on the volume's daemon (every thread), once attached. */
async function traceDaemon (v: Vol, args: string[], out: string): Promise<{ exited: Promise<unknown>, stop: () => Promise<string> }> {
  const tracer = spawn('strace', ['-f', '-o', out, ...args, '-p', String(daemonPid(v))], { stdio: ['ignore', 'ignore', 'pipe'] })
  const exited = new Promise(resolve => { tracer.once('exit', resolve); tracer.once('error', resolve) })
  let attached = ''
  tracer.stderr.on('data', (d: Buffer) => { attached += d.toString() })
  for (let i = 0; i < 250 && !/attached/.test(attached) && tracer.exitCode === null; i++) await sleep(20)
  if (!/attached/.test(attached)) {
    tracer.kill('SIGKILL')  // never left to attach later, armed
    await exited
    expect(attached, 'strace did not attach to the daemon').toMatch(/attached/)
  }
  return {
    exited,
    stop: async () => {
      if (tracer.exitCode === null) tracer.kill('SIGINT')
      await exited
      return fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : ''
    }
  }
}

function daemonPid (v: Vol): number {
  const pid = Number(fs.readFileSync(path.join(v.cipher, 'sealfs.lock'), 'utf8').trim())
  // Never 0 or a negative: process.kill would signal a whole process group.
  if (!Number.isInteger(pid) || pid <= 1) throw new Error(`no daemon pid in sealfs.lock (${pid})`)
  return pid
}

describe('kill -9 of the daemon', () => {
  const vols: Vol[] = []
  afterEach(async () => { for (const v of vols.splice(0)) await cleanup(v) })

  it(`at random moments of a busy workload loses nothing fsynced, and leaves every directory usable (${ROUNDS} rounds, seed ${SEED})`, async () => {
    const v = makeVolume()
    vols.push(v)
    const durable: Record<string, string> = {}
    const log = path.join(v.base, 'durable.log')
    let consumed = 0
    const readLog = (): void => {
      const lines = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n') : []
      for (const line of lines.slice(consumed, -1)) {
        const e = JSON.parse(line) as { k: string, p: string, h: string | null }
        if (e.k === 'dirty') delete durable[e.p]
        else durable[e.p] = e.h as string
      }
      consumed = Math.max(consumed, lines.length - 1)
    }
    let torn = 0
    let rng = SEED
    const next = (): number => { rng = (rng * 1103515245 + 12345) % 2147483648; return rng / 2147483648 }
    for (let round = 0; round < ROUNDS; round++) {
      mount(v)
      const pid = daemonPid(v)
      const workers = [0, 1].map(w => spawn('python3', ['-c', WORKLOAD, v.mnt, log, String(SEED * 100 + round * 10 + w)], { stdio: ['ignore', 'ignore', 'pipe'] }))
      const errors: string[] = []
      for (const w of workers) w.stderr.on('data', (d: Buffer) => errors.push(d.toString()))
      // The kill comes once both are at work (a slow start, under a sanitizer say, must not
      // turn the round into a crash before anything).
      const logged = (): number => fs.existsSync(log) ? fs.statSync(log).size : 0
      const before = logged()
      for (let i = 0; i < 250 && logged() === before; i++) await sleep(20)
      await sleep(100 + Math.floor(next() * 900))
      process.kill(pid, 'SIGKILL')
      await Promise.all(workers.map(w => new Promise(resolve => w.exitCode !== null ? resolve(null) : w.once('exit', resolve))))
      expect(errors.join(''), 'the workload failed other than by the crash').toBe('')
      spawnSync('umount', ['-l', v.mnt])
      expect(isMounted(v.mnt)).toBe(false)
      readLog()
      mount(v)
      try {
        const bad = py(CHECK, { args: [v.mnt, JSON.stringify(durable)] }) as string[]
        expect(bad, `round ${round}`).toEqual([])
      } finally {
        await umount(v)
      }
      // fsck --repair mends everything but the chunks a write in flight had torn: those are
      // only in files not fsynced since (the workload's own; counted, not failed).
      const repair = sealfs(['fsck', '--passfile', v.passfile, '--repair', '--json', v.cipher])
      const left = (JSON.parse(repair.stdout.trim()) as { problems: Problem[] }).problems.filter(p => !p.repaired)
      const inFlight = left.filter(p => /chunks? do(es)? not authenticate|last chunk is torn/.test(p.what) && durable[p.path.slice(1)] === undefined)
      expect(left.filter(p => !inFlight.includes(p)), `round ${round}: ${repair.stderr}`).toEqual([])
      torn += inFlight.length
      const check = sealfs(['fsck', '--passfile', v.passfile, '--json', v.cipher])
      expect((JSON.parse(check.stdout.trim()) as { problems: Problem[] }).problems.length, `round ${round}: ${check.stderr}`).toBe(inFlight.length)
    }
    process.stdout.write(`crash: ${ROUNDS} rounds, ${Object.keys(durable).length} durable files checked at the end; ${torn} files not fsynced were left with a torn chunk\n`)
  }, 600_000)

  /**
   * One operation at a time, the daemon killed at its k-th call that can change the cipher
   * dir (strace's syscall fault injection), for k = 1, 2, ... until the operation completes:
   * after each crash the volume mounts, the files set up before read back exactly, every
   * directory can be listed, written to and (where empty) removed, and fsck --repair leaves
   * nothing it cannot repair.
   */
  it.each(CRASH_OPS.map(o => [o.name, o] as const))('at every step of %s', async (_name, op) => {
    const v = makeVolume()
    vols.push(v)
    // Which calls the operation makes, and how many of each: traced once without a kill.
    const counts = new Map<string, number>()
    mount(v)
    try {
      const dry = path.join(v.mnt, 'dry')
      fs.mkdirSync(dry)
      op.setup(dry)
      await sleep(1100)  // the set-up's index rows are written first
      const tracer = await traceDaemon(v, ['-e', `trace=${MUTATING}`], path.join(v.base, 'dry.out'))
      let trace: string
      try {
        op.run(dry)
        await sleep(200)  // a close's RELEASE reaches the daemon after close(2) returns
      } finally {
        trace = await tracer.stop()
      }
      for (const line of trace.split('\n')) {
        const call = /^\d+ +(\w+)\(/.exec(line)?.[1]
        if (call !== undefined && MUTATING.split(',').includes(call)) counts.set(call, (counts.get(call) ?? 0) + 1)
      }
    } finally {
      await umount(v)
    }
    // strace counts each call on its own (the n-th openat, the n-th pwrite64): every step is
    // one call's n-th invocation. Each gets a directory of its own, all set up at once. (It
    // counts per thread too: past the first invocation, a step may land elsewhere or, where
    // no one thread makes that many, be skipped; CI kills at the first of each.)
    const plan = [...counts].flatMap(([call, n]) => Array.from({ length: Math.min(n, MAX_STEPS) }, (_, i) => [call, i + 1] as const))
    mount(v)
    try {
      for (const [call, k] of plan) {
        fs.mkdirSync(path.join(v.mnt, `${call}-${k}`))
        op.setup(path.join(v.mnt, `${call}-${k}`))
      }
    } finally {
      await umount(v)
    }
    const steps: string[] = []
    for (const [call, k] of plan) {
      const dir = path.join(v.mnt, `${call}-${k}`)
      mount(v)
      let killedAt: string | null = null
      try {
        const pid = daemonPid(v)
        const out = path.join(v.base, `inject-${call}-${k}.out`)
        const tracer = await traceDaemon(v, ['-e', `trace=${call}`, '-e', `inject=${call}:signal=KILL:when=${k}`], out)
        let died: boolean
        try {
          try {
            op.run(dir)
          } catch { /* the mount died under it */ }
          // strace ends with the daemon; if it is still there after a while, this run made fewer such calls.
          await Promise.race([tracer.exited, sleep(1500)])
          // Dead, or a zombie nobody reaps (a detached daemon's parent is gone).
          died = (() => { try { return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8')) } catch { return true } })()
        } finally {
          await tracer.stop()  // never left armed behind a failure
        }
        if (died) {
          const lines = fs.readFileSync(out, 'utf8').split('\n')
          killedAt = (lines[lines.findIndex(l => /\+\+\+ killed/.test(l)) - 1] ?? '?').replace(/^\d+ +/, '').slice(0, 160)
          steps.push(`${call} ${k}`)
        }
      } finally {
        if (killedAt === null) await umount(v)
        else spawnSync('umount', ['-l', v.mnt])
      }
      if (killedAt === null) continue
      mount(v)
      try {
        const rel = path.basename(dir)
        const bad = py(CHECK, { args: [v.mnt, JSON.stringify(op.durable(rel)), JSON.stringify(op.oneOf?.(rel) ?? [])] }) as string[]
        expect(bad, `${op.name}, killed at ${call} ${k} (${killedAt})`).toEqual([])
        // Every directory it left can be emptied and removed.
        py(`
import os, sys
for root, ds, fs in os.walk(sys.argv[1], topdown=False):
    for f in fs: os.unlink(os.path.join(root, f))
    for d in ds: os.rmdir(os.path.join(root, d))
os.rmdir(sys.argv[1])
print('null')`, { args: [dir] })
      } finally {
        await umount(v)
      }
      const repair = sealfs(['fsck', '--passfile', v.passfile, '--repair', v.cipher])
      expect([0, 21], `${op.name}, killed at ${call} ${k} (${killedAt}): ${repair.stderr}`).toContain(repair.status)
    }
    const check = sealfs(['fsck', '--passfile', v.passfile, v.cipher])
    expect(check.status, check.stderr).toBe(0)
    process.stdout.write(`${op.name}: ${plan.length} steps planned (${[...counts].map(([c, n]) => `${c} x${n}`).join(', ')}), killed at ${steps.length}\n`)
    expect(steps.length).toBeGreaterThan(0)
  }, 600_000)
})

/**
 * A kill -9 inside a write's pwrite leaves the run written up to a page boundary and old after
 * it: a chunk it kept part of no longer authenticates. Each case kills the daemon once the
 * write's data is on disk (but not the end of its journal record's life), then puts the old
 * bytes back from a page boundary on, as the kernel leaves a pwrite cut short; after the
 * remount the bytes the write did not cover read back as they were.
 */
interface TornCase {
  name: string
  setup: Buffer
  run: (file: string) => void
  /** The call the daemon is killed at (strace inject spec), once the run's data is written. */
  killAt: string
  /** What the killed call must look like (the journal record's magic being zeroed, say). */
  killedCall: RegExp
  /** Where the pwrite is cut: bytes of the backing file from here on are the old ones (0: not cut). */
  tearAt: number
  /** What the file reads after the remount: the bytes before the interrupted write. */
  after: Buffer
  /** A volume as made before end tags (its config without `endTags`). */
  untagged?: boolean
}

const OLD = crypto.randomBytes(3 * 4096 + 500)
const LOG = crypto.randomBytes(1000)
/** Two chunks whose backing file ends at 8202: its end tag [8182, 8202) straddles a page. */
const STRADDLE = crypto.randomBytes(8202 - 100 - 2 * 28 - 20)
const TORN_CASES: TornCase[] = [
  {
    // Chunk 1 lies at [4224, 8348) of the backing file; the kernel cut the pwrite at 8192.
    // (The main thread's first pwrite opens the write window: the end tag, rewritten.)
    name: 'an overwrite inside a chunk',
    setup: OLD,
    run: f => { const fd = fs.openSync(f, 'r+'); try { fs.writeSync(fd, Buffer.alloc(100, 'n'), 0, 100, 5000) } finally { fs.closeSync(fd) } },
    killAt: 'pwrite64:signal=KILL:when=4',
    killedCall: /^pwrite64\(\d+, "\\0\\0\\0\\0", 4, \d+/,
    tearAt: 8192,
    after: OLD
  },
  {
    // The append reseals chunk 0 ([100, 4224)) with its 1000 old bytes; cut at 4096.
    name: 'an append to a partly filled chunk',
    setup: LOG,
    run: f => fs.appendFileSync(f, Buffer.alloc(5000, 'b')),
    killAt: 'pwrite64:signal=KILL:when=3',
    killedCall: /^pwrite64\(\d+, "\\0\\0\\0\\0", 4, \d+/,
    tearAt: 4096,
    after: LOG
  },
  {
    // The truncate reseals chunk 1 with 4000 of its bytes ([4224, 8272)) and is killed before
    // it cuts the file; cut at 8192 too.
    name: 'a truncate inside a chunk',
    setup: OLD,
    run: f => fs.truncateSync(f, 8096),
    killAt: 'ftruncate:signal=KILL:when=1',
    killedCall: /^ftruncate\(/,
    tearAt: 8192,
    after: OLD
  },
  {
    // No chunk is kept: the append starts chunk 1 at 4224; without an end tag, only its last
    // chunk shows that the end it moved is torn. Cut at 8192.
    name: 'an append at a chunk boundary, in a volume without end tags',
    setup: OLD.subarray(0, 4096),
    run: f => fs.appendFileSync(f, Buffer.alloc(5000, 'b')),
    killAt: 'pwrite64:signal=KILL:when=3',
    killedCall: /^pwrite64\(\d+, "\\0\\0\\0\\0", 4, \d+/,
    tearAt: 8192,
    after: OLD.subarray(0, 4096),
    untagged: true
  },
  {
    // A write in place opens the file's write window: its end tag is rewritten first, bound to
    // the header's next nonce. The file's 2 chunks end at 8182, so the tag [8182, 8202)
    // straddles a page; the kernel cut its pwrite at 8192 (the kill: at the zeroing of the
    // record that journalled it, the main thread's third pwrite).
    name: 'an end tag rewritten across a page as a write window opens',
    setup: STRADDLE,
    run: f => { const fd = fs.openSync(f, 'r+'); try { fs.writeSync(fd, Buffer.alloc(50, 'w'), 0, 50, 100) } finally { fs.closeSync(fd) } },
    killAt: 'pwrite64:signal=KILL:when=3',
    killedCall: /^pwrite64\(\d+, "\\0\\0\\0\\0", 4, \d+/,
    tearAt: 8192,
    after: STRADDLE
  }
]

describe('a write cut short inside its pwrite (the write journal)', () => {
  const vols: Vol[] = []
  afterEach(async () => { for (const v of vols.splice(0)) await cleanup(v) })

  /** The one backing file of the volume's root that is not sealfs's own. */
  const backingFile = (v: Vol): string => {
    const names = fs.readdirSync(v.cipher).filter(n => !n.startsWith('sealfs.'))
    expect(names).toHaveLength(1)
    return path.join(v.cipher, names[0])
  }

  /** Kills the daemon at `c.killAt` while `c.run` runs; then tears the run's pwrite at c.tearAt. Returns the backing file. */
  async function crashAndTear (v: Vol, c: TornCase): Promise<string> {
    if (c.untagged === true) {
      const conf = path.join(v.cipher, 'sealfs.conf')
      const config = JSON.parse(fs.readFileSync(conf, 'utf8')) as Record<string, unknown>
      delete config.endTags
      delete config.writeWindows
      fs.writeFileSync(conf, JSON.stringify(config))
    }
    mount(v)
    let killedAt = ''
    try {
      fs.writeFileSync(path.join(v.mnt, 'f'), c.setup)
      await sleep(1100)  // the index rows are written first: no pwrite of the index during the run
      const backing = backingFile(v)
      const before = fs.readFileSync(backing)
      const pid = daemonPid(v)
      const out = path.join(v.base, 'inject.out')
      const call = c.killAt.split(':')[0]
      const tracer = await traceDaemon(v, ['-e', `trace=${call}`, '-e', `inject=${c.killAt}`], out)
      try {
        try { c.run(path.join(v.mnt, 'f')) } catch { /* the mount died under it */ }
        await Promise.race([tracer.exited, sleep(3000)])
      } finally {
        await tracer.stop()
      }
      // The call killed at: the last one begun (its line may be split, "unfinished ..." then "resumed").
      const lines = fs.readFileSync(out, 'utf8').split('\n')
      const killed = lines.findIndex(l => /\+\+\+ killed/.test(l))
      for (let i = killed - 1; i >= 0 && killedAt === ''; i--) {
        if (lines[i].includes(`${call}(`)) killedAt = lines[i].replace(/^\d+ +/, '')  // the last one made
      }
      // Dead, or a zombie nobody reaps (a detached daemon's parent is gone).
      const died = (() => { try { return /^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8')) } catch { return true } })()
      expect(died, 'the daemon was not killed').toBe(true)
      expect(killedAt, 'killed at another call than planned').toMatch(c.killedCall)
      // What a pwrite cut at c.tearAt leaves: the new bytes before it, the old ones after.
      const after = fs.readFileSync(backing)
      expect(after.equals(before), 'the write reached the backing file').toBe(false)
      if (c.tearAt === 0) return backing  // not torn: the write finished, only its record is left
      const torn = before.length > c.tearAt ? Buffer.concat([after.subarray(0, c.tearAt), before.subarray(c.tearAt)]) : after.subarray(0, c.tearAt)
      fs.writeFileSync(backing, torn)
      return backing
    } finally {
      spawnSync('umount', ['-l', v.mnt])
    }
  }

  it.each(TORN_CASES.map(c => [c.name, c] as const))('%s: the bytes it did not cover read back as before', async (_name, c) => {
    const v = makeVolume()
    vols.push(v)
    await crashAndTear(v, c)
    mount(v)
    try {
      expect(fs.readFileSync(path.join(v.mnt, 'f')).equals(c.after)).toBe(true)
      // And it takes writes again, at its end as before the crash.
      fs.appendFileSync(path.join(v.mnt, 'f'), 'more')
      expect(fs.readFileSync(path.join(v.mnt, 'f')).equals(Buffer.concat([c.after, Buffer.from('more')]))).toBe(true)
    } finally {
      await umount(v)
    }
    const check = fsckJson(v)
    expect(check.json.problems, check.stderr).toEqual([])
    expect(check.status).toBe(0)
  }, 60_000)

  it('fsck names the torn file and --repair puts its old bytes back', async () => {
    const v = makeVolume()
    vols.push(v)
    await crashAndTear(v, TORN_CASES[0])
    const check = fsckJson(v)
    expect(check.status).toBe(20)
    expect(check.json.problems.map(p => p.what).join('\n')).toMatch(/a write that a crash interrupted tore it/)
    // A re-encryption would leave the record unusable (its chunks are under the old data key).
    const rotate = sealfs(['key', 'rotate', '--reencrypt', '--passfile', v.passfile, v.cipher])
    expect(rotate.status, rotate.stderr).toBe(23)
    expect(rotate.stderr).toMatch(/sealfs.write-journal holds 1 write a crash interrupted; run 'sealfs fsck --repair/)
    const repair = fsckJson(v, ['--repair'])
    expect(repair.status, repair.stderr).toBe(21)
    expect(repair.json.problems.filter(p => !p.repaired)).toEqual([])
    expect(fsckJson(v).status).toBe(0)
    const again = sealfs(['key', 'rotate', '--reencrypt', '--passfile', v.passfile, v.cipher])
    expect(again.status, again.stderr).toBe(0)
    mount(v)
    try {
      expect(fs.readFileSync(path.join(v.mnt, 'f')).equals(OLD)).toBe(true)
    } finally {
      await umount(v)
    }
  }, 60_000)

  it('a record of a write that later writes went over is not used: it never rolls a chunk back past them', async () => {
    const v = makeVolume()
    vols.push(v)
    const backing = await crashAndTear(v, TORN_CASES[0])
    const jfile = path.join(v.cipher, 'sealfs.write-journal')
    const record = fs.readFileSync(jfile)  // the torn overwrite's record, live
    const NEW = crypto.randomBytes(4096)
    mount(v)
    try {
      expect(fs.readFileSync(path.join(v.mnt, 'f')).equals(OLD)).toBe(true)  // settled: the old chunk is back
      const fd = fs.openSync(path.join(v.mnt, 'f'), 'r+')
      try { fs.writeSync(fd, NEW, 0, NEW.length, 4096) } finally { fs.closeSync(fd) }  // chunk 1, whole
    } finally {
      await umount(v)
    }
    // The record as if it had never been zeroed (a power cut, say), and chunk 1 damaged since.
    fs.writeFileSync(jfile, record)
    const b = fs.readFileSync(backing)
    b[HEADER_BYTES + 4124 + 100] ^= 1
    fs.writeFileSync(backing, b)
    mount(v)
    try {
      const got = py(`
import sys, json
f = open(sys.argv[1], 'rb')
f.seek(4096)
try: print(json.dumps(f.read(4096).hex()))
except OSError as e: print(json.dumps(e.errno))`, { args: [path.join(v.mnt, 'f')] })
      expect(got, 'chunk 1 was rolled back to its bytes before the later write').toBe(5)
    } finally {
      await umount(v)
    }
  }, 60_000)

  it('a record of a write that moved the end is not used once later appends moved it again', async () => {
    const v = makeVolume()
    vols.push(v)
    // The append at a chunk boundary finished; the daemon was killed before it zeroed its record.
    const backing = await crashAndTear(v, { ...TORN_CASES[3], untagged: false, tearAt: 0 })
    const jfile = path.join(v.cipher, 'sealfs.write-journal')
    const record = fs.readFileSync(jfile)
    expect(record.indexOf(Buffer.from('SFJ1'))).toBeGreaterThanOrEqual(0)
    let whole = 0
    mount(v)
    try {
      const f = path.join(v.mnt, 'f')
      whole = fs.statSync(f).size
      expect(whole).toBe(4096 + 5000)  // the write was whole: the record was spent
      const fd = fs.openSync(f, 'a')
      try { fs.writeSync(fd, Buffer.alloc(10000, 'c')); fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
    } finally {
      await umount(v)
    }
    // The spent record back (as a power cut can leave it), and the end damaged since.
    fs.writeFileSync(jfile, record)
    const b = fs.readFileSync(backing)
    b[b.length - 1] ^= 1
    fs.writeFileSync(backing, b)
    mount(v)
    try {
      // Not cut back to the size before that append: the 10,000 bytes fsynced after it stay.
      expect(fs.statSync(path.join(v.mnt, 'f')).size).toBe(whole + 10000)
      const fd = fs.openSync(path.join(v.mnt, 'f'), 'r')
      try {
        const head = Buffer.alloc(8192)
        expect(fs.readSync(fd, head, 0, head.length, 0)).toBe(8192)
        expect(head.subarray(0, 4096).equals(OLD.subarray(0, 4096))).toBe(true)
      } finally { fs.closeSync(fd) }
    } finally {
      await umount(v)
    }
  }, 60_000)

  it('a journal record that is not the file\'s own is not used: the torn chunk reads as EIO, never as other bytes', async () => {
    const v = makeVolume()
    vols.push(v)
    const backing = await crashAndTear(v, TORN_CASES[0])
    // The record (docs/FORMAT.md §8: an 84-byte head, then extents) gets a second extent: its
    // old chunk 1 again, at chunk 0's place, with chunk 0's nonce on disk as the write's
    // (anyone can read it). Used, it would make chunk 0 unreadable too.
    const jfile = path.join(v.cipher, 'sealfs.write-journal')
    const journal = fs.readFileSync(jfile)
    const slot = journal.indexOf(Buffer.from('SFJ1'))
    expect(slot).toBeGreaterThanOrEqual(0)
    const used = journal.readUInt32BE(slot + 4)
    expect(journal.readUInt32BE(slot + 80)).toBe(1)
    expect(journal.readBigUInt64BE(slot + 84)).toBe(BigInt(HEADER_BYTES + 4124))
    const extent = Buffer.from(journal.subarray(slot + 84, slot + used))
    extent.writeBigUInt64BE(BigInt(HEADER_BYTES), 0)
    fs.readFileSync(backing).copy(extent, 12, HEADER_BYTES, HEADER_BYTES + 12)
    extent.copy(journal, slot + used)
    journal.writeUInt32BE(used + extent.length, slot + 4)
    journal.writeUInt32BE(2, slot + 80)
    fs.writeFileSync(jfile, journal)
    mount(v)
    try {
      const got = py(`
import sys, json
f = open(sys.argv[1], 'rb')
out = []
for off in range(0, ${OLD.length}, 4096):
    f.seek(off)
    try: out.append(f.read(4096).hex())
    except OSError as e: out.append(e.errno)
print(json.dumps(out))`, { args: [path.join(v.mnt, 'f')] }) as Array<string | number>
      // Chunk 1 (bytes 4096-8191) is torn: EIO; the others are as before.
      expect(got[1]).toBe(5)
      for (const i of [0, 2, 3]) expect(got[i]).toBe(OLD.subarray(i * 4096, (i + 1) * 4096).toString('hex'))
    } finally {
      await umount(v)
    }
  }, 60_000)
})
