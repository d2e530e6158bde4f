import fs from 'fs'
import os from 'os'
import path from 'path'
import { randomBytes } from '../crypto/secret-key'
import { VolumeError } from './errors'

export const LEASE_FILE = 'sealfs.lease'
/** The holder rewrites its lease this often. */
export const LEASE_PERIOD_MS = 5000
/** A lease seen unchanged this long is stale: its holder stopped renewing it (two periods, and a margin). */
const STALE_MS = 2 * LEASE_PERIOD_MS + 1000
const MAX_BYTES = 4096

interface LeaseText { host: string, boot: string, pid: number, token: string, seq: number }

function bootId (): string {
  try { return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() } catch { return 'unknown' }
}

function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** The lease's text, 'none' if there is no lease file, or null if it cannot be parsed (a torn write: stale). Throws if it is not a regular file. */
function readLease (file: string): LeaseText | 'none' | null {
  let fd: number
  try {
    // The cipher dir is hostile: no symlink followed, no FIFO waited on, at most 4 KiB read.
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return 'none'
    throw new VolumeError('busy', `cannot read the volume lease ${file}: ${code ?? 'error'}`)
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new VolumeError('busy', `the volume lease ${file} is not a regular file`)
    const buf = Buffer.alloc(MAX_BYTES)
    return parseLease(buf.subarray(0, fs.readSync(fd, buf, 0, MAX_BYTES, 0)))
  } finally {
    fs.closeSync(fd)
  }
}

/** readLease off the JS thread (the holder's renewals: a network store may stall). */
async function readLeaseAsync (file: string): Promise<LeaseText | 'none' | null> {
  let fh: fs.promises.FileHandle
  try {
    fh = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'none'
    throw e
  }
  try {
    if (!(await fh.stat()).isFile()) return null
    const buf = Buffer.alloc(MAX_BYTES)
    const { bytesRead } = await fh.read(buf, 0, MAX_BYTES, 0)
    return parseLease(buf.subarray(0, bytesRead))
  } finally {
    await fh.close()
  }
}

function parseLease (b: Buffer): LeaseText | null {
  try {
    const t = JSON.parse(b.toString('utf8')) as LeaseText
    if (typeof t.host !== 'string' || typeof t.boot !== 'string' || !Number.isInteger(t.pid) || typeof t.token !== 'string' || !Number.isInteger(t.seq)) return null
    return t
  } catch {
    return null
  }
}

/** Whether `pid` (of this host and boot) is a running sealfs process: a pid reused by another program is not. */
function writerAlive (pid: number): boolean {
  try {
    return pid > 0 && fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('sealfs')
  } catch {
    return false
  }
}

function describe (t: LeaseText): string {
  return `host ${t.host.replace(/[^\x20-\x7e]/g, '?').slice(0, 64)}, pid ${t.pid}`
}

/**
 * One read-write mount across clients where flock(2) does not reach (a network filesystem on
 * which each client, or each userspace client such as sshfs, keeps its own lock table):
 * `sealfs.lease` names the writer (host, boot ID, pid, a random token) and is rewritten every
 * LEASE_PERIOD_MS while it is mounted. Another writer is refused while the lease is renewed;
 * a lease of this host and boot whose process is gone is taken over at once; any other is
 * taken over only after it was seen unchanged for two periods. Written in place (never
 * renamed), so renewals leave the cipher dir's root times alone.
 */
export class VolumeLease {
  #seq = 0
  #lost = false

  private constructor (private readonly file: string, private readonly text: Omit<LeaseText, 'seq'>) {}

  /** Takes the lease of the volume in `dir`, waiting out a stale one (`say` tells the user why it waits); throws VolumeError('busy') if another writer holds it. */
  static async acquire (dir: string, say: (line: string) => void): Promise<VolumeLease> {
    const file = path.join(dir, LEASE_FILE)
    const lease = new VolumeLease(file, { host: os.hostname(), boot: bootId(), pid: process.pid, token: randomBytes(16).toString('hex') })
    const here = (t: LeaseText): boolean => t.host === lease.text.host && t.boot === lease.text.boot
    const seen = readLease(file)
    if (seen !== null && seen !== 'none' && here(seen)) {
      // This host, this boot: its writer is alive or it is not (then the lease is taken at once).
      if (writerAlive(seen.pid)) throw VolumeLease.#held(dir, seen)
    } else if (seen !== 'none') {
      // Another host's, this host's before a reboot, or one caught half-written: stale only
      // if it stays unchanged for two periods.
      say(`${file} names a writer${seen !== null ? ` on ${describe(seen)}` : ''}; waiting ${Math.round(STALE_MS / 1000)} s for it to be renewed before taking it over`)
      const since = Date.now()
      while (Date.now() - since < STALE_MS) {
        await sleep(500)
        const now = readLease(file)
        if (now === 'none') break
        if (now !== null && (seen === null || now.token !== seen.token || now.seq !== seen.seq)) {
          if (!(here(now) && !writerAlive(now.pid))) throw VolumeLease.#held(dir, now)
          break
        }
      }
    }
    lease.#write()
    // Two clients taking a stale lease at once: the later write wins, and the other sees it.
    await sleep(200)
    const mine = readLease(file)
    if (mine === 'none' || mine === null || mine.token !== lease.text.token) throw VolumeLease.#held(dir, mine === 'none' || mine === null ? null : mine)
    return lease
  }

  static #held (dir: string, t: LeaseText | null): VolumeError {
    return new VolumeError('busy', `${dir} is mounted read-write by another client${t !== null ? ` (${describe(t)}, per ${LEASE_FILE})` : ''}; a volume has one read-write mount at a time`)
  }

  /** Whether another writer took the lease over (this one stopped renewing it for too long). */
  get lost (): boolean { return this.#lost }

  /**
   * Rewrites the lease with the next sequence number, unless another writer holds it now:
   * then it stays theirs and `lost` is set. Off the JS thread (a network store may stall).
   */
  async renew (): Promise<void> {
    if (this.#lost) return
    const now = await readLeaseAsync(this.file)
    if (now !== 'none' && now !== null && now.token !== this.text.token) {
      this.#lost = true
      return
    }
    this.#seq++
    const body = Buffer.from(JSON.stringify({ ...this.text, seq: this.#seq }) + '\n')
    const fh = await fs.promises.open(this.file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600)
    try {
      if (!(await fh.stat()).isFile()) return
      await fh.write(body, 0, body.length, 0)
      await fh.truncate(body.length)
    } finally {
      await fh.close()
    }
  }

  /** Removes the lease if it is still this writer's. */
  release (): void {
    try {
      const now = readLease(this.file)
      if (now !== 'none' && now !== null && now.token === this.text.token) fs.unlinkSync(this.file)
    } catch { /* the lease goes stale by itself */ }
  }

  #write (): void {
    const body = Buffer.from(JSON.stringify({ ...this.text, seq: this.#seq }) + '\n')
    const fd = fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600)
    try {
      if (!fs.fstatSync(fd).isFile()) throw new VolumeError('busy', `the volume lease ${this.file} is not a regular file`)
      fs.writeSync(fd, body, 0, body.length, 0)
      fs.ftruncateSync(fd, body.length)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  }
}
