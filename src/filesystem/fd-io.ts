import fs from 'fs'
import { promisify } from 'util'
import { backing, STAT_ATIME_NSEC, STAT_ATIME_SEC, STAT_LENGTH, STAT_MTIME_NSEC, STAT_MTIME_SEC } from './backing-addon'

// Positional I/O on descriptors of open backing files, async, with short writes completed.

export const ftruncateFd = promisify(fs.ftruncate)
export const fdatasyncFd = promisify(fs.fdatasync)
export const fstatFd = promisify(fs.fstat)

/** Reads up to buf.length bytes at `pos` (fewer only at the end of the file). */
export async function readAt (fd: number, buf: Buffer, pos: number): Promise<number> {
  let off = 0
  while (off < buf.length) {
    const { bytesRead } = await promisify(fs.read)(fd, buf, off, buf.length - off, pos + off)
    if (bytesRead === 0) break
    off += bytesRead
  }
  return off
}

export function writeFullAt (fd: number, buf: Buffer, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (off: number): void => {
      fs.write(fd, buf, off, buf.length - off, pos + off, (err, n) => {
        if (err) return reject(err)
        if (off + n < buf.length) return step(off + n)
        resolve()
      })
    }
    step(0)
  })
}

/**
 * Writes `buf` at `pos` as writeFullAt does, then puts back the file's access and
 * modification times as they were before it: a write of sealfs's own (a header moving along
 * its nonce chain), which is not a change of the plaintext the user made. Best effort (a
 * file the daemon may write but does not own keeps the new times).
 */
export async function writeKeepingTimes (fd: number, buf: Buffer, pos: number): Promise<void> {
  const st = new Float64Array(STAT_LENGTH)
  const stated = await new Promise<boolean>(resolve => backing.statAt(fd, EMPTY, st, rc => resolve(rc >= 0)))
  await writeFullAt(fd, buf, pos)
  if (!stated) return
  await new Promise<void>(resolve => backing.utimensFd(fd, st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC], st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC], () => resolve()))
}

/** writeKeepingTimes on this thread (a local disk: a header into the page cache). */
export function writeKeepingTimesSync (fd: number, buf: Buffer, pos: number): void {
  const st = new Float64Array(STAT_LENGTH)
  const stated = backing.statAt(fd, EMPTY, st) >= 0
  writeAllAtSync(fd, buf, pos)
  if (stated) backing.utimensFd(fd, st[STAT_ATIME_SEC], st[STAT_ATIME_NSEC], st[STAT_MTIME_SEC], st[STAT_MTIME_NSEC])
}

const EMPTY = Buffer.alloc(0)

/** Reads up to buf.length bytes at `pos`, on this thread (tools that walk an unmounted volume); the count, short only at the end of the file. */
export function readFullAtSync (fd: number, buf: Buffer, pos: number): number {
  let got = 0
  while (got < buf.length) {
    const n = fs.readSync(fd, buf, got, buf.length - got, pos + got)
    if (n === 0) break
    got += n
  }
  return got
}

/** Writes all of `buf` at `pos`, on this thread (tools that walk an unmounted volume). */
export function writeAllAtSync (fd: number, buf: Buffer, pos: number): void {
  for (let done = 0; done < buf.length;) done += fs.writeSync(fd, buf, done, buf.length - done, pos + done)
}
