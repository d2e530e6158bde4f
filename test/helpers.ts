import { ChildProcess, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import os from 'os'
import path from 'path'
import { mountTable } from '../src/filesystem/mountinfo'

export const ROOT = path.resolve(__dirname, '..')
export const CLI = path.join(ROOT, 'bin', 'sealfs.js')
/** The Argon2id floor keeps each init/mount under a tenth of a second. */
export const FAST_KDF = ['--kdf-opslimit', '2', '--kdf-memlimit', String(64 * 1024 * 1024)]

export interface Vol { base: string, cipher: string, mnt: string, passfile: string }

export function sealfs (args: string[], input?: string): { status: number, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input, timeout: 60_000 })
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

// ---------------------------------------------------------------- temporary trees
// Tests run as root. Everything a test creates lives in a directory made by tempDir(), and
// removeTree() is the only way one is deleted: it takes down every mount inside first and
// refuses any path that tempDir() did not make, so no seed, failure or bad path can make
// cleanup delete or write through anything else.

/** Every test directory is os.tmpdir()/sealfs-* (test/host-guard.ts looks for these). */
export const TEST_DIR_PREFIX = 'sealfs-'

// The daemons the tests start log nowhere outside the test, not to this machine's journal or
// syslog: these sockets never exist (a test that checks the log starts its own listener).
process.env.SEALFS_JOURNAL_SOCKET = path.join(os.tmpdir(), 'sealfs-tests-no-journal', 'socket')
process.env.SEALFS_SYSLOG_SOCKET = path.join(os.tmpdir(), 'sealfs-tests-no-journal', 'log')
const made = new Set<string>()

/** A new directory of this test's under the system's temporary directory. */
export function tempDir (what: string): string {
  const dir = fs.mkdtempSync(path.join(fs.realpathSync(os.tmpdir()), `${TEST_DIR_PREFIX}${what}-`))
  made.add(dir)
  return dir
}

/** Mount points listed in a mountinfo file. */
export function mountPoints (mountinfo?: string): string[] {
  return mountTable(mountinfo).map(m => m.mountpoint)
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder (dir: string, mountinfo?: string): string[] {
  return mountPoints(mountinfo).filter(m => m === dir || m.startsWith(dir + '/')).sort((a, b) => b.length - a.length)
}

/** Processes (other than this one) whose command line names `dir` or something inside it, with their arguments. */
export function processesUsing (dir: string): Array<{ pid: number, args: string[] }> {
  const out: Array<{ pid: number, args: string[] }> = []
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue
    try {
      const args = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')
      if (args.some(a => a === dir || a.includes(dir + '/'))) out.push({ pid: Number(p), args })
    } catch { /* gone */ }
  }
  return out
}

/** Whether `pid` is this process's child or a child of one. */
function descendsFromUs (pid: number): boolean {
  for (let p = pid, i = 0; p > 1 && i < 64; i++) {
    if (p === process.pid) return true
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8')
      p = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    } catch { return false }
  }
  return false
}

/**
 * Deletes a directory made by tempDir(): takeDown() first (every mount inside unmounted,
 * deepest first, lazily if one stays busy; the daemons that served them gone), then the tree,
 * without following symlinks. Throws, deleting nothing, for a path tempDir() did not make or
 * a mount that would not go.
 */
export async function removeTree (dir: string): Promise<void> {
  if (!made.has(dir)) throw new Error(`removeTree: ${dir} was not made by tempDir(); refusing to delete it`)
  await takeDown(dir)
  const left = mountsUnder(dir)
  if (left.length > 0) throw new Error(`removeTree: still mounted, not deleting ${dir}: ${left.join(', ')}`)
  fs.rmSync(dir, { recursive: true, force: true })
  made.delete(dir)
}

/**
 * Unmounts everything mounted at or below `dir` and ends the processes working in it: the
 * `finally` (afterEach) of tests that mount, so a failed test leaves no mount or daemon behind.
 */
export async function takeDown (dir: string): Promise<void> {
  for (const m of mountsUnder(dir)) {
    for (let i = 0; i < 20 && mountsUnder(m).includes(m); i++) {
      if (spawnSync('umount', [m]).status === 0) break
      await sleep(100)
    }
    if (mountsUnder(m).includes(m)) spawnSync('umount', ['-l', m])
  }
  for (let i = 0; i < 100 && processesUsing(dir).length > 0; i++) await sleep(50)
  // Only what the test started: its own children and sealfs daemons (which detach), never
  // some other process that happens to name the directory.
  const ours = (): number[] => processesUsing(dir).filter(p => p.args.includes(CLI) || descendsFromUs(p.pid)).map(p => p.pid)
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    for (const pid of ours()) { try { process.kill(pid, signal) } catch { /* gone */ } }
    for (let i = 0; i < 40 && ours().length > 0; i++) await sleep(50)
  }
}

// ---------------------------------------------------------------- volumes and mounts

/** A new volume; `cipherParent` puts the cipher dir elsewhere (on a network filesystem, say). */
export function makeVolume (opts: { chunkSize?: number, cipherParent?: string } = {}): Vol {
  const base = tempDir('test')
  const cipher = opts.cipherParent !== undefined ? fs.mkdtempSync(path.join(opts.cipherParent, 'cipher-')) : path.join(base, 'cipher')
  const v = { base, cipher, mnt: path.join(base, 'mnt'), passfile: path.join(base, 'pass') }
  if (!fs.existsSync(v.cipher)) fs.mkdirSync(v.cipher)
  fs.mkdirSync(v.mnt)
  fs.writeFileSync(v.passfile, 'test passphrase\n', { mode: 0o600 })
  const extra = opts.chunkSize !== undefined ? ['--chunk-size', String(opts.chunkSize)] : []
  const r = sealfs(['init', '--passfile', v.passfile, ...FAST_KDF, ...extra, v.cipher])
  if (r.status !== 0) throw new Error(`init failed: ${r.stderr}`)
  return v
}

/** What `sealfs fsck --json` prints last: the summary. */
export interface FsckSummary { problems: Array<{ path: string, what: string, repaired: boolean }>, files: number, upgrade?: string, upgraded: number }

/** `sealfs fsck --json` of a volume (with the volume's passfile): its exit status, stderr and summary ({} if it printed none). */
export function fsckJson (v: Vol, extra: string[] = []): { status: number, stderr: string, json: FsckSummary } {
  const r = sealfs(['fsck', '--passfile', v.passfile, '--json', ...extra, v.cipher])
  const last = r.stdout.trim().split('\n').pop() as string
  return { status: r.status, stderr: r.stderr, json: last === '' ? {} as FsckSummary : JSON.parse(last) as FsckSummary }
}

/** A plain directory beside the volume, doing the same operations as the mount for comparison. */
export function plainBeside (v: Vol, mode?: number): string {
  const plain = path.join(v.base, 'plain')
  fs.mkdirSync(plain)
  if (mode !== undefined) fs.chmodSync(plain, mode)
  return plain
}

export function isMounted (mnt: string, mountinfo?: string): boolean {
  return mountPoints(mountinfo).includes(mnt)
}

export function mount (v: Vol, extra: string[] = []): void {
  const r = sealfs(['mount', '--passfile', v.passfile, ...extra, v.cipher, v.mnt])
  if (r.status !== 0) throw new Error(`mount failed (${r.status}): ${r.stderr}`)
}

/** A foreground daemon whose stderr (log lines) the test can read. */
export interface Foreground { child: ChildProcess, log: () => string }

export async function mountForeground (v: Vol, extra: string[] = []): Promise<Foreground> {
  const child = spawn(process.execPath, [CLI, 'mount', '-f', '--passfile', v.passfile, ...extra, v.cipher, v.mnt], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr!.on('data', d => { log += d.toString() })
  for (let i = 0; i < 200 && !isMounted(v.mnt); i++) {
    if (child.exitCode !== null) throw new Error(`mount -f exited: ${log}`)
    await sleep(50)
  }
  if (!isMounted(v.mnt)) throw new Error('mount did not appear')
  const closed = new Promise<void>(resolve => child.stderr!.once('close', () => resolve()))
  foregrounds.set(v.mnt, closed)
  return { child, log: () => log }
}

/** Foreground daemons by mount point: umount() waits until all they logged has been read. */
const foregrounds = new Map<string, Promise<void>>()

export async function umount (v: Vol): Promise<void> {
  if (isMounted(v.mnt)) {
    const r = sealfs(['umount', v.mnt])
    if (r.status !== 0) throw new Error(`umount failed: ${r.stderr}`)
  }
  // Let the daemon finish closing the index before the next mount opens it.
  for (let i = 0; i < 100 && daemonRunning(v); i++) await sleep(50)
  const fg = foregrounds.get(v.mnt)
  if (fg !== undefined) {
    foregrounds.delete(v.mnt)
    await Promise.race([fg, sleep(5000)])
  }
}

function daemonRunning (v: Vol): boolean {
  const r = spawnSync('pgrep', ['-f', `mount .*${v.cipher} ${v.mnt}$`])
  return r.status === 0
}

/** Unmounts the volume (cleanly if it can) and everything else mounted in its directory, then deletes it. */
export async function cleanup (v: Vol): Promise<void> {
  await umount(v).catch(() => undefined)
  await removeTree(v.base)
}

/**
 * Runs a Python snippet (for syscalls node:fs lacks: *at with dir_fd, bytes names and xattrs,
 * mknod, mmap, umask), as `asUser` if given; returns its stdout as JSON.
 */
export function py (code: string, opts: { args?: string[], asUser?: string, timeout?: number } = {}): unknown {
  const argv = [...(opts.asUser !== undefined ? ['runuser', '-u', opts.asUser, '--'] : []), 'python3', '-c', code, ...(opts.args ?? [])]
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: opts.timeout ?? 120_000, killSignal: 'SIGKILL', maxBuffer: 256 * 1024 * 1024 })
  if (r.error !== undefined) throw r.error
  if (r.status !== 0) throw new Error(r.stderr)
  return JSON.parse(r.stdout)
}

/** Python prelude: e(f) gives f's result, 'ok' for None, or the errno name it failed with. */
export const PY_ERR = `
import os, sys, json, errno, stat, mmap, shutil
def e(f):
    try:
        r = f()
        return r if r is not None else 'ok'
    except OSError as x:
        return errno.errorcode.get(x.errno, str(x.errno))
`

/**
 * `stderr` without the warning a detached mount gives where neither the journal nor syslog
 * listens (this machine may have neither): what else a command said.
 */
export function saidBesidesNoLog (stderr: string): string {
  return stderr.replace(/^sealfs: warning: no journal \(.*\) or syslog \(.*\) here: .*\n/m, '')
}

export function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** A small seeded PRNG (mulberry32), so a failing random test can be replayed. */
export function rng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** All regular files below a directory. */
export function walk (dir: string): string[] {
  const out: string[] = []
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) out.push(...walk(p))
    else out.push(p)
  }
  return out
}
