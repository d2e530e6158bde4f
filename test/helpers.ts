import { ChildProcess, execFileSync, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import os from 'os'
import path from 'path'

export const ROOT = path.resolve(__dirname, '..')
export const CLI = path.join(ROOT, 'bin', 'sealfs.js')
/** The Argon2id floor keeps each init/mount under a tenth of a second. */
export const FAST_KDF = ['--kdf-opslimit', '2', '--kdf-memlimit', String(64 * 1024 * 1024)]

export interface Vol { base: string, cipher: string, mnt: string, passfile: string }

export function sealfs (args: string[], input?: string): { status: number, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', input, timeout: 60_000 })
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

/** A new volume; `cipherParent` puts the cipher dir elsewhere (on a network filesystem, say). */
export function makeVolume (opts: { chunkSize?: number, cipherParent?: string } = {}): Vol {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'sealfs-test-'))
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

/** A plain directory beside the volume, doing the same operations as the mount for comparison. */
export function plainBeside (v: Vol, mode?: number): string {
  const plain = path.join(v.base, 'plain')
  fs.mkdirSync(plain)
  if (mode !== undefined) fs.chmodSync(plain, mode)
  return plain
}

export function isMounted (mnt: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some(l => l.split(' ')[4] === mnt)
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
  return { child, log: () => log }
}

export async function umount (v: Vol): Promise<void> {
  if (isMounted(v.mnt)) {
    const r = sealfs(['umount', v.mnt])
    if (r.status !== 0) throw new Error(`umount failed: ${r.stderr}`)
  }
  // Let the daemon finish closing the index before the next mount opens it.
  for (let i = 0; i < 100 && daemonRunning(v); i++) await sleep(50)
}

function daemonRunning (v: Vol): boolean {
  const r = spawnSync('pgrep', ['-f', `mount .*${v.cipher} ${v.mnt}$`])
  return r.status === 0
}

export async function cleanup (v: Vol): Promise<void> {
  await umount(v).catch(() => execFileSync('fusermount', ['-uz', v.mnt]))
  fs.rmSync(v.base, { recursive: true, force: true })
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
