// Issue 12's prototype measurement: what one request costs through each binding design, with
// no crypto, on stat and 4 KiB random reads. Subjects, each over its own backing directory:
//   plain        the backing directory itself (no FUSE): the ceiling
//   ll-loop      low-level API on Node's event loop, reads answered by a native pread on the JS thread
//   ll-pool      the same, with each read sent to the libuv pool and answered from its callback
//   ll-threads   libfuse's worker threads; reads served in C there, metadata through a threadsafe function to JS
//   fuse-native  today's binding (bench/passthrough.ts, high-level API, path strings)
//   gocryptfs    for reference (with its crypto)
// Rows: stat of N files with the kernel's caches expired (one LOOKUP each), daemon CPU per stat;
// fio 4 KiB O_DIRECT randread, 1 job and 4 jobs, daemon CPU per read.
//   node bench/prototype/build.js && npx tsc -p tsconfig.json && node dist/bench/prototype/measure.js
// Root only. Works in a new directory under /var/tmp and deletes only that.
import { ChildProcess, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { projectRoot } from '../../src/native'

const FILES = Number(process.env.FILES ?? 10000)
const FIO_MIB = Number(process.env.FIO_MIB ?? 256)
const FIO_SECONDS = Number(process.env.FIO_SECONDS ?? 8)
const REPS = Number(process.env.REPS ?? 2)
const WORK = fs.mkdtempSync('/var/tmp/sealfs-proto-')

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))
function sh (cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}
const mounts = (): string[] => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(l => l !== '').map(l => l.split(' ')[4])
function cpu (pid: number): number {
  if (pid === 0) return 0
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const x = f.slice(f.lastIndexOf(')') + 2).split(' ')
  return (Number(x[11]) + Number(x[12])) / 100
}
async function waitMounted (mnt: string): Promise<void> {
  for (let i = 0; i < 200 && !mounts().includes(mnt); i++) await sleep(50)
  if (!mounts().includes(mnt)) throw new Error(`${mnt} did not mount`)
}

interface Subject { name: string, mnt: string, pid: number, stop: () => Promise<void> }

function layOut (dir: string): void {
  fs.mkdirSync(path.join(dir, 'small'), { recursive: true })
  for (let i = 0; i < FILES; i++) fs.closeSync(fs.openSync(path.join(dir, 'small', `f${String(i).padStart(5, '0')}`), 'w'))
  sh('dd', ['if=/dev/urandom', `of=${path.join(dir, 'fio')}`, 'bs=1M', `count=${FIO_MIB}`, 'status=none'])
}

async function start (name: string): Promise<Subject> {
  const dir = path.join(WORK, name)
  const backing = path.join(dir, 'backing')
  const mnt = path.join(dir, 'mnt')
  fs.mkdirSync(backing, { recursive: true })
  fs.mkdirSync(mnt, { recursive: true })
  if (name === 'plain') { layOut(backing); return { name, mnt: backing, pid: 0, stop: async () => undefined } }
  if (name === 'gocryptfs') {
    const pw = path.join(dir, 'pw')
    fs.writeFileSync(pw, 'x\n')
    sh('gocryptfs', ['-init', '-q', '-passfile', pw, '-scryptn', '10', backing])
    sh('gocryptfs', ['-q', '-passfile', pw, backing, mnt])
    await waitMounted(mnt)
    layOut(mnt)
    const pid = Number(sh('pgrep', ['-f', `gocryptfs .*${mnt}`]).trim().split('\n')[0])
    return { name, mnt, pid, stop: async () => { sh('fusermount', ['-u', mnt]); await sleep(300) } }
  }
  let child: ChildProcess
  if (name === 'fuse-native') {
    child = spawn('node', [path.join(projectRoot, 'dist', 'bench', 'passthrough.js'), backing, mnt], { stdio: ['ignore', 'pipe', 'inherit'] })
  } else {
    layOut(backing)
    child = spawn('node', [path.join(projectRoot, 'dist', 'bench', 'prototype', 'll-passthrough.js'), backing, mnt, name.slice(3) === 'pool' ? 'loop-pool' : name.slice(3)], { stdio: ['ignore', 'pipe', 'inherit'] })
  }
  await new Promise<void>((resolve, reject) => { child.stdout!.once('data', () => resolve()); child.once('exit', c => reject(new Error(`${name} exited ${c}`))) })
  await waitMounted(mnt)
  if (name === 'fuse-native') layOut(mnt)
  const stop = async (): Promise<void> => {
    spawnSync('fusermount', ['-u', mnt])
    child.kill('SIGTERM')
    for (let i = 0; i < 100 && child.exitCode === null && child.signalCode === null; i++) await sleep(50)
  }
  return { name, mnt, pid: child.pid!, stop }
}

const STAT_PY = `
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
names = [os.path.join(d, 'f%05d' % i) for i in range(n)]
for p in names: os.stat(p)
time.sleep(1.5)  # past the 1 s entry and attribute caches: each stat is a LOOKUP
t = time.perf_counter()
for p in names: os.stat(p)
print(time.perf_counter() - t)
`

function fio (mnt: string, jobs: number): number {
  const out = sh('fio', ['--name=r', `--filename=${path.join(mnt, 'fio')}`, '--rw=randread', '--bs=4k', `--size=${FIO_MIB}m`, '--ioengine=psync', '--direct=1',
    '--time_based', `--runtime=${FIO_SECONDS}`, `--numjobs=${jobs}`, '--group_reporting', '--output-format=json'])
  return JSON.parse(out).jobs[0].read.iops
}

async function main (): Promise<void> {
  const names = (process.env.SUBJECTS ?? 'plain,ll-loop,ll-pool,ll-threads,fuse-native,gocryptfs').split(',')
  const rows: Record<string, number[][]> = {}
  for (let rep = 0; rep < REPS; rep++) {
    for (const name of names) {
      const s = await start(name)
      try {
        sh('sync', [])
        let c0 = cpu(s.pid)
        const st = Number(sh('python3', ['-c', STAT_PY, path.join(s.mnt, 'small'), String(FILES)]).trim())
        const stCpu = cpu(s.pid) - c0
        const r: number[] = [st / FILES * 1e6, stCpu / FILES * 1e6]
        for (const jobs of [1, 4]) {
          c0 = cpu(s.pid)
          const iops = fio(s.mnt, jobs)
          r.push(iops, (cpu(s.pid) - c0) / (iops * FIO_SECONDS) * 1e6)
        }
        ;(rows[name] ??= []).push(r)
        process.stderr.write(`${name} rep ${rep + 1}: ${r.map(x => x.toFixed(1)).join(' ')}\n`)
      } finally {
        await s.stop()
        if (!mounts().some(m => m.startsWith(path.join(WORK, name) + '/'))) fs.rmSync(path.join(WORK, name), { recursive: true, force: true })
      }
    }
  }
  const med = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2 }
  console.log(`| subject | stat µs | daemon CPU µs/stat | randread 1 job IOPS | CPU µs/read | randread 4 jobs IOPS | CPU µs/read |`)
  console.log('|---|---|---|---|---|---|---|')
  for (const name of names) {
    const cols = [0, 1, 2, 3, 4, 5].map(i => med(rows[name].map(r => r[i])))
    console.log(`| ${name} | ${cols[0].toFixed(1)} | ${cols[1].toFixed(1)} | ${cols[2].toFixed(0)} | ${cols[3].toFixed(1)} | ${cols[4].toFixed(0)} | ${cols[5].toFixed(1)} |`)
  }
}

main().catch(e => { process.stderr.write(`measure: ${(e as Error).message}\n`); process.exitCode = 1 }).finally(() => {
  for (const m of mounts().filter(m => m.startsWith(WORK + '/'))) spawnSync('umount', ['-l', m])
  if (!mounts().some(m => m.startsWith(WORK + '/'))) fs.rmSync(WORK, { recursive: true, force: true })
})
