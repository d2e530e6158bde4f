import fs from 'fs'
import { promisify } from 'util'
import { decodeHeader, FileHeader, HEADER_BYTES } from '../volume/file-header'
import { FsError } from './fs-error'

// Positional I/O on backing descriptors, async, with short reads and writes completed.

export const openFd = promisify(fs.open)
export const ftruncateFd = promisify(fs.ftruncate)
export const fsyncFd = promisify(fs.fsync)
export const fdatasyncFd = promisify(fs.fdatasync)

export function fstatFd (fd: number): Promise<fs.BigIntStats> {
  return new Promise((resolve, reject) => fs.fstat(fd, { bigint: true }, (err, st) => err ? reject(err) : resolve(st)))
}

function readAt (fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buf, 0, buf.length, pos, (err, n) => err ? reject(err) : resolve(n))
  })
}

/** Reads until `buf` is full or the file ends; resolves to the bytes read. */
export async function readFullAt (fd: number, buf: Buffer, pos: number): Promise<number> {
  let done = 0
  while (done < buf.length) {
    const n = await readAt(fd, done === 0 ? buf : buf.subarray(done), pos + done)
    if (n === 0) break
    done += n
  }
  return done
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

/** The header of the backing file behind `fd`: null for an empty (header-less) file, EIO if damaged. */
export async function readHeader (fd: number): Promise<FileHeader | null> {
  const buf = Buffer.alloc(HEADER_BYTES)
  const n = await readFullAt(fd, buf, 0)
  if (n === 0) return null
  const header = n === HEADER_BYTES ? decodeHeader(buf) : null
  if (header === null) throw new FsError('EIO')
  return header
}
