import fs from 'fs'
import path from 'path'
import { LOCK_EX, LOCK_NB, LOCK_SH, loadAddon, PosixAddon } from '../native'
import { VolumeError } from './errors'

const posix = loadAddon<PosixAddon>('posix')
export const LOCK_FILE = 'sealfs.lock'
const LOCK_RETRIES = 20
const LOCK_RETRY_MS = 100

/**
 * The mount lock: flock(2) on sealfs.lock, exclusive for a read-write mount, shared for a
 * read-only one, held until the daemon exits (the kernel drops it if the daemon dies).
 * A read-only mount never creates the file: it locks it only if it already exists.
 */
export class VolumeLock {
  private constructor (private readonly fd: number | null, private readonly rotation = false) {}

  /**
   * `rotation`: taken by `key rotate`, which says so in the lock file, so that a mount or
   * another rotation meanwhile is told what holds the volume.
   */
  static acquire (cipherDir: string, readOnly: boolean, rotation = false): VolumeLock {
    const file = path.join(cipherDir, LOCK_FILE)
    let fd: number
    try {
      // O_NONBLOCK: a FIFO planted as the lock file must not hang the mount (it is refused below).
      fd = readOnly
        ? fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
        : fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600)
    } catch (e) {
      if (readOnly && (e as NodeJS.ErrnoException).code === 'ENOENT') return new VolumeLock(null)
      throw new VolumeError('busy', `cannot open the volume lock ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
    }
    if (!fs.fstatSync(fd).isFile()) {
      fs.closeSync(fd)
      throw new VolumeError('busy', `the volume lock ${file} is not a regular file`)
    }
    // A daemon whose mount was just unmounted needs a moment to close; wait for it briefly.
    let rc = posix.flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB)
    for (let i = 0; rc !== 0 && i < LOCK_RETRIES; i++) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, LOCK_RETRY_MS)
      rc = posix.flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB)
    }
    if (rc !== 0) {
      const holder = fs.readFileSync(fd, 'utf8').trim().slice(0, 64)
      fs.closeSync(fd)
      const rotating = /^(\d+) key-rotate$/.exec(holder)
      // A rotation that crashed left its text; its config says it is unfinished (checked next).
    if (rotating !== null && fs.existsSync(`/proc/${rotating[1]}`)) throw new VolumeError('rotation-in-progress', `a key rotation of ${cipherDir} is running (pid ${rotating[1]}); wait for it to end`)
      throw new VolumeError('busy', `${cipherDir} is already mounted${holder !== '' ? ` (daemon pid ${holder})` : ''}; a volume has one read-write mount at a time`)
    }
    if (!readOnly) {
      // Written over the old text, then cut to length: on a full disk the block the file
      // already has is reused, so that a full cipher dir still mounts read-write (its user
      // must be able to delete files). Where even that needs space (copy-on-write stores, an
      // empty lock file), the text is left out: the flock is the lock, the text only says who.
      const text = Buffer.from(rotation ? `${process.pid} key-rotate\n` : `${process.pid}\n`)
      try {
        fs.writeSync(fd, text, 0, text.length, 0)
        fs.ftruncateSync(fd, text.length)
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code
        if (code !== 'ENOSPC' && code !== 'EDQUOT') throw e
        fs.ftruncateSync(fd, 0)
      }
    }
    return new VolumeLock(fd, rotation)
  }

  /**
   * What the lock file says of its holder ("PID\n", "PID key-rotate\n"; '' if none), read
   * without taking the lock, following a symlink or blocking on a FIFO.
   */
  static holder (cipherDir: string): string {
    try {
      const fd = fs.openSync(path.join(cipherDir, LOCK_FILE), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
      try {
        if (!fs.fstatSync(fd).isFile()) return ''
        const b = Buffer.alloc(64)
        return b.toString('utf8', 0, fs.readSync(fd, b, 0, b.length, 0))
      } finally {
        fs.closeSync(fd)
      }
    } catch {
      return ''  // no lock file: nothing holds the volume
    }
  }

  /**
   * No lock: a volume opened beside a mount to read names and headers, writing nothing
   * (`sealfs path`). Refused while a key rotation runs (the lock file says so): names and
   * headers change under it.
   */
  static none (cipherDir: string): VolumeLock {
    const rotating = /^(\d+) key-rotate\n/.exec(VolumeLock.holder(cipherDir))
    // A rotation that crashed left its text; its config says it is unfinished (checked next).
    if (rotating !== null && fs.existsSync(`/proc/${rotating[1]}`)) throw new VolumeError('rotation-in-progress', `a key rotation of ${cipherDir} is running (pid ${rotating[1]}); wait for it to end`)
    return new VolumeLock(null)
  }

  release (): void {
    if (this.fd === null) return
    // A rotation's text goes with it: a later holder must not be taken for a rotation.
    if (this.rotation) try { fs.ftruncateSync(this.fd, 0) } catch { /* the lock goes anyway */ }
    fs.closeSync(this.fd)
  }
}

export const CONFIG_LOCK_FILE = 'sealfs.conf.lock'

/**
 * The key-slot lock: flock(2) on sealfs.conf.lock, exclusive, held while a key command reads,
 * changes and replaces sealfs.conf, so that two at once cannot lose each other's change. It
 * is not the mount lock: slots change while the volume is mounted (a mount reads the config
 * only when it unlocks).
 */
export class ConfigLock {
  private constructor (private readonly fd: number) {}

  static acquire (cipherDir: string): ConfigLock {
    const file = path.join(cipherDir, CONFIG_LOCK_FILE)
    let fd: number
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600)
    } catch (e) {
      throw new VolumeError('busy', `cannot open the key-slot lock ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
    }
    if (!fs.fstatSync(fd).isFile()) {
      fs.closeSync(fd)
      throw new VolumeError('busy', `${file} is not a regular file`)
    }
    let rc = posix.flock(fd, LOCK_EX | LOCK_NB)
    for (let i = 0; rc !== 0 && i < LOCK_RETRIES * 5; i++) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, LOCK_RETRY_MS)
      rc = posix.flock(fd, LOCK_EX | LOCK_NB)
    }
    if (rc !== 0) {
      fs.closeSync(fd)
      throw new VolumeError('busy', `another key command is changing ${cipherDir}'s key slots`)
    }
    return new ConfigLock(fd)
  }

  release (): void {
    fs.closeSync(this.fd)
  }
}
