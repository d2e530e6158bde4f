import fs from 'fs'
import sodium from 'sodium-native'
import path from 'path'
import { ChunkCipher, isValidChunkSize } from '../crypto/chunk-cipher'
import { firstNonce } from '../crypto/end-tag'
import { AuthenticationError } from '../crypto/errors'
import { LinkCipher } from '../crypto/link-cipher'
import { NameCipher } from '../crypto/name-cipher'
import { XattrCipher } from '../crypto/xattr-cipher'
import { DEFAULT_COST, costProblem } from '../crypto/passphrase-kdf'
import { SecretKey, randomBytes } from '../crypto/secret-key'
import { CONFIG_FILE, CONTENT_CIPHER, FORMAT_VERSION, KEY_WRAP, NAME_CIPHER, VolumeConfig, checkVolumeId, readConfig, removeStaleTemps, writeConfig } from './config'
import { DekIndex, INDEX_FILE } from './dek-index'
import { WRITE_JOURNAL_FILE, WriteJournal } from './write-journal'
import { DIR_ID_FILE, checkRootDirId, newDirId, writeDirIdSync } from './dir-id'
import { unreachable, VolumeError, upgradeUnfinished } from './errors'
import { FILE_ID_BYTES, FLAG_END_TAG, FLAG_SPARSE, FLAG_WRITE_WINDOW, FileHeader, encodeHeader } from './file-header'
import { FileLayout } from './file-layout'
import { Credential, createPassphraseSlot, unlockSlot } from './key-slot'
import { ConfigLock, LOCK_FILE, VolumeLock } from './volume-lock'
import { VolumeLease } from './volume-lease'
import { dekWrapKey, openNameKeys } from './volume-keys'
import { unwrapDek, wrapDek } from './dek-wrap'

/**
 * 4 KiB, the page size and what random I/O asks for: a 4 KiB read or write then opens or
 * seals one chunk, not eight (fio 4 KiB O_DIRECT through the mount: 43k random reads and 23k
 * random writes per second at 4 KiB chunks against 25k and 14k at 32 KiB; gocryptfs 37k and
 * 18k). Large requests lose little: the cipher seals 4.6 GB/s at 4 KiB against 5.4 GB/s at
 * 32 KiB (`npm run bench:crypto`). The prices: the nonce bound per file (docs/SECURITY.md),
 * 2^31 chunk writes being 8 TiB of writes to one file, not 64 TiB; 28 bytes of nonce and tag
 * per 4 KiB (0.7%, not 0.09%); and 4124-byte chunks straddle the backing's 4 KiB blocks.
 */
export const DEFAULT_CHUNK_SIZE = 4 * 1024

/**
 * Why the directory (a /proc/self/fd path) may not be wiped for an ephemeral mount, or null:
 * it must hold an ephemeral volume's config, owned by this user or root and writable by no
 * one else, in a directory no one else may write. A config is public JSON anyone could
 * plant; these keep a shared directory, or someone else's, from being wiped because of one.
 */
function ephemeralWipeRefusal (here: string): string | null {
  let earlier: VolumeConfig
  try {
    earlier = readConfig(here)
  } catch {
    return 'is neither empty nor an ephemeral volume'
  }
  if (earlier.ephemeral !== true) return 'holds a volume that is not ephemeral'
  const euid = process.geteuid?.() ?? -1
  const conf = fs.lstatSync(path.join(here, CONFIG_FILE))
  const dir = fs.statSync(here)
  const mine = (st: fs.Stats): boolean => st.uid === euid || st.uid === 0
  if (!mine(conf) || (conf.mode & 0o022) !== 0 || !mine(dir) || (dir.mode & 0o022) !== 0) {
    return 'holds an ephemeral volume that someone else owns or may write'
  }
  return null
}

/**
 * The volume's index, for a mount: reads never need it (only headers of an older key version
 * do), so a missing or damaged index never stops a mount, and is never silently replaced.
 * Read-write: a damaged one is moved aside (kept, not deleted) and a new one made; a missing
 * one is made. Read-only: the mount goes on without one. Each case is said in `notices`.
 */
function openIndex (dir: string, volumeId: string, readOnly: boolean, notices: string[]): DekIndex {
  const file = path.join(dir, INDEX_FILE)
  const repair = `run 'sealfs fsck --repair ${dir}' when it is not mounted, to rebuild the rows of existing files from their headers`
  let missing = false
  try { fs.lstatSync(file) } catch { missing = true }
  if (missing && readOnly) {
    notices.push(`${file} is missing: mounted without it; a file whose header a key rotation could not rewrite reads as EIO; ${repair}`)
    return new DekIndex(null, volumeId)
  }
  if (missing) {
    notices.push(`${file} was missing: a new, empty one was made; ${repair}`)
    return new DekIndex(dir, volumeId, false)
  }
  if (!fs.lstatSync(file).isFile()) throw new Error('it is not a regular file')
  try {
    return new DekIndex(dir, volumeId, readOnly)
  } catch (e) {
    const why = (e as Error).message.split('\n')[0]
    // Only a file that is not a database, or a corrupt one, is damaged: any other failure
    // (a path SQLite cannot open, a lock) leaves the index where it is.
    const code = (e as { code?: string }).code ?? ''
    if (why.includes('another volume') || !['SQLITE_NOTADB', 'SQLITE_CORRUPT'].includes(code)) throw e
    if (readOnly) {
      notices.push(`${file} cannot be opened (${why}): mounted without it; a file whose header a key rotation could not rewrite reads as EIO; ${repair}`)
      return new DekIndex(null, volumeId)
    }
    const aside = `${INDEX_FILE}.damaged-${randomBytes(4).toString('hex')}`
    fs.renameSync(file, path.join(dir, aside))
    // Its rollback journal goes with it: played back into the new index, it would damage that one too.
    try { fs.renameSync(`${file}-journal`, path.join(dir, `${aside}-journal`)) } catch { /* none */ }
    notices.push(`${file} could not be opened (${why}): it was moved to ${aside} and a new one made; ${repair}`)
    return new DekIndex(dir, volumeId, false)
  }
}

/** SQLite's unix VFS opens no path longer than this (its journal's name included). */
const SQLITE_PATH_MAX = 512

/** The name `init` gives the volume's first slot. */
export const FIRST_SLOT_NAME = 'passphrase'

export interface InitOptions {
  chunkSize?: number
  cost?: { opslimit: number, memlimit: number }
}

export interface NewFile {
  fileId: Buffer
  dek: SecretKey
  /** Its header's flags. */
  flags: number
  header: Buffer
}

export function checkDir (dir: string): void {
  let st: fs.Stats
  try {
    st = fs.statSync(dir)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EACCES') throw unreachable(dir)
    throw new VolumeError('missing-dir', `${dir} does not exist`)
  }
  if (!st.isDirectory()) throw new VolumeError('missing-dir', `${dir} is not a directory`)
}

/**
 * An unlocked volume: its config, the master key's subkeys, the content, name and link
 * ciphers, and the DEK index. Knows nothing of FUSE.
 */
export class Volume {
  readonly volumeId: Buffer
  readonly chunks: ChunkCipher
  /** Where a regular file's header, chunks and end tag lie (an upgrade in progress: as before it). */
  readonly layout: FileLayout
  readonly names: NameCipher
  readonly links: LinkCipher
  readonly xattrs: XattrCipher
  readonly index: DekIndex
  /** What each write that goes over bytes it keeps records first (docs/FORMAT.md §8). */
  readonly journal: WriteJournal
  readonly #dekWrapKey: SecretKey
  readonly #keys: SecretKey[]
  readonly #lock: VolumeLock
  /** What the user must be told about this unlock (an index that was missing or damaged). */
  readonly notices: string[] = []
  /** An upgrade to end tags is under way (fsck --repair --upgrade): files of both layouts open. */
  #upgrading: boolean

  private constructor (readonly dir: string, readonly config: VolumeConfig, masterKey: SecretKey, lock: VolumeLock, readonly readOnly: boolean,
    /** The volume lease (VolumeLease), held while a read-write mount on a network filesystem lasts: the caller renews it. */
    readonly lease: VolumeLease | null = null, withoutIndex = false) {
    this.#lock = lock
    this.#upgrading = config.endTags === 'upgrading'
    // The name keys first (a modified config fails here), then the index: if either fails,
    // the keys made so far are zeroed before the error goes up.
    const { nameEnc, nameMac, link, xattr } = openNameKeys(config, masterKey)
    this.#dekWrapKey = dekWrapKey(masterKey)
    this.#keys = [this.#dekWrapKey, nameEnc, nameMac, link, xattr]
    try {
      this.index = withoutIndex ? new DekIndex(null, config.volumeId) : openIndex(dir, config.volumeId, readOnly, this.notices)
    } catch (e) {
      for (const k of this.#keys) k.dispose()
      throw new VolumeError('damaged-config', `${dir}/sealfs.index cannot be opened (${(e as Error).message.split('\n')[0]})`)
    }
    this.volumeId = Buffer.from(config.volumeId, 'hex')
    this.chunks = new ChunkCipher(config.chunkSize)
    this.journal = WriteJournal.open(dir, this.chunks.stride, readOnly, this.notices)
    const interrupted = this.journal.interruptedCount
    if (interrupted > 0) {
      this.notices.push(`${interrupted} write${interrupted > 1 ? 's were' : ' was'} running when the volume last stopped (${WRITE_JOURNAL_FILE}): ` +
        (readOnly ? 'a chunk such a write cut short reads as EIO until a read-write mount or \'sealfs fsck --repair\' puts its old bytes back' : 'a chunk such a write cut short gets its old bytes back when its file is next opened (\'sealfs fsck --repair\' does it for all)'))
    }
    this.layout = new FileLayout(this.chunks, config.endTags === true)
    if (config.endTags === undefined) this.notices.push(`the files of this volume have no end tags (it was made before sealfs had them): a file cut short at a chunk boundary reads as shorter, without an error; 'sealfs fsck --repair --upgrade ${dir}' adds them`)
    else if (config.endTags === true && config.writeWindows !== true) this.notices.push(`the files of this volume have no write windows (it was made before sealfs had them): fsck cannot name a file overwritten in place while a copy of the volume was taken; 'sealfs fsck --repair --upgrade ${dir}' adds them`)
    this.names = new NameCipher(nameEnc, nameMac)
    this.links = new LinkCipher(link, this.volumeId)
    this.xattrs = new XattrCipher(this.names, xattr, this.volumeId)
  }

  static async init (dir: string, passphrase: Buffer, opts: InitOptions = {}): Promise<void> {
    checkDir(dir)
    if (fs.readdirSync(dir).length > 0) throw new VolumeError('not-empty', `${dir} is not empty`)
    const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE
    if (!isValidChunkSize(chunkSize)) throw new VolumeError('bad-input', 'chunk size must be a power of two from 4096 to 1048576')
    const cost = opts.cost ?? DEFAULT_COST
    const costWrong = costProblem(cost)
    if (costWrong !== null) throw new VolumeError('weak-kdf', costWrong)
    if (passphrase.length === 0) throw new VolumeError('bad-input', 'the passphrase is empty')
    const config: VolumeConfig = {
      format: 'sealfs',
      formatVersion: FORMAT_VERSION,
      volumeId: randomBytes(16).toString('hex'),
      contentCipher: CONTENT_CIPHER,
      chunkSize,
      nameCipher: NAME_CIPHER,
      keyWrap: KEY_WRAP,
      masterKeyVersion: 1,
      endTags: true,
      writeWindows: true,
      slots: []
    }
    const masterKey = SecretKey.random()
    try {
      config.slots.push(await createPassphraseSlot(config, { id: 1, name: FIRST_SLOT_NAME, created: new Date().toISOString() }, masterKey, passphrase, cost))
    } finally {
      masterKey.dispose()
    }
    // All or nothing: the directory was empty, and a failure half-way leaves it empty again
    // (not a directory that is neither empty nor a volume).
    try {
      writeDirIdSync(dir, newDirId())
      await new DekIndex(dir, config.volumeId).close()
      writeConfig(dir, config)
    } catch (e) {
      for (const name of [CONFIG_FILE, INDEX_FILE, `${INDEX_FILE}-journal`, DIR_ID_FILE]) {
        try { if (fs.lstatSync(path.join(dir, name)).isFile()) fs.rmSync(path.join(dir, name)) } catch { /* not made */ }
      }
      if (Buffer.byteLength(path.resolve(dir)) + INDEX_FILE.length + 9 > SQLITE_PATH_MAX) {
        throw new VolumeError('bad-input', `${dir}: the path is too long for the SQLite index (at most ${SQLITE_PATH_MAX} bytes with its file name); use a shorter one`)
      }
      throw e
    }
  }

  /**
   * A new ephemeral volume in `dir` for one mount: a random master key that never leaves this
   * process, no key slot, nothing on disk that could open it. `dir` must be empty or hold an
   * earlier ephemeral volume, which `wipe` empties first (under the mount lock, so a mounted
   * one is never wiped). The config is written first, so a crash at any point leaves a
   * directory the next ephemeral mount recognizes and wipes.
   */
  static async ephemeral (dir: string, wipe: (dirfd: number, keep: string[]) => void, opts: { chunkSize?: number } = {}): Promise<Volume> {
    try {
      return await Volume.#ephemeral(dir, wipe, opts)
    } catch (e) {
      if (e instanceof VolumeError) throw e
      // An I/O failure on the way (a race, EACCES): the ephemeral mount did not happen.
      throw new VolumeError('not-empty', `cannot make an ephemeral volume in ${dir}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
    }
  }

  static async #ephemeral (dir: string, wipe: (dirfd: number, keep: string[]) => void, opts: { chunkSize?: number }): Promise<Volume> {
    checkDir(dir)
    // The directory is resolved once: every check and the wipe go through this descriptor
    // (its /proc/self/fd path), so nothing swapped in at `dir` meanwhile can be wiped.
    const dirfd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    const here = `/proc/self/fd/${dirfd}`
    let lock: VolumeLock | null = null
    const check = (): boolean => {
      const entries = fs.readdirSync(here).filter(n => n !== LOCK_FILE)
      const why = entries.length > 0 ? ephemeralWipeRefusal(here) : null
      if (why !== null) throw new VolumeError('not-empty', `${dir} ${why}, and an ephemeral mount would wipe it`)
      return entries.length > 0
    }
    try {
      check()  // before the lock file is made: a directory that is refused gets nothing added
      lock = VolumeLock.acquire(here, false)
      if (check()) {  // again under the lock: a mounted volume is never wiped
        // sealfs.conf stays until it is replaced: a crash at any point leaves a directory
        // the next ephemeral mount still recognizes.
        wipe(dirfd, [LOCK_FILE, CONFIG_FILE])
      }
      const config: VolumeConfig = {
        format: 'sealfs',
        formatVersion: FORMAT_VERSION,
        volumeId: randomBytes(16).toString('hex'),
        contentCipher: CONTENT_CIPHER,
        chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
        nameCipher: NAME_CIPHER,
        keyWrap: KEY_WRAP,
        masterKeyVersion: 1,
        ephemeral: true,
        endTags: true,
        writeWindows: true,
        slots: []
      }
      writeConfig(here, config)
      writeDirIdSync(here, newDirId())
      const masterKey = SecretKey.random()
      try {
        return new Volume(dir, config, masterKey, lock, false)
      } finally {
        masterKey.dispose()
      }
    } catch (e) {
      lock?.release()
      throw e
    } finally {
      fs.closeSync(dirfd)
    }
  }

  /**
   * Unlocks the volume for one mount: takes the mount lock first (before any KDF work).
   * `slot`: only the slot of that name is tried. `volumeId`: the volume the user pinned.
   */
  /**
   * `beside`: opened to read names and file headers only (`sealfs path`), beside a mount that
   * may be running: read-only, without the lock and without the index (which that mount may
   * be writing).
   */
  static async unlock (dir: string, credential: Credential, opts: { readOnly?: boolean, slot?: string, volumeId?: string, upgrading?: boolean, lease?: (line: string) => void, beside?: boolean } = {}): Promise<Volume> {
    checkDir(dir)
    checkVolumeId(readConfig(dir), dir, opts.volumeId)  // before the lock is even taken
    const beside = opts.beside === true
    const readOnly = opts.readOnly === true || beside
    const lock = beside ? VolumeLock.none(dir) : VolumeLock.acquire(dir, readOnly)  // a rotation that is running holds it
    let config: VolumeConfig
    let masterKey: SecretKey
    try {
      // Read again under the lock: a rotation that ended while the lock was awaited has
      // replaced the master key, and this unlock must use its config.
      config = readConfig(dir)
      checkVolumeId(config, dir, opts.volumeId)  // on the config this unlock uses
      if (config.endTags === 'upgrading' && opts.upgrading !== true) throw new VolumeError('upgrade-in-progress', upgradeUnfinished(dir))
      if (config.rotation !== undefined) {
        throw new VolumeError('rotation-in-progress', `a key rotation of ${dir} was interrupted; run 'sealfs key rotate ${dir}' to finish it before mounting`)
      }
      checkRootDirId(dir)
      masterKey = (await unlockSlot(config, credential, opts.slot)).masterKey
    } catch (e) {
      lock.release()
      throw e
    }
    let lease: VolumeLease | null = null
    try {
      // `lease`: where flock may not reach other clients (a network filesystem), the lease
      // refuses a second writer; taken before the index is opened or anything is written.
      if (!readOnly && opts.lease !== undefined && VolumeLease.needed(dir)) lease = await VolumeLease.acquire(dir, opts.lease)
      return new Volume(dir, config, masterKey, lock, readOnly, lease, beside)
    } catch (e) {
      await lease?.release()
      lock.release()
      throw e
    } finally {
      masterKey.dispose()
    }
  }

  /**
   * A file's header with new flags, or at the next link of its nonce chain (`nonce`: a write
   * window closes, docs/FORMAT.md §6.4): the DEK wrapped again (the flags are in its AAD); the
   * index row follows, unless `toRow` is false (it holds the same DEK, version and flags).
   */
  rewrapHeader (fileId: Buffer, dek: SecretKey, flags: number, nonce?: Buffer, toRow = true): Buffer {
    const keyVersion = this.config.masterKeyVersion
    const wrappedDek = wrapDek(this.#dekWrapKey, dek, this.volumeId, fileId, keyVersion, flags, nonce)
    if (toRow) this.index.put(fileId, keyVersion, wrappedDek)
    return encodeHeader({ fileId, keyVersion, flags, wrappedDek })
  }

  /** The flags every new file of this volume gets (docs/FORMAT.md §6.1). */
  get fileFlags (): number {
    return this.layout.endTags ? (this.config.writeWindows === true ? FLAG_END_TAG | FLAG_WRITE_WINDOW : FLAG_END_TAG) : 0
  }

  /** A fresh file identity: random file ID and DEK, the header to write, the index row queued. */
  newFile (): NewFile {
    const fileId = randomBytes(FILE_ID_BYTES)
    const dek = SecretKey.random()
    const keyVersion = this.config.masterKeyVersion
    const flags = this.fileFlags
    // With write windows, the first link of the header's nonce chain (docs/FORMAT.md §6.4).
    const nonce = (flags & FLAG_WRITE_WINDOW) !== 0 ? firstNonce(flags) : undefined
    const wrappedDek = wrapDek(this.#dekWrapKey, dek, this.volumeId, fileId, keyVersion, flags, nonce)
    this.index.put(fileId, keyVersion, wrappedDek)
    return { fileId, dek, flags, header: encodeHeader({ fileId, keyVersion, flags, wrappedDek }) }
  }

  /**
   * The DEK of a file from its header; when the header was wrapped under an older master-key
   * version, from the index. Throws AuthenticationError if neither authenticates.
   */
  openDek (header: FileHeader): SecretKey {
    // Every file of a volume with end tags has one, and no file of an older volume: a header
    // that says otherwise (an older copy of it, or a config edited to drop end tags) would
    // let a file cut short read as whole.
    // Likewise write windows: a header without them would let a copy taken mid-write pass.
    if ((((header.flags & FLAG_END_TAG) !== 0) !== this.layout.endTags ||
         ((header.flags & FLAG_WRITE_WINDOW) !== 0) !== (this.config.writeWindows === true)) && !this.#upgrading) throw new AuthenticationError('file header')
    let wrapped = header.wrappedDek
    let version = header.keyVersion
    if (version !== this.config.masterKeyVersion) {
      // The version field is authenticated through the wrap's AAD: a header whose DEK opens
      // under the current version was written under it, whatever its field now says.
      let current: SecretKey | null = null
      try {
        current = unwrapDek(this.#dekWrapKey, wrapped, this.volumeId, header.fileId, this.config.masterKeyVersion, header.flags)
      } catch (e) {
        if (!(e instanceof AuthenticationError)) throw e
      }
      if (current !== null) {
        current.dispose()
        throw new AuthenticationError('file header')
      }
      const row = this.index.get(header.fileId)
      if (row === undefined) throw new AuthenticationError('file header')
      wrapped = row.wrapped
      version = row.keyVersion
    }
    return unwrapDek(this.#dekWrapKey, wrapped, this.volumeId, header.fileId, version, header.flags)
  }

  /**
   * Whether the index row of a file (at the current key version) was wrapped for a header with
   * `flag` (an end tag, write windows): a header without it, of the same file, is older than
   * the row (put back from before an upgrade).
   */
  rowHasFlag (fileId: Buffer, flag: number): boolean {
    const row = this.index.get(fileId)
    if (row === undefined || row.keyVersion !== this.config.masterKeyVersion) return false
    for (let flags = 0; flags <= (FLAG_SPARSE | FLAG_END_TAG | FLAG_WRITE_WINDOW); flags++) {
      if ((flags & flag) === 0 || ((flags & FLAG_WRITE_WINDOW) !== 0 && (flags & FLAG_END_TAG) === 0)) continue
      try {
        unwrapDek(this.#dekWrapKey, row.wrapped, this.volumeId, fileId, row.keyVersion, flags).dispose()
        return true
      } catch (e) {
        if (!(e instanceof AuthenticationError)) throw e
      }
    }
    return false
  }

  /**
   * Whether a file's index row holds its DEK as its header does (same key version and flags).
   * Not byte for byte: a header moves along its nonce chain (docs/FORMAT.md §6.4), and a row
   * may hold an earlier link of it.
   */
  rowMatches (header: FileHeader, dek: SecretKey): boolean {
    const row = this.index.get(header.fileId)
    if (row === undefined || row.keyVersion !== header.keyVersion) return false
    if (row.wrapped.equals(header.wrappedDek)) return true
    if (row.keyVersion !== this.config.masterKeyVersion) return false
    try {
      const rowDek = unwrapDek(this.#dekWrapKey, row.wrapped, this.volumeId, header.fileId, row.keyVersion, header.flags)
      try {
        return sodium.sodium_memcmp(rowDek.bytes, dek.bytes)
      } finally {
        rowDek.dispose()
      }
    } catch (e) {
      if (!(e instanceof AuthenticationError)) throw e
      return false
    }
  }

  /**
   * Begins or resumes the upgrade to end tags (docs/FORMAT.md §6.3): the config says so, and
   * the volume does not mount, until finishUpgrade(). The caller holds the mount lock.
   */
  beginUpgrade (): void {
    this.#changeEndTags('upgrading')
    this.#upgrading = true
  }

  /** Every file with contents has its end tag and write windows, durably: new mounts require them. */
  finishUpgrade (): void {
    this.#changeEndTags(true)
  }

  /** Whether an upgrade (fsck --repair --upgrade) has work: end tags or write windows missing. */
  get upgradable (): boolean {
    return this.config.endTags !== true || this.config.writeWindows !== true
  }

  #changeEndTags (to: true | 'upgrading'): void {
    if (this.readOnly) throw new Error('upgrade of a volume opened read-only')
    const lock = ConfigLock.acquire(this.dir)
    try {
      removeStaleTemps(this.dir)
      const config = readConfig(this.dir)
      if (config.volumeId !== this.config.volumeId || config.masterKeyVersion !== this.config.masterKeyVersion || config.rotation !== undefined) {
        throw new VolumeError('damaged-config', `${this.dir}/${CONFIG_FILE} changed while it was being upgraded`)
      }
      // While upgrading, files of every layout open; once done, every file has both.
      const next: VolumeConfig = { ...config, endTags: to }
      if (to === true) next.writeWindows = true
      else delete next.writeWindows
      if (config.endTags !== to || config.writeWindows !== next.writeWindows) writeConfig(this.dir, next)
    } finally {
      lock.release()
    }
  }

  /** The chunk AAD prefix of a file: volume ID || file ID. */
  aadPrefix (fileId: Buffer): Buffer {
    return Buffer.concat([this.volumeId, fileId])
  }

  /** Waits for the index's last writes, then forgets every key. */
  async close (): Promise<void> {
    await this.index.close()
    this.journal.close()
    this.names.dispose()
    for (const k of this.#keys) k.dispose()
    await this.lease?.release()
    this.#lock.release()
  }
}
