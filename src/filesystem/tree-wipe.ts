import fs from 'fs'
import { VolumeError } from '../volume/errors'
import { AT_REMOVEDIR, DIRENT_HEADER, TYPE_DIR, backing } from './backing-addon'

const EISDIR = 21
const O_DIRECTORY = fs.constants.O_DIRECTORY

function fail (what: string, r: number): never {
  throw new VolumeError('not-empty', `cannot wipe the earlier ephemeral volume: ${what} failed (errno ${-r})`)
}

function names (dirfd: number): Buffer[] {
  const raw = backing.readdirFd(dirfd)
  if (typeof raw === 'number') fail('readdir', raw)
  const out: Buffer[] = []
  for (let at = 0; at + DIRENT_HEADER <= raw.length;) {
    const len = raw[at + DIRENT_HEADER - 1]
    out.push(Buffer.from(raw.subarray(at + DIRENT_HEADER, at + DIRENT_HEADER + len)))
    at += DIRENT_HEADER + len
  }
  return out
}

/** Deletes everything below `dirfd` (not `dirfd` itself), each step relative to a descriptor. */
function wipeBelow (dirfd: number, keep: Set<string>): void {
  for (const name of names(dirfd)) {
    if (keep.has(name.toString('latin1'))) continue
    const r = backing.unlinkAt(dirfd, name, 0)
    if (r >= 0) continue
    if (r !== -EISDIR) fail('unlink', r)
    // A directory: opened without following a symlink (O_NOFOLLOW, type checked), emptied, removed.
    const sub = backing.openAt(dirfd, name, O_DIRECTORY, 0, TYPE_DIR)
    if (sub < 0) fail('open', sub)
    try {
      wipeBelow(sub, new Set())
    } finally {
      backing.closeFd(sub)
    }
    const rd = backing.unlinkAt(dirfd, name, AT_REMOVEDIR)
    if (rd < 0) fail('rmdir', rd)
  }
}

/**
 * Deletes the contents of `dir` but the top-level names in `keep`, never following a
 * symlink anywhere in it: a planted link is removed, not entered, and nothing outside the
 * directory is touched (the cipher dir is hostile input, and the daemon may be root).
 */
export function wipeTree (dir: string, keep: string[]): void {
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | O_DIRECTORY)
  try {
    wipeBelow(fd, new Set(keep))
  } finally {
    fs.closeSync(fd)
  }
}
