import fs from 'fs'
import os from 'os'
import path from 'path'
import { performance } from 'perf_hooks'
import { randomBytes } from '../crypto/secret-key'
import { VolumeError } from './errors'
import { isLocalFilesystem } from './local-disk'

export const LEASE_FILE = 'sealfs.lease'
/** The holder rewrites its lease this often. */
export const LEASE_PERIOD_MS = 5000
/** A lease seen unchanged this long is stale: its holder stopped renewing it (two periods, and a margin). */
export const LEASE_STALE_MS = 2 * LEASE_PERIOD_MS + 1000
const MAX_BYTES = 4096

/**
 * Who holds a lease: host name, boot ID and PID namespace (together: one pid space), the
 * pid and its start time (a pid reused by another process is not the holder), and a random
 * token; `seq` counts renewals.
 */
interface LeaseText { host: string, boot: string, pidns: string, pid: number, start: string, token: string, seq: number }

function readText (file: string): string {
  try { return fs.readFileSync(file, 'latin1').trim() } catch { return 'unknown' }
}

/** The start time of `pid` (clock ticks since boot, /proc/PID/stat field 22), or null if there is no such process. */
function startTime (pid: number): string | null {
  const stat = readText(`/proc/${pid}/stat`)
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return stat === 'unknown' || fields.length < 20 ? null : fields[19]
}

function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

function parseLease (b: Buffer): LeaseText | null {
  try {
    const t = JSON.parse(b.toString('utf8')) as LeaseText
    if (['host', 'boot', 'pidns', 'start', 'token'].some(k => typeof (t as unknown as Record<string, unknown>)[k] !== 'string') || !Number.isInteger(t.pid) || !Number.isInteger(t.seq)) return null
    return t
  } catch {
    return null
  }
}

/** The lease's text, 'none' if there is no lease file, or null if it cannot be parsed (half-written, or not ours). Throws VolumeError('busy') if it is not a regular file. */
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

/** readLease off the JS thread (the holder's renewals: a network store may stall); a lease that is not a regular file is null. */
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

function describe (t: LeaseText): string {
  return `host ${t.host.replace(/[^\x20-\x7e]/g, '?').slice(0, 64)}, pid ${t.pid}`
}

/**
 * One read-write mount across clients where flock(2) may not reach (a network filesystem on
 * which each client, or each userspace client such as sshfs, keeps its own lock table):
 * `sealfs.lease` names the writer and is rewritten every LEASE_PERIOD_MS while it is mounted.
 * Another writer is refused while the lease is renewed; a lease of this pid space whose
 * process is gone is taken over at once; any other only after it was seen unchanged for
 * LEASE_STALE_MS (by a monotonic clock: no clocks are compared). Written in place, never
 * renamed, so renewals leave the cipher dir's root times alone.
 */
export class VolumeLease {
  #seq = 0
  #lost = false
  #renewing = false

  private constructor (private readonly file: string, private readonly text: Omit<LeaseText, 'seq'>) {}

  /** Whether a read-write mount of the volume in `dir` needs a lease: its cipher dir is not on a local disk. */
  static needed (dir: string): boolean {
    return !isLocalFilesystem(fs.statfsSync(dir).type)
  }

  /**
   * Takes the lease of the volume in `dir`, waiting out a stale one (`say` tells why it
   * waits). Throws VolumeError('busy') if another writer holds it or it cannot be written;
   * null (said) if the cipher dir is full: the user must be able to mount it to delete files.
   */
  static async acquire (dir: string, say: (line: string) => void): Promise<VolumeLease | null> {
    const file = path.join(dir, LEASE_FILE)
    const lease = new VolumeLease(file, {
      host: os.hostname(),
      boot: readText('/proc/sys/kernel/random/boot_id'),
      pidns: (() => { try { return fs.readlinkSync('/proc/self/ns/pid') } catch { return 'unknown' } })(),
      pid: process.pid,
      start: startTime(process.pid) ?? 'unknown',
      token: randomBytes(16).toString('hex')
    })
    const here = (t: LeaseText): boolean => t.host === lease.text.host && t.boot === lease.text.boot && t.pidns === lease.text.pidns && t.boot !== 'unknown' && t.pidns !== 'unknown'
    const alive = (t: LeaseText): boolean => startTime(t.pid) === t.start
    const seen = readLease(file)
    if (seen !== null && seen !== 'none' && here(seen)) {
      // This host, boot and pid space: its writer runs or it does not (then it is taken at once).
      if (alive(seen)) throw VolumeLease.#held(dir, seen)
    } else if (seen !== 'none') {
      // Another host's (or pid space's, or this host's before a reboot), or one caught half
      // written: stale only if it stays unchanged for two periods.
      say(`${file} names a writer${seen !== null ? ` on ${describe(seen)}` : ''}; waiting ${Math.round(LEASE_STALE_MS / 1000)} s for it to be renewed before taking it over`)
      const since = performance.now()
      while (performance.now() - since < LEASE_STALE_MS) {
        await sleep(500)
        const now = readLease(file)
        if (now === 'none') break
        if (now !== null && (seen === null || now.token !== seen.token || now.seq !== seen.seq)) {
          if (!(here(now) && !alive(now))) throw VolumeLease.#held(dir, now)
          break
        }
      }
    }
    try {
      lease.#write()
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        say(`the cipher dir is full: mounted without the lease ${file} (another client is not refused meanwhile)`)
        return null
      }
      throw new VolumeError('busy', `cannot write the volume lease ${file}: ${code ?? 'error'}`)
    }
    // Two clients taking a stale lease at once: the later write wins, and the other sees it.
    await sleep(200)
    const mine = readLease(file)
    if (mine === 'none' || mine === null || mine.token !== lease.text.token) throw VolumeLease.#held(dir, mine === 'none' || mine === null ? null : mine)
    return lease
  }

  static #held (dir: string, t: LeaseText | null): VolumeError {
    return new VolumeError('busy', `${dir} is mounted read-write by another client${t !== null ? ` (${describe(t)}, per ${LEASE_FILE})` : ''}; a volume has one read-write mount at a time`)
  }

  /** Whether another writer took the lease over, or it was removed or replaced: this writer must stop. */
  get lost (): boolean { return this.#lost }

  /**
   * Rewrites the lease with the next sequence number, unless it is not this writer's any more
   * (then `lost` is set). One at a time; a renewal whose read took a whole period writes
   * nothing (the lease may have been taken meanwhile: the next one sees). Off the JS thread.
   */
  async renew (): Promise<void> {
    if (this.#lost || this.#renewing) return
    this.#renewing = true
    try {
      const started = performance.now()
      const now = await readLeaseAsync(this.file)
      if (now === 'none' || now === null || now.token !== this.text.token) {
        this.#lost = true
        return
      }
      if (performance.now() - started > LEASE_PERIOD_MS) return
      this.#seq++
      const body = Buffer.from(JSON.stringify({ ...this.text, seq: this.#seq }) + '\n')
      const fh = await fs.promises.open(this.file, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
      try {
        if (!(await fh.stat()).isFile()) return
        await fh.write(body, 0, body.length, 0)
        await fh.truncate(body.length)
      } finally {
        await fh.close()
      }
    } finally {
      this.#renewing = false
    }
  }

  /** Removes the lease if it is still this writer's; gives up after `ms` (a stalled store: the lease goes stale by itself). */
  async release (ms = 5000): Promise<void> {
    const done = (async () => {
      const now = await readLeaseAsync(this.file)
      if (now !== 'none' && now !== null && now.token === this.text.token) await fs.promises.unlink(this.file)
    })().catch(() => undefined)
    let timer: NodeJS.Timeout | undefined
    await Promise.race([done, new Promise<void>(resolve => { timer = setTimeout(resolve, ms) })])
    clearTimeout(timer)
  }

  #write (): void {
    const body = Buffer.from(JSON.stringify({ ...this.text, seq: this.#seq }) + '\n')
    const fd = fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600)
    try {
      if (!fs.fstatSync(fd).isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EEXIST' })
      fs.writeSync(fd, body, 0, body.length, 0)
      fs.ftruncateSync(fd, body.length)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  }
}
