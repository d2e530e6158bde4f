import fs from 'fs'
import { loadAddon, PosixAddon } from '../native'
import { decodeHeader, FileHeader, HEADER_BYTES } from '../volume/file-header'
import { FsError } from './fs-error'

// File operations that take several syscalls on the backing store, each done as one job on
// the libuv pool (native-deps/posix): a hand-off to the pool and back costs more than the
// syscalls, and node:fs would make one per syscall.

const posix = loadAddon<PosixAddon>('posix')

/**
 * Unlinks a backing entry. When it was a regular file's last link, resolves to that file's
 * ID (read from its header just before), so its DEK can go; otherwise to null.
 */
export function unlinkLast (backing: string): Promise<Buffer | null> {
  const header = Buffer.alloc(HEADER_BYTES)
  return new Promise((resolve, reject) => {
    posix.unlinkLastAsync(backing, header, n => {
      if (n < 0) reject(FsError.fromErrno(n))
      else resolve(n === HEADER_BYTES ? decodeHeader(header)?.fileId ?? null : null)
    })
  })
}

/** Creates a backing file (open with O_CREAT in `flags`) with `header` written at its start; resolves to its descriptor. */
export function createWithHeader (backing: string, flags: number, mode: number, header: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    posix.createAsync(backing, flags, mode, header, n => n < 0 ? reject(FsError.fromErrno(n)) : resolve(n))
  })
}

export interface OpenedFile {
  fd: number
  /** null for an empty (header-less) file. */
  header: FileHeader | null
  /** Size of the backing file. */
  size: number
}

/** Opens an existing backing file and reads its header and size. A damaged header is EIO (the file is closed). */
export function openWithHeader (backing: string, flags: number): Promise<OpenedFile> {
  const buf = Buffer.alloc(HEADER_BYTES)
  return new Promise((resolve, reject) => {
    posix.openHeaderAsync(backing, flags, buf, (fd, n, size) => {
      if (fd < 0) return reject(FsError.fromErrno(fd))
      if (n === 0) return resolve({ fd, header: null, size })
      const header = n === HEADER_BYTES ? decodeHeader(buf) : null
      if (header === null) {
        fs.close(fd, () => reject(new FsError('EIO')))
        return
      }
      resolve({ fd, header, size })
    })
  })
}
