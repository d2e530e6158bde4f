import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { NAME_MAX } from '../crypto/name-cipher'
import { readDirId } from '../volume/dir-id'
import { Volume } from '../volume/volume'
import { logLine } from '../log'
import { FsError } from './fs-error'

/** Encrypted names longer than this go to a hashed entry plus a sidecar holding the full name. */
const BACKING_NAME_MAX = 255
const LONG_PREFIX = 'sealfs.long.'
const LONG_SIDECAR_SUFFIX = '.name'
/** Files being written before they are renamed into place (never listed: the name has dots). */
export const TEMP_PREFIX = 'sealfs.tmp.'
const DIR_ID_CACHE_MAX = 4096
const DIR_PATH_CACHE_MAX = 4096
const REPORTED_MAX = 10000
/** A sidecar holds one encrypted name: far less than this. */
const SIDECAR_MAX = 4096

/**
 * A long name's sidecar, or null if it is missing, not a regular file or too big. Opened
 * without following a symlink and without blocking, so a FIFO planted in its place cannot
 * stall the daemon.
 */
async function readSidecar (file: string): Promise<string | null> {
  const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants
  const h = await fs.promises.open(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK).catch(() => null)
  if (h === null) return null
  try {
    const st = await h.stat()
    if (!st.isFile() || st.size > SIDECAR_MAX) return null
    const buf = Buffer.alloc(st.size)
    const { bytesRead } = await h.read(buf, 0, st.size, 0)
    return bytesRead === st.size ? buf.toString('utf8') : null
  } catch {
    return null  // one unreadable sidecar leaves its entry out, never the whole listing
  } finally {
    await h.close().catch(() => undefined)
  }
}
/** libfuse's name for a file unlinked while open (it unlinks it at the last close). */
export const FUSE_HIDDEN = '.fuse_hidden'
/** Where such a file goes when its directory is removed: the cipher dir's root, by this prefix. */
export const ORPHAN_PREFIX = 'sealfs.orphan.'

export interface CipherEntry {
  /** Backing path of the entry. */
  path: string
  /** Backing path of its parent directory. */
  parent: string
  /** Full encrypted name (what the sidecar holds for a long name). */
  encrypted: string
  /** Backing path of the long-name sidecar, or null for a name that fits. */
  sidecar: string | null
}

/**
 * Maps plaintext paths to backing paths. Each component is encrypted with its parent's
 * directory ID; directory IDs are read from the cipher dir once and cached.
 * Names of our own files all contain a '.', which base64url never does, so they
 * cannot collide with an encrypted name.
 */
export class CipherPaths {
  readonly #dirIds = new Map<string, Buffer>()
  /** Plaintext directory path → its backing path, so a lookup encrypts one name, not the whole path. */
  readonly #dirPaths = new Map<string, string>()
  readonly #reported = new Set<string>()
  /** Plaintext paths of hidden files whose directory was removed → their backing path. */
  readonly #orphans = new Map<string, string>()

  constructor (private readonly volume: Volume) {}

  async resolve (plainPath: string): Promise<CipherEntry> {
    if (this.#orphans.size > 0) {
      const orphan = this.#orphans.get(plainPath)
      if (orphan !== undefined) return { path: orphan, parent: this.volume.dir, encrypted: '', sidecar: null }
    }
    const parts = plainPath.split('/').filter(p => p.length > 0)
    if (parts.length === 0) return { path: this.volume.dir, parent: this.volume.dir, encrypted: '', sidecar: null }
    const parentKey = parts.slice(0, -1).join('/')
    let dir = parentKey === '' ? this.volume.dir : this.#dirPaths.get(parentKey)
    if (dir === undefined) {
      dir = this.volume.dir
      for (let i = 0; i < parts.length - 1; i++) dir = this.#child(dir, await this.dirId(dir), parts[i]).path
      if (this.#dirPaths.size >= DIR_PATH_CACHE_MAX) this.#dirPaths.delete(this.#dirPaths.keys().next().value as string)
      this.#dirPaths.set(parentKey, dir)
    }
    return this.#child(dir, await this.dirId(dir), parts[parts.length - 1])
  }

  #child (dir: string, dirId: Buffer, name: string): CipherEntry {
    const plain = Buffer.from(name, 'utf8')
    if (plain.length > NAME_MAX) throw new FsError('ENAMETOOLONG')
    const encrypted = this.volume.names.encrypt(dirId, plain)
    if (encrypted.length <= BACKING_NAME_MAX) return { path: path.join(dir, encrypted), parent: dir, encrypted, sidecar: null }
    const hashed = LONG_PREFIX + crypto.createHash('sha256').update(encrypted).digest('base64url')
    return { path: path.join(dir, hashed), parent: dir, encrypted, sidecar: path.join(dir, hashed + LONG_SIDECAR_SUFFIX) }
  }

  async dirId (cipherDir: string): Promise<Buffer> {
    const hit = this.#dirIds.get(cipherDir)
    if (hit !== undefined) return hit
    const id = await readDirId(cipherDir)
    if (this.#dirIds.size >= DIR_ID_CACHE_MAX) this.#dirIds.delete(this.#dirIds.keys().next().value as string)
    this.#dirIds.set(cipherDir, id)
    return id
  }

  /**
   * Moves libfuse's hidden files out of a directory that is about to be removed, so that it
   * is empty as it looks. Returns false (and moves nothing) unless every entry but the
   * directory ID is such a file. libfuse still knows each file by its old path, which keeps
   * resolving to the new place until the file is unlinked at its last close.
   */
  async evictHidden (cipherDir: string, plainDir: string, entries: string[]): Promise<boolean> {
    const dirId = await this.dirId(cipherDir)
    const hidden = entries.map(backing => ({ backing, name: backing.includes('.') ? null : this.#decrypt(dirId, backing) }))
    if (!hidden.every(h => h.name?.startsWith(FUSE_HIDDEN) === true)) return false
    for (const h of hidden) {
      const orphan = path.join(this.volume.dir, ORPHAN_PREFIX + crypto.randomBytes(12).toString('hex'))
      await fs.promises.rename(path.join(cipherDir, h.backing), orphan)
      this.#orphans.set(path.posix.join(plainDir, h.name as string), orphan)
    }
    return true
  }

  /** The backing path of a hidden file that evictHidden moved, if `plainPath` names one. */
  orphan (plainPath: string): string | undefined {
    return this.#orphans.size > 0 ? this.#orphans.get(plainPath) : undefined
  }

  forgetOrphan (plainPath: string): void {
    this.#orphans.delete(plainPath)
  }

  rememberDirId (cipherDir: string, id: Buffer): void {
    this.#dirIds.set(cipherDir, id)
  }

  /** Forgets cached directory IDs and paths at and below a backing directory that moved or went away. */
  forgetTree (cipherDir: string): void {
    const prefix = cipherDir + path.sep
    for (const k of this.#dirIds.keys()) if (k === cipherDir || k.startsWith(prefix)) this.#dirIds.delete(k)
    // A cached path whose backing lies in the tree named the old tree (another directory ID).
    for (const [k, v] of this.#dirPaths) if (v === cipherDir || v.startsWith(prefix)) this.#dirPaths.delete(k)
  }

  /**
   * Writes the sidecar of a long name before the entry itself appears: into a new temporary
   * file (O_EXCL opens nothing that exists), renamed over the sidecar's name. rename replaces
   * whatever stands there, a symlink or FIFO planted in the cipher dir too, without opening
   * or following it, and an existing entry's sidecar is never missing, not even for a moment.
   * (Directories above it are still reached by path until issue 12's descriptor-relative binding.)
   */
  async writeSidecar (entry: CipherEntry): Promise<void> {
    if (entry.sidecar === null) return
    const tmp = path.join(entry.parent, `${TEMP_PREFIX}${crypto.randomBytes(8).toString('hex')}`)
    const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants
    await fs.promises.writeFile(tmp, entry.encrypted, { mode: 0o400, flag: O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW })
    await fs.promises.rename(tmp, entry.sidecar).catch(async (e: unknown) => {
      await fs.promises.unlink(tmp).catch(() => undefined)
      throw e
    })
  }

  async removeSidecar (entry: CipherEntry): Promise<void> {
    if (entry.sidecar !== null) await fs.promises.rm(entry.sidecar, { force: true })
  }

  /**
   * The plaintext names of a backing directory. Entries that do not decrypt (a stray
   * file, an NFS silly-rename) are left out and reported once, by backing name only.
   */
  async list (cipherDir: string): Promise<string[]> {
    const dirId = await this.dirId(cipherDir)
    const names: string[] = []
    for (const backing of await fs.promises.readdir(cipherDir)) {
      let encrypted: string | null = backing
      if (backing.startsWith(LONG_PREFIX)) {
        if (backing.endsWith(LONG_SIDECAR_SUFFIX)) continue
        encrypted = await readSidecar(path.join(cipherDir, backing + LONG_SIDECAR_SUFFIX))
      } else if (backing.includes('.')) {
        continue  // sealfs's own files (sealfs.diriv, sealfs.conf, sealfs.index, temp files)
      }
      const name = encrypted === null ? null : this.#decrypt(dirId, encrypted)
      if (name === null) {
        const key = path.join(cipherDir, backing)
        if (!this.#reported.has(key)) {
          if (this.#reported.size >= REPORTED_MAX) this.#reported.clear()  // bounded: at worst an entry is logged again
          this.#reported.add(key)
          logLine(`skipping an entry that does not decrypt in a directory (backing name ${backing.slice(0, 24)})`)
        }
        continue
      }
      names.push(name)
    }
    return names
  }

  #decrypt (dirId: Buffer, encrypted: string): string | null {
    try {
      return this.volume.names.decrypt(dirId, encrypted).toString('utf8')
    } catch {
      return null
    }
  }
}

