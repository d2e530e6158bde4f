import os from 'os'
import { loadAddon, PosixAddon } from '../native'
import { decodeHeader, HEADER_BYTES } from '../volume/file-header'
import { FsError } from './fs-error'

// File operations that take several syscalls on the backing store, each done as one job on
// the libuv pool (native-deps/posix): a hand-off to the pool and back costs more than the
// syscalls, and node:fs would make one per syscall.

const posix = loadAddon<PosixAddon>('posix')
const names = Object.fromEntries(Object.entries(os.constants.errno as Record<string, number>).map(([k, v]) => [v, k]))

function failure (negErrno: number): FsError {
  return new FsError(names[-negErrno] ?? 'EIO')
}

/**
 * Unlinks a backing entry. When it was a regular file's last link, resolves to that file's
 * ID (read from its header just before), so its DEK can go; otherwise to null.
 */
export function unlinkLast (backing: string): Promise<Buffer | null> {
  const header = Buffer.alloc(HEADER_BYTES)
  return new Promise((resolve, reject) => {
    posix.unlinkLastAsync(backing, header, n => {
      if (n < 0) reject(failure(n))
      else resolve(n === HEADER_BYTES ? decodeHeader(header)?.fileId ?? null : null)
    })
  })
}

/** Creates a backing file (open with O_CREAT in `flags`) with `header` written at its start; resolves to its descriptor. */
export function createWithHeader (backing: string, flags: number, mode: number, header: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    posix.createAsync(backing, flags, mode, header, n => n < 0 ? reject(failure(n)) : resolve(n))
  })
}
