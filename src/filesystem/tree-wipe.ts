import fs from 'fs'
import path from 'path'
import { VolumeError } from '../volume/errors'
import { AT_REMOVEDIR, STAT_LENGTH, STAT_MODE, TYPE_DIR, backing, listDirSync } from './backing-addon'
import { mountTable } from './mountinfo'

const EISDIR = 21
const O_DIRECTORY = fs.constants.O_DIRECTORY
/** Deeper than any tree sealfs makes of a 4,095-byte path of one-byte names... and bounded. */
const MAX_DEPTH = 2048
/** What a backing entry of a volume is called: an encrypted name (base64url) or one of sealfs's own. */
const VOLUME_NAME = /^([A-Za-z0-9_-]+|sealfs\..*)$/s

function refuse (why: string): never {
  throw new VolumeError('not-empty', `not wiping the earlier ephemeral volume: ${why}`)
}

function names (dirfd: number): Buffer[] {
  const list = listDirSync(dirfd)
  if (typeof list === 'number') refuse(`cannot list a directory (errno ${-list})`)
  return list.map(e => e.name)
}

function openDir (dirfd: number, name: Buffer): number {
  const fd = backing.openAt(dirfd, name, O_DIRECTORY, 0, TYPE_DIR)
  if (fd < 0) refuse(`cannot open a directory (errno ${-fd})`)
  return fd
}

function deviceOf (fd: number): number {
  return fs.fstatSync(fd).dev
}

/**
 * Walks the tree below `dirfd` without following a symlink (each directory opened with
 * O_NOFOLLOW and checked to be one): the scan checks every entry and deletes nothing; the
 * wipe unlinks each entry, and empties and removes each directory.
 */
function walk (dirfd: number, dev: number, depth: number, top: Set<string> | null, wipe: boolean): void {
  if (depth > MAX_DEPTH) refuse(`it is more than ${MAX_DEPTH} directories deep`)
  for (const name of names(dirfd)) {
    if (top?.has(name.toString('latin1')) === true) continue
    if (!wipe) {
      // The scan: every name must be one a volume has, and no directory another filesystem.
      if (!VOLUME_NAME.test(name.toString('latin1'))) refuse(`it holds '${name.toString('latin1').replace(/[^\x20-\x7e]/g, '?').slice(0, 40)}', which is not a volume's entry`)
      const st = new Float64Array(STAT_LENGTH)
      const r = backing.statAt(dirfd, name, st)
      if (r < 0) refuse(`cannot stat an entry (errno ${-r})`)
      if ((st[STAT_MODE] & 0o170000) === 0o040000) walkInto(dirfd, name, dev, depth, false)
      continue
    }
    const r = backing.unlinkAt(dirfd, name, 0)
    if (r >= 0) continue
    if (r !== -EISDIR) refuse(`cannot remove an entry (errno ${-r})`)
    walkInto(dirfd, name, dev, depth, true)
    const rd = backing.unlinkAt(dirfd, name, AT_REMOVEDIR)
    if (rd < 0) refuse(`cannot remove a directory (errno ${-rd})`)
  }
}

/** walk() of the subdirectory `name`, which must be on the same filesystem (no mount point crossed). */
function walkInto (dirfd: number, name: Buffer, dev: number, depth: number, wipe: boolean): void {
  const sub = openDir(dirfd, name)
  try {
    if (deviceOf(sub) !== dev) refuse('a filesystem is mounted inside it')
    walk(sub, dev, depth + 1, null, wipe)
  } finally {
    fs.closeSync(sub)
  }
}

/**
 * Deletes the contents of the directory `dirfd` but the top-level names in `keep`, after a
 * scan that finds only what a volume holds: base64url names and sealfs's own, no other
 * filesystem mounted inside (by device, and by the mount table for bind mounts). Every step
 * is relative to a descriptor and no symlink is followed anywhere: a planted link is
 * removed, not entered (the cipher dir is hostile input, and the daemon may be root).
 */
export function wipeTree (dirfd: number, keep: string[]): void {
  const where = fs.readlinkSync(`/proc/self/fd/${dirfd}`)
  if (mountTable().some(m => m.mountpoint.startsWith(where + path.sep))) refuse('a filesystem is mounted inside it')
  const dev = deviceOf(dirfd)
  const top = new Set(keep)
  walk(dirfd, dev, 0, top, false)
  walk(dirfd, dev, 0, top, true)
}
