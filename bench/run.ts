// npm run bench: sealfs, gocryptfs and a no-crypto passthrough on the same FUSE binding
// (bench/passthrough.ts), each over a fresh backing directory on the same disk, and that
// disk itself without FUSE (the ceiling), running the same workloads interleaved for
// several repetitions. Prints medians, ratios and the
// daemons' CPU time. SMALL=1 runs a short version; REPS=N and BENCH_DIR=... override.
// Needs root (drop_caches, FUSE mounts); installs gocryptfs and fio if they are missing.
// Everything it writes is in a new directory it makes under BENCH_DIR (default /var/tmp),
// and that directory is all it deletes, after unmounting whatever it mounted there.
import { ChildProcess, execFileSync, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { projectRoot } from '../src/native'
import { mountTable } from '../src/filesystem/mountinfo'

const SMALL = process.env.SMALL === '1'
const REPS = Number(process.env.REPS ?? (SMALL ? 2 : 3))
const SEQ_MIB = SMALL ? 256 : 1024
const FIO_MIB = SMALL ? 64 : 256
const FIO_SECONDS = SMALL ? 4 : 10
const SMALL_FILES = SMALL ? 2000 : 10000
const TREE_SOURCES = SMALL ? ['/usr/lib/python3.11'] : ['/usr/include', '/usr/lib/python3.11', '/usr/lib/python3']
const WORK = fs.mkdtempSync(path.join(fs.realpathSync(process.env.BENCH_DIR ?? '/var/tmp'), 'sealfs-bench-'))
const SEALFS = path.join(projectRoot, 'bin', 'sealfs.js')
const PASSTHROUGH = path.join(projectRoot, 'dist', 'bench', 'passthrough.js')
const PW = path.join(WORK, 'passphrase')

// ---------------------------------------------------------------- processes and timing

function sh (cmd: string, args: string[], opts: { quiet?: boolean } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${(r.stderr ?? '').trim().slice(0, 500)}`)
  if (opts.quiet !== true && r.stderr !== '' && process.env.BENCH_VERBOSE === '1') process.stderr.write(r.stderr)
  return r.stdout
}

function timed (fn: () => void): number {
  const t0 = process.hrtime.bigint()
  fn()
  return Number(process.hrtime.bigint() - t0) / 1e9
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

function cpuSeconds (pid: number): number {
  if (pid === 0) return 0  // no daemon (the raw directory)
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100  // utime + stime, in USER_HZ (100)
}

function peakRssMiB (pid: number): number {
  if (pid === 0) return NaN
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Number(m[1]) / 1024
}

function resetPeakRss (pid: number): void {
  if (pid !== 0) fs.writeFileSync(`/proc/${pid}/clear_refs`, '5')
}

function dropCaches (): void {
  sh('sync', [])
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
}

function mountPoints (): string[] {
  return mountTable().map(m => m.mountpoint)
}

function isMounted (mnt: string): boolean {
  return mountPoints().includes(mnt)
}

/** Unmounts whatever is still mounted under `dir` (lazily if busy), then deletes it; never deletes through a mount. */
function removeWorkDir (dir: string): void {
  for (const m of mountPoints().filter(m => m.startsWith(dir + '/')).sort((a, b) => b.length - a.length)) {
    if (spawnSync('umount', [m]).status !== 0) spawnSync('umount', ['-l', m])
  }
  const left = mountPoints().filter(m => m.startsWith(dir + '/'))
  if (left.length > 0) throw new Error(`still mounted, not deleting ${dir}: ${left.join(', ')}`)
  fs.rmSync(dir, { recursive: true, force: true })
}

async function waitGone (pid: number): Promise<void> {
  for (let i = 0; i < 300 && fs.existsSync(`/proc/${pid}`); i++) await sleep(50)
}

async function waitMounted (mnt: string): Promise<void> {
  for (let i = 0; i < 300 && !isMounted(mnt); i++) await sleep(50)
  if (!isMounted(mnt)) throw new Error(`${mnt} did not mount`)
}

// ---------------------------------------------------------------- the three filesystems

interface Subject {
  name: string
  mnt: string
  pid: number
  /** A fresh, empty backing directory with a mounted filesystem on it. */
  create (dir: string): Promise<void>
  mount (): Promise<void>
  unmount (): Promise<void>
}

class Sealfs implements Subject {
  name = 'sealfs'
  mnt = ''
  pid = 0
  #cipher = ''
  async create (dir: string): Promise<void> {
    this.#cipher = path.join(dir, 'cipher')
    this.mnt = path.join(dir, 'mnt')
    fs.mkdirSync(this.#cipher, { recursive: true })
    fs.mkdirSync(this.mnt, { recursive: true })
    sh('node', [SEALFS, 'init', '--passfile', PW, '--kdf-opslimit', '2', '--kdf-memlimit', String(64 * 1024 * 1024), this.#cipher])
    await this.mount()
  }

  async mount (): Promise<void> {
    sh('node', [SEALFS, 'mount', '--passfile', PW, this.#cipher, this.mnt])
    this.pid = Number(fs.readFileSync(path.join(this.#cipher, 'sealfs.lock'), 'utf8').trim())
  }

  async unmount (): Promise<void> {
    sh('fusermount', ['-u', this.mnt])
    await waitGone(this.pid)
  }
}

class Gocryptfs implements Subject {
  name = 'gocryptfs'
  mnt = ''
  pid = 0
  #cipher = ''
  async create (dir: string): Promise<void> {
    this.#cipher = path.join(dir, 'cipher')
    this.mnt = path.join(dir, 'mnt')
    fs.mkdirSync(this.#cipher, { recursive: true })
    fs.mkdirSync(this.mnt, { recursive: true })
    sh('gocryptfs', ['-init', '-q', '-passfile', PW, '-scryptn', '10', this.#cipher], { quiet: true })
    await this.mount()
  }

  async mount (): Promise<void> {
    sh('gocryptfs', ['-q', '-passfile', PW, this.#cipher, this.mnt], { quiet: true })
    await waitMounted(this.mnt)
    this.pid = findPid(cmd => cmd[0].endsWith('gocryptfs') && cmd.includes(this.mnt))
  }

  async unmount (): Promise<void> {
    sh('fusermount', ['-u', this.mnt])
    await waitGone(this.pid)
  }
}

class Passthrough implements Subject {
  name = 'passthrough'
  mnt = ''
  pid = 0
  #backing = ''
  #child: ChildProcess | null = null
  async create (dir: string): Promise<void> {
    this.#backing = path.join(dir, 'backing')
    this.mnt = path.join(dir, 'mnt')
    fs.mkdirSync(this.#backing, { recursive: true })
    fs.mkdirSync(this.mnt, { recursive: true })
    await this.mount()
  }

  async mount (): Promise<void> {
    const child = spawn('node', [PASSTHROUGH, this.#backing, this.mnt], { stdio: ['ignore', 'pipe', 'inherit'] })
    this.#child = child
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once('data', () => resolve())
      child.once('exit', code => reject(new Error(`passthrough exited (${code})`)))
    })
    await waitMounted(this.mnt)
    this.pid = child.pid as number
  }

  async unmount (): Promise<void> {
    this.#child?.kill('SIGTERM')
    await waitGone(this.pid)
    if (isMounted(this.mnt)) sh('fusermount', ['-uz', this.mnt])
  }
}

/** The backing disk itself, no FUSE: what every filesystem above it can at best reach. */
class Raw implements Subject {
  name = 'raw'
  mnt = ''
  pid = 0
  async create (dir: string): Promise<void> {
    this.mnt = path.join(dir, 'plain')
    fs.mkdirSync(this.mnt, { recursive: true })
  }

  async mount (): Promise<void> {}
  async unmount (): Promise<void> {}
}

function findPid (match: (cmd: string[]) => boolean): number {
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').filter(s => s !== '')
      if (cmd.length > 0 && match(cmd)) return Number(p)
    } catch { /* gone */ }
  }
  throw new Error('daemon not found')
}

// ---------------------------------------------------------------- workloads

/** One measured row: the value (higher is better unless `lowerIsBetter`) and daemon CPU seconds. */
interface Sample { value: number, cpu: number }
interface RowSpec { key: string, label: string, unit: string, lowerIsBetter: boolean, mib?: number }

const ROWS: RowSpec[] = [
  { key: 'seqwrite', label: `dd write ${SEQ_MIB} MiB, conv=fsync`, unit: 'MiB/s', lowerIsBetter: false, mib: SEQ_MIB },
  { key: 'coldread', label: 'dd read, cold (remount + drop caches)', unit: 'MiB/s', lowerIsBetter: false, mib: SEQ_MIB },
  { key: 'warmread', label: 'dd read, warm (remount only)', unit: 'MiB/s', lowerIsBetter: false, mib: SEQ_MIB },
  { key: 'reread', label: 'dd read again, same mount', unit: 'MiB/s', lowerIsBetter: false, mib: SEQ_MIB },
  { key: 'randread', label: `fio 4 KiB randread, ${FIO_MIB} MiB file, O_DIRECT`, unit: 'IOPS', lowerIsBetter: false },
  { key: 'randwrite', label: `fio 4 KiB randwrite, ${FIO_MIB} MiB file, O_DIRECT`, unit: 'IOPS', lowerIsBetter: false },
  { key: 'randread4', label: 'fio 4 KiB randread, 4 jobs on one file', unit: 'IOPS', lowerIsBetter: false },
  { key: 'randwrite4', label: 'fio 4 KiB randwrite, 4 jobs on one file', unit: 'IOPS', lowerIsBetter: false },
  { key: 'tar', label: 'tar extract + sync', unit: 's', lowerIsBetter: true },
  { key: 'tar4', label: '4 tar extracts at once (own directories) + sync', unit: 's', lowerIsBetter: true },
  { key: 'lsR', label: 'ls -lR, cold', unit: 's', lowerIsBetter: true },
  { key: 'catall', label: 'cat every file, cold', unit: 's', lowerIsBetter: true },
  { key: 'rmrf', label: 'rm -rf the tree', unit: 's', lowerIsBetter: true },
  { key: 'create', label: `create ${SMALL_FILES} empty files`, unit: 's', lowerIsBetter: true },
  { key: 'stat', label: `stat ${SMALL_FILES} files (attributes not cached)`, unit: 's', lowerIsBetter: true },
  { key: 'unlink', label: `unlink ${SMALL_FILES} files`, unit: 's', lowerIsBetter: true }
]

function fioIops (s: Subject, rw: string, jobs = 1): number {
  const out = sh('fio', ['--name=bench', `--filename=${path.join(s.mnt, 'fio')}`, `--rw=${rw}`, '--bs=4k', `--size=${FIO_MIB}m`,
    '--ioengine=psync', '--direct=1', '--time_based', `--runtime=${FIO_SECONDS}`, `--numjobs=${jobs}`, '--group_reporting', '--output-format=json'])
  const job = JSON.parse(out).jobs[0]
  return rw === 'randread' ? job.read.iops : job.write.iops
}

// Times and the daemon's CPU seconds of each phase (argv: dir, file count, daemon pid).
const SMALL_FILES_PY = `
import os, sys, time, json
d, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def cpu():
    if pid == 0: return 0  # no daemon (the raw directory)
    f = open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
os.mkdir(d)
names = [os.path.join(d, 'f%05d' % i) for i in range(n)]
c0 = cpu(); t0 = time.perf_counter()
for p in names: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
t1 = time.perf_counter(); c1 = cpu()
time.sleep(1.5)  # past the kernel's 1 s attribute and entry caches: each stat is a request
c2 = cpu(); t2 = time.perf_counter()
for p in names: os.stat(p)
t3 = time.perf_counter(); c3 = cpu()
for p in names: os.unlink(p)
t4 = time.perf_counter(); c4 = cpu()
os.rmdir(d)
print(json.dumps([[t1 - t0, c1 - c0], [t3 - t2, c3 - c2], [t4 - t3, c4 - c3]]))
`

async function runAll (s: Subject, tarball: string, rssOut: number[]): Promise<Record<string, Sample>> {
  const out: Record<string, Sample> = {}
  const measure = (key: string, fn: () => number): void => {
    const c0 = cpuSeconds(s.pid)
    const value = fn()
    out[key] = { value, cpu: cpuSeconds(s.pid) - c0 }
  }
  const remount = async (cold: boolean): Promise<void> => {
    await s.unmount()
    if (cold) dropCaches()
    await s.mount()
  }
  const seq = path.join(s.mnt, 'seq')

  measure('seqwrite', () => SEQ_MIB / timed(() => sh('dd', ['if=/dev/zero', `of=${seq}`, 'bs=1M', `count=${SEQ_MIB}`, 'conv=fsync'], { quiet: true })))
  await remount(true)
  measure('coldread', () => SEQ_MIB / timed(() => sh('dd', [`if=${seq}`, 'of=/dev/null', 'bs=1M'], { quiet: true })))
  await remount(false)
  measure('warmread', () => SEQ_MIB / timed(() => sh('dd', [`if=${seq}`, 'of=/dev/null', 'bs=1M'], { quiet: true })))
  measure('reread', () => SEQ_MIB / timed(() => sh('dd', [`if=${seq}`, 'of=/dev/null', 'bs=1M'], { quiet: true })))
  fs.unlinkSync(seq)

  sh('fio', ['--name=layout', `--filename=${path.join(s.mnt, 'fio')}`, '--rw=write', '--bs=1M', `--size=${FIO_MIB}m`, '--end_fsync=1'])
  await remount(true)
  measure('randread', () => fioIops(s, 'randread'))
  measure('randwrite', () => fioIops(s, 'randwrite'))
  measure('randread4', () => fioIops(s, 'randread', 4))
  measure('randwrite4', () => fioIops(s, 'randwrite', 4))
  fs.unlinkSync(path.join(s.mnt, 'fio'))

  const tree = path.join(s.mnt, 'tree')
  fs.mkdirSync(tree)
  resetPeakRss(s.pid)
  measure('tar', () => timed(() => { sh('tar', ['-xf', tarball, '-C', tree]); sh('sync', []) }))
  rssOut.push(peakRssMiB(s.pid))
  await remount(true)
  measure('lsR', () => timed(() => sh('sh', ['-c', `ls -lR '${tree}' > /dev/null`])))
  await remount(true)
  measure('catall', () => timed(() => sh('sh', ['-c', `find '${tree}' -type f -print0 | xargs -0 cat > /dev/null`])))
  measure('rmrf', () => timed(() => sh('rm', ['-rf', tree])))
  const trees = [0, 1, 2, 3].map(i => path.join(s.mnt, `tree${i}`))
  for (const t of trees) fs.mkdirSync(t)
  measure('tar4', () => timed(() => sh('sh', ['-c', `${trees.map(t => `tar -xf '${tarball}' -C '${t}' &`).join(' ')} wait; sync`])))
  sh('rm', ['-rf', ...trees])

  const [create, stat, unlink] = JSON.parse(sh('python3', ['-c', SMALL_FILES_PY, path.join(s.mnt, 'small'), String(SMALL_FILES), String(s.pid)])) as number[][]
  out.create = { value: create[0], cpu: create[1] }
  out.stat = { value: stat[0], cpu: stat[1] }
  out.unlink = { value: unlink[0], cpu: unlink[1] }
  return out
}

// ---------------------------------------------------------------- set-up, run, report

function ensureTools (): void {
  const missing = [['gocryptfs', 'gocryptfs'], ['fio', 'fio']].filter(([bin]) => spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0).map(([, pkg]) => pkg)
  if (missing.length === 0) return
  process.stderr.write(`installing ${missing.join(', ')} (Debian packages)\n`)
  execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: ['ignore', 'ignore', 'inherit'] })
}

function buildTarball (): { file: string, files: number, mib: number } {
  const file = path.join(WORK, SMALL ? 'tree-small.tar' : 'tree.tar')
  if (!fs.existsSync(file)) sh('tar', ['-cf', file, '--ignore-failed-read', ...TREE_SOURCES], { quiet: true })
  const files = Number(sh('sh', ['-c', `tar -tvf '${file}' | grep -c '^-'`]).trim())
  return { file, files, mib: fs.statSync(file).size / 1048576 }
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2 }
const fmt = (x: number, unit: string): string => unit === 's' ? x.toFixed(2) : unit === 'IOPS' ? Math.round(x).toString() : x.toFixed(0)

async function main (): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the bench needs root (FUSE mounts, drop_caches)')
  ensureTools()
  fs.writeFileSync(PW, 'bench passphrase\n', { mode: 0o600 })
  const tar = buildTarball()
  const versions = {
    gocryptfs: sh('gocryptfs', ['-version']).split('\n')[0],
    node: process.version,
    kernel: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    cpus: fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').filter(l => l.startsWith('processor')).length
  }
  process.stderr.write(`bench in ${WORK}: ${REPS} reps, tree of ${tar.files} files (${tar.mib.toFixed(0)} MiB), ${versions.gocryptfs}, node ${versions.node}\n`)

  const makers: Array<() => Subject> = [() => new Sealfs(), () => new Gocryptfs(), () => new Passthrough(), () => new Raw()]
  const names = ['sealfs', 'gocryptfs', 'passthrough', 'raw']
  const samples: Record<string, Record<string, Sample[]>> = Object.fromEntries(names.map(n => [n, Object.fromEntries(ROWS.map(r => [r.key, []]))]))
  const rss: Record<string, number[]> = Object.fromEntries(names.map(n => [n, []]))
  for (let rep = 0; rep < REPS; rep++) {
    for (let k = 0; k < makers.length; k++) {
      const s = makers[(k + rep) % makers.length]()  // rotate the order each repetition
      const dir = path.join(WORK, `${s.name}-${rep}`)
      process.stderr.write(`rep ${rep + 1}/${REPS}: ${s.name}\n`)
      try {
        await s.create(dir)
        const res = await runAll(s, tar.file, rss[s.name])
        for (const [key, v] of Object.entries(res)) samples[s.name][key].push(v)
      } finally {
        await s.unmount().catch(() => undefined)
        removeWorkDir(dir)
      }
    }
  }

  const med = (n: string, key: string, f: (s: Sample) => number): number => median(samples[n][key].map(f))
  const better = (r: RowSpec, a: number, b: number): number => r.lowerIsBetter ? b / a : a / b
  const lines: string[] = []
  lines.push(`sealfs bench, ${new Date().toISOString()}: ${REPS} repetitions (medians), ${versions.cpus} CPUs, kernel ${versions.kernel}, node ${versions.node}, ${versions.gocryptfs}`)
  lines.push(`tree: ${tar.files} files, ${tar.mib.toFixed(0)} MiB (${TREE_SOURCES.join(' ')}). Ratios > 1 mean sealfs is better (faster, or more per second).`)
  lines.push('')
  lines.push('| workload | unit | sealfs | gocryptfs | passthrough | raw disk (no FUSE) | sealfs / gocryptfs | sealfs / passthrough | sealfs / raw |')
  lines.push('|---|---|---|---|---|---|---|---|---|')
  for (const r of ROWS) {
    const [a, g, p, w] = names.map(n => med(n, r.key, s => s.value))
    lines.push(`| ${r.label} | ${r.unit} | ${fmt(a, r.unit)} | ${fmt(g, r.unit)} | ${fmt(p, r.unit)} | ${fmt(w, r.unit)} | ${better(r, a, g).toFixed(2)} | ${better(r, a, p).toFixed(2)} | ${better(r, a, w).toFixed(2)} |`)
  }
  lines.push('')
  lines.push('Daemon CPU seconds (user + system) per workload; ms per MiB on the sequential rows.')
  lines.push('')
  lines.push('| workload | sealfs | gocryptfs | passthrough | sealfs / gocryptfs |')
  lines.push('|---|---|---|---|---|')
  for (const r of ROWS) {
    const [a, g, p] = names.map(n => med(n, r.key, s => s.cpu))
    const perMiB = r.mib !== undefined ? ` (${(a * 1000 / r.mib).toFixed(2)} / ${(g * 1000 / r.mib).toFixed(2)} / ${(p * 1000 / r.mib).toFixed(2)} ms/MiB)` : ''
    lines.push(`| ${r.label}${perMiB} | ${a.toFixed(2)} | ${g.toFixed(2)} | ${p.toFixed(2)} | ${(a / g).toFixed(2)} |`)
  }
  lines.push('')
  lines.push(`Daemon peak RSS during tar extract (MiB, median): sealfs ${median(rss.sealfs).toFixed(0)}, gocryptfs ${median(rss.gocryptfs).toFixed(0)}, passthrough ${median(rss.passthrough).toFixed(0)}`)
  const report = lines.join('\n') + '\n'
  process.stdout.write(report)
  const results = `${WORK}.json`
  fs.writeFileSync(results, JSON.stringify({ versions, samples, rss, tar }, null, 1))
  process.stderr.write(`samples in ${results}\n`)
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    process.stderr.write(`bench: ${signal}, cleaning up ${WORK}\n`)
    removeWorkDir(WORK)
    process.exit(130)
  })
}

main().then(() => removeWorkDir(WORK), err => {
  process.stderr.write(`bench: ${(err as Error).message}\n`)
  removeWorkDir(WORK)
  process.exit(1)
})
