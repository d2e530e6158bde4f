import crypto from 'crypto'
import { DIR_ID_BYTES, NAME_MAX } from '../crypto/name-cipher'
import { logLine } from '../log'
import { DIR_ID_FILE, newDirId } from '../volume/dir-id'
import { Volume } from '../volume/volume'
import { Backing, Dirent } from './backing'
import { FsError } from './fs-error'
import { Inode } from './inodes'

/** Encrypted names longer than this go to a hashed entry plus a sidecar holding the full name. */
const BACKING_NAME_MAX = 255
export const LONG_PREFIX = 'sealfs.long.'
export const LONG_SIDECAR_SUFFIX = '.name'
/** Entries being built before they are renamed into place (never listed: the name has dots). */
export const TEMP_PREFIX = 'sealfs.tmp.'
/** A sidecar holds one encrypted name: far less than this. */
const SIDECAR_MAX = 4096
const REPORTED_MAX = 10000
const DIR_ID_NAME = Buffer.from(DIR_ID_FILE)
const DOT = 0x2e

/** Where a plaintext name lives in its backing directory. */
export interface BackingName {
  /** The backing entry's name. */
  name: Buffer
  /** The full encrypted name (what a long name's sidecar holds). */
  encrypted: string
  /** The long-name sidecar's name, or null for a name that fits. */
  sidecar: Buffer | null
}


export function longHash (encrypted: string): string {
  return crypto.createHash('sha256').update(encrypted).digest('base64url')
}

export function tempName (): Buffer {
  return Buffer.from(`${TEMP_PREFIX}${crypto.randomBytes(8).toString('hex')}`)
}

/**
 * Plaintext names ↔ backing names within one directory. Each name is encrypted with its
 * directory's ID; a name too long for the backing store becomes a hashed entry plus a
 * sidecar. Names of sealfs's own files all contain a '.', which base64url never does, so
 * they cannot collide with an encrypted name. Every access is relative to the directory's
 * descriptor.
 */
export class EntryNames {
  readonly #reported = new Set<string>()

  constructor (private readonly volume: Volume, private readonly backing: Backing) {}

  /**
   * The directory ID of a directory node, read from its sealfs.diriv once. A directory whose
   * ID file is missing or empty but which holds no entry (what a crash between the two steps
   * of rmdir, or inside the write of a new ID, leaves) gets a new one on a read-write mount:
   * no name depends on it. Otherwise EIO, and `sealfs fsck` names the directory.
   */
  async dirId (dir: Inode): Promise<Buffer> {
    if (dir.dirId !== null) return dir.dirId
    let id: Buffer | null = null
    let lost = false
    try {
      id = await this.backing.readSmallFileAt(dir.fd, DIR_ID_NAME, DIR_ID_BYTES + 1)
      lost = id.length === 0
    } catch (e) {
      lost = (e as FsError).code === 'ENOENT'
    }
    if (lost && !this.volume.readOnly) id = await this.#remake(dir).catch(() => null)
    if (id === null || id.length !== DIR_ID_BYTES) {
      logLine('a directory\'s ID file is missing or damaged; returning EIO (sealfs fsck names it)')
      throw new FsError('EIO')
    }
    dir.dirId = id
    return id
  }

  /** A new ID for a directory that lost its own and holds no entry; null if it holds one. */
  async #remake (dir: Inode): Promise<Buffer | null> {
    const names = (await this.backing.listDir(dir.fd)).map(e => e.name.toString('latin1'))
    // An encrypted name, or a long name's entry or sidecar: names that need the lost ID.
    if (names.some(n => !n.includes('.') || n.startsWith(LONG_PREFIX))) return null
    if (names.includes(DIR_ID_FILE)) await this.backing.unlinkAt(dir.fd, DIR_ID_NAME, 0)  // empty: never written whole
    await this.backing.writeFileAt(dir.fd, DIR_ID_NAME, newDirId(), 0o400, true).catch((e: FsError) => { if (e.code !== 'EEXIST') throw e })
    logLine('a directory\'s ID file was missing and the directory held no entry (a crash during rmdir?): it has a new one')
    return await this.backing.readSmallFileAt(dir.fd, DIR_ID_NAME, DIR_ID_BYTES + 1)  // whoever made it first
  }

  async backingName (dir: Inode, plain: Buffer): Promise<BackingName> {
    if (plain.length > NAME_MAX) throw new FsError('ENAMETOOLONG')
    const encrypted = this.volume.names.encrypt(await this.dirId(dir), plain)
    if (encrypted.length <= BACKING_NAME_MAX) return { name: Buffer.from(encrypted, 'latin1'), encrypted, sidecar: null }
    const hashed = LONG_PREFIX + longHash(encrypted)
    return { name: Buffer.from(hashed, 'latin1'), encrypted, sidecar: Buffer.from(hashed + LONG_SIDECAR_SUFFIX, 'latin1') }
  }

  /**
   * Writes the sidecar of a long name before the entry itself appears: into a new temporary
   * file (O_EXCL opens nothing that exists), synced, then renamed over the sidecar's name.
   * rename replaces whatever stands there, a planted symlink or FIFO too, without opening or
   * following it, and an existing entry's sidecar is never missing, not even for a moment.
   */
  async writeSidecar (dir: Inode, entry: BackingName): Promise<void> {
    if (entry.sidecar === null) return
    const tmp = tempName()
    await this.backing.writeFileAt(dir.fd, tmp, Buffer.from(entry.encrypted, 'latin1'), 0o400, true)
    await this.backing.renameAt(dir.fd, tmp, dir.fd, entry.sidecar, 0).catch(async (e: unknown) => {
      await this.backing.unlinkAt(dir.fd, tmp, 0).catch(() => undefined)
      throw e
    })
  }

  async removeSidecar (dir: Inode, entry: BackingName): Promise<void> {
    if (entry.sidecar !== null) await this.backing.unlinkAt(dir.fd, entry.sidecar, 0).catch(() => undefined)
  }

  /**
   * The plaintext entries of a directory. Entries that do not decrypt (a stray file, an NFS
   * silly-rename, a missing or planted sidecar) are left out and reported once, by backing
   * name only.
   */
  async list (dir: Inode): Promise<Dirent[]> {
    const dirId = await this.dirId(dir)
    const out: Dirent[] = []
    for (const { name: backing, ino, type } of await this.backing.listDir(dir.fd)) {
      let encrypted: string | null = null
      if (backing.includes(DOT)) {
        const s = backing.toString('latin1')
        if (!s.startsWith(LONG_PREFIX) || s.endsWith(LONG_SIDECAR_SUFFIX)) continue  // sealfs's own files
        const sidecar = await this.backing.readSmallFileAt(dir.fd, Buffer.from(s + LONG_SIDECAR_SUFFIX, 'latin1'), SIDECAR_MAX).catch(() => null)
        encrypted = sidecar?.toString('latin1') ?? null
        // The entry's name is the hash of what its sidecar holds: a sidecar copied from
        // another entry would list a name that lookup finds elsewhere.
        if (encrypted !== null && LONG_PREFIX + longHash(encrypted) !== s) encrypted = null
      } else {
        encrypted = backing.toString('latin1')
      }
      const name = encrypted === null ? null : this.#decrypt(dirId, encrypted)
      if (name === null) {
        this.#report(dir, backing)
        continue
      }
      out.push({ name, ino, type })
    }
    return out
  }

  #decrypt (dirId: Buffer, encrypted: string): Buffer | null {
    try {
      return this.volume.names.decrypt(dirId, encrypted)
    } catch {
      return null
    }
  }

  #report (dir: Inode, backing: Buffer): void {
    const key = `${dir.key}/${backing.toString('hex')}`
    if (this.#reported.has(key)) return
    if (this.#reported.size >= REPORTED_MAX) this.#reported.clear()  // bounded: at worst an entry is logged again
    this.#reported.add(key)
    logLine(`skipping an entry that does not decrypt in a directory (backing name ${backing.toString('latin1').slice(0, 24).replace(/[^\x20-\x7e]/g, '?')})`)
  }
}
