import { readFullAtSync } from './fd-io'
import { backing, listDirSync, STAT_DEV, STAT_LENGTH, STAT_MODE, TYPE_DIR, TYPE_REG } from './backing-addon'
import { S_IFDIR, S_IFMT, S_IFREG } from './inodes'
import { LONG_PREFIX, LONG_SIDECAR_SUFFIX, longHash } from './entry-names'
import { DIR_ID_BYTES } from '../crypto/name-cipher'
import { DIR_ID_FILE } from '../volume/dir-id'
import { decodeHeader, HEADER_BYTES } from '../volume/file-header'
import type { Volume } from '../volume/volume'
import fs from 'fs'

const O_RDONLY = 0
const O_DIRECTORY = fs.constants.O_DIRECTORY
const SIDECAR_MAX = 4096
const MAX_DEPTH = 2048

/** An entry of a volume: its plaintext path (from the volume's root), its backing path (from the cipher dir), and a file's ID. */
export interface VolumeEntry {
  path: string
  backing: string
  /** Hex; null for what is not a regular file. */
  fileId: string | null
}

interface Named { raw: Buffer, shown: string, plain: string, type: number, dev: number }

/**
 * The entries of a backing directory whose names decrypt, with their plaintext names. What
 * does not decrypt, sealfs's own files and a long name's sidecar are left out (fsck names them).
 */
function namedEntries (volume: Volume, dirfd: number): Named[] {
  const id = backing.readSmallFileAt(dirfd, Buffer.from(DIR_ID_FILE), DIR_ID_BYTES + 1)
  if (typeof id === 'number' || id.length !== DIR_ID_BYTES) return []
  const list = listDirSync(dirfd)
  if (typeof list === 'number') return []
  const out: Named[] = []
  for (const e of list) {
    const raw = e.name.toString('latin1')
    let encrypted: string | null = raw
    if (raw.includes('.')) {
      if (!raw.startsWith(LONG_PREFIX) || raw.endsWith(LONG_SIDECAR_SUFFIX)) continue
      const sidecar = backing.readSmallFileAt(dirfd, Buffer.from(raw + LONG_SIDECAR_SUFFIX, 'latin1'), SIDECAR_MAX)
      encrypted = typeof sidecar === 'number' ? null : sidecar.toString('latin1')
      if (encrypted !== null && LONG_PREFIX + longHash(encrypted) !== raw) encrypted = null
    }
    if (encrypted === null) continue
    let plain: Buffer
    try { plain = volume.names.decrypt(id, encrypted) } catch { continue }
    const st = new Float64Array(STAT_LENGTH)
    if (backing.statAt(dirfd, e.name, st) < 0) continue
    out.push({ raw: e.name, shown: raw, plain: plain.toString('utf8'), type: st[STAT_MODE] & S_IFMT, dev: st[STAT_DEV] })
  }
  return out
}

/** The file ID in the header of a regular file `name` in `dirfd` (opened without following a symlink, never a FIFO), or null. */
function fileIdOf (dirfd: number, name: Buffer): string | null {
  const fd = backing.openAt(dirfd, name, O_RDONLY, 0, TYPE_REG)
  if (fd < 0) return null
  try {
    const b = Buffer.alloc(HEADER_BYTES)
    if (readFullAtSync(fd, b, 0) < HEADER_BYTES) return null
    return decodeHeader(b)?.fileId.toString('hex') ?? null
  } catch {
    return null
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Every entry whose header holds file ID `fileId` (a log line names a file by it): one, or
 * several for hard links or a header copied onto another file. Walks the whole volume, on
 * its own filesystem (a mount inside the cipher dir is not entered: a bind mount could loop);
 * `skipped` counts the directories not walked (that, or more than MAX_DEPTH deep).
 */
export function entriesOfFileId (volume: Volume, root: number, fileId: string): { found: VolumeEntry[], skipped: number } {
  const found: VolumeEntry[] = []
  let skipped = 0
  const rootSt = new Float64Array(STAT_LENGTH)
  const rootDev = backing.statAt(root, Buffer.alloc(0), rootSt) >= 0 ? rootSt[STAT_DEV] : -1
  const visit = (dirfd: number, plain: string, back: string, depth: number): void => {
    if (depth > MAX_DEPTH) { skipped++; return }
    for (const e of namedEntries(volume, dirfd)) {
      const p = `${plain}/${e.plain}`
      const b = back === '' ? e.shown : `${back}/${e.shown}`
      if (e.type === S_IFREG) {
        if (fileIdOf(dirfd, e.raw) === fileId) found.push({ path: p, backing: b, fileId })
      } else if (e.type === S_IFDIR) {
        if (e.dev !== rootDev) { skipped++; continue }
        const sub = backing.openAt(dirfd, e.raw, O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
        if (sub < 0) { skipped++; continue }
        try { visit(sub, p, b, depth + 1) } finally { fs.closeSync(sub) }
      }
    }
  }
  visit(root, '', '', 0)
  return { found, skipped }
}

/** The entry at plaintext path `plain` (from the volume's root), or null if there is none. */
export function entryAtPath (volume: Volume, root: number, plain: string): VolumeEntry | null {
  const parts = plain.split('/').filter(p => p !== '' && p !== '.')
  if (parts.includes('..')) return null
  if (parts.length === 0) return { path: '/', backing: '.', fileId: null }
  let dirfd = root
  let back = ''
  try {
    for (const [i, part] of parts.entries()) {
      const e = namedEntries(volume, dirfd).find(n => n.plain === part)
      if (e === undefined) return null
      back = back === '' ? e.shown : `${back}/${e.shown}`
      if (i === parts.length - 1) return { path: `/${parts.join('/')}`, backing: back, fileId: e.type === S_IFREG ? fileIdOf(dirfd, e.raw) : null }
      if (e.type !== S_IFDIR) return null
      const sub = backing.openAt(dirfd, e.raw, O_RDONLY | O_DIRECTORY, 0, TYPE_DIR)
      if (sub < 0) return null
      if (dirfd !== root) fs.closeSync(dirfd)
      dirfd = sub
    }
    return null
  } finally {
    if (dirfd !== root) fs.closeSync(dirfd)
  }
}
