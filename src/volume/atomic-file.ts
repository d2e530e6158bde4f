import fs from 'fs'
import path from 'path'
import { randomBytes } from '../crypto/secret-key'

/**
 * Replaces `file` with `data` so that a crash leaves either the old or the new content:
 * write a temp file in the same directory, fsync it, rename over, fsync the directory.
 * `owner`: the new file's owner (root replacing a file of someone else's keeps it theirs).
 */
export function writeFileAtomic (file: string, data: Buffer | string, mode: number, owner?: { uid: number, gid: number }): void {
  const tmp = path.join(path.dirname(file), `${path.basename(file)}.tmp-${randomBytes(6).toString('hex')}`)
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode)
  try {
    if (owner !== undefined) fs.fchownSync(fd, owner.uid, owner.gid)
    writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  try {
    fs.renameSync(tmp, file)
  } catch (e) {
    fs.rmSync(tmp, { force: true })
    throw e
  }
  syncDir(path.dirname(file))
}

/** Writes all of `data` at the descriptor's position: a short write (a nearly full disk) goes on, or fails. */
export function writeAll (fd: number, data: Buffer): void {
  for (let off = 0; off < data.length;) {
    const n = fs.writeSync(fd, data, off, data.length - off)
    if (n <= 0) throw Object.assign(new Error('short write'), { code: 'EIO', syscall: 'write' })
    off += n
  }
}

export function syncDir (dir: string): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
  try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
}
