import path from 'path'
import { AuthenticationError } from '../crypto/errors'
import { CHUNK_OVERHEAD, ChunkCipher } from '../crypto/chunk-cipher'
import { SecretKey } from '../crypto/secret-key'
import { CONFIG_FILE, FORMAT_VERSION_NAME_KEYS, KeySlot, removeStaleTemps, VolumeConfig, checkConfig, checkUnlockCost, readConfig, slotName, writeConfig } from './config'
import { DekIndexRewrite, RewrappedRow } from './dek-index'
import { unwrapDek, wrapDek } from './dek-wrap'
import { firstNonce } from '../crypto/end-tag'
import { VolumeError, upgradeUnfinished } from './errors'
import { FLAG_END_TAG, FLAG_SPARSE, FLAG_WRITE_WINDOW, FileHeader, HEADER_BYTES, decodeHeader, encodeHeader, headerNonce } from './file-header'
import { Credential, askKeyService, resealSlot, unlockSlot } from './key-slot'
import { Unlock } from './slot-changes'
import { checkDir } from './volume'
import { ConfigLock, VolumeLock } from './volume-lock'
import { WRITE_JOURNAL_FILE, WriteJournal } from './write-journal'
import { dekWrapKey, openNameKeys, openRetiredKey, rotationJournalKey, wrapNameKeys, wrapRetiredKey } from './volume-keys'
import { mac, macMatches } from '../crypto/mac'

export interface RotateOptions {
  /** What opens the volume (and its slot is rewrapped with it). */
  unlock: Unlock
  /** Credentials of further slots to keep: each is tried against the slots not yet opened. */
  also: Credential[]
  /** Remove the slots no credential opened (else they make the rotation refuse to start). */
  dropUnopened: boolean
  /** A new rotation also gives every file a new DEK and re-encrypts its contents. */
  reencrypt: boolean
}

/** What became of one file header. */
export type HeaderRewrap =
  | { kind: 'rewrapped', header: Buffer, row: RewrappedRow }
  | { kind: 'current', row: RewrappedRow }
  | { kind: 'damaged' }

/** A file to re-encrypt: its old DEK, and its new identity (same file ID and flags, a new DEK). Dispose both keys. */
export interface Reencryption {
  fileId: Buffer
  flags: number
  oldDek: SecretKey
  newDek: SecretKey
  /** The old header's DEK-wrap nonce (a file with write windows has its end tag bound to it, or to the next). */
  oldNonce: Buffer
  header: Buffer
  row: RewrappedRow
}

/**
 * A master-key rotation of an unmounted volume (docs/FORMAT.md §2.2): master key N+1 is made
 * and every slot rewrapped under it, in one atomic config write that also keeps key N's
 * DEK-wrap key (wrapped under N+1) while headers and index rows still need it. Every DEK is
 * then rewrapped (rewrapHeader, finishIndex: the caller walks the files), and finish()
 * forgets key N. A crash anywhere leaves a config that `start` resumes from.
 * Holds the mount lock from start to close: the volume is not mounted meanwhile.
 */
export class KeyRotation {
  readonly volumeId: Buffer
  readonly index: DekIndexRewrite
  readonly chunks: ChunkCipher
  /** Slots removed because no credential opened them (dropUnopened). */
  readonly dropped: string[]
  readonly to: number
  /** Every file gets a new DEK and its contents are re-encrypted (key rotate --reencrypt). */
  readonly reencrypt: boolean
  #retired: SecretKey | null
  #current: SecretKey | null

  #journalKey: SecretKey | null

  /** Takes `index` and the keys (closed and disposed by close()). */
  private constructor (readonly dir: string, config: VolumeConfig, readonly from: number, readonly resumed: boolean, keys: { retired: SecretKey, current: SecretKey, journal: SecretKey }, index: DekIndexRewrite, private readonly lock: VolumeLock, dropped: string[]) {
    this.#retired = keys.retired
    this.#current = keys.current
    this.#journalKey = keys.journal
    this.index = index
    this.to = config.masterKeyVersion
    this.reencrypt = config.rotation?.reencrypt === true
    this.chunks = new ChunkCipher(config.chunkSize)
    this.volumeId = Buffer.from(config.volumeId, 'hex')
    this.dropped = dropped
  }

  /** `held`: the lock a previous rotation of this run handed on (close(true)). */
  static async start (dir: string, opts: RotateOptions, held?: VolumeLock): Promise<KeyRotation> {
    checkDir(dir)
    let lock: VolumeLock
    try {
      lock = held ?? VolumeLock.acquire(dir, false, true)
    } catch (e) {
      if (e instanceof VolumeError && e.kind === 'busy') throw new VolumeError('busy', `${e.message}; unmount it before rotating its master key`)
      throw e
    }
    try {
      const configLock = ConfigLock.acquire(dir)
      try {
        removeStaleTemps(dir)
        const config = readConfig(dir)
        if (config.rotation !== undefined) {
          // Resumed: the slots already open key N+1.
          const { masterKey } = await unlockSlot(config, opts.unlock.credential, opts.unlock.slot)
          try {
            const index = openIndex(dir, config)
            try {
              const retired = openRetiredKey(config, masterKey)
              return new KeyRotation(dir, config, config.rotation.fromVersion, true, { retired, current: dekWrapKey(masterKey), journal: rotationJournalKey(masterKey) }, index, lock, [])
            } catch (e) {
              index.close()
              throw e
            }
          } finally {
            masterKey.dispose()
          }
        }
        return await KeyRotation.#begin(dir, config, opts, lock)
      } finally {
        configLock.release()
      }
    } catch (e) {
      lock.release()
      throw e
    }
  }

  static async #begin (dir: string, config: VolumeConfig, opts: RotateOptions, lock: VolumeLock): Promise<KeyRotation> {
    if (config.endTags === 'upgrading') throw new VolumeError('upgrade-in-progress', upgradeUnfinished(dir))
    if (opts.reencrypt) {
      // Their records hold old chunks sealed under the data keys a re-encryption replaces.
      const journal = WriteJournal.open(dir, config.chunkSize + CHUNK_OVERHEAD, true, [])
      const n = journal.interruptedCount
      journal.close()
      if (n > 0) throw new VolumeError('interrupted-writes', `${dir}/${WRITE_JOURNAL_FILE} holds ${n} write${n > 1 ? 's' : ''} a crash interrupted; run 'sealfs fsck --repair ${dir}' to settle them before re-encrypting`)
    }
    if (config.masterKeyVersion >= 0xffffffff) throw new VolumeError('unsupported', 'the master key has been rotated as often as the format can count')
    const { masterKey: oldKey, slot: opened } = await unlockSlot(config, opts.unlock.credential, opts.unlock.slot)
    const newKey = SecretKey.random()
    let retired: SecretKey | null = null
    let index: DekIndexRewrite | null = null
    try {
      index = openIndex(dir, config)  // before anything is committed: an index that cannot be opened stops it here
      const next: VolumeConfig = { ...config, formatVersion: FORMAT_VERSION_NAME_KEYS, masterKeyVersion: config.masterKeyVersion + 1, slots: [] }
      const nameKeys = openNameKeys(config, oldKey)
      try {
        next.nameKeys = wrapNameKeys(next, newKey, nameKeys)
      } finally {
        for (const k of Object.values(nameKeys)) k.dispose()
      }
      retired = dekWrapKey(oldKey)
      next.rotation = wrapRetiredKey(next, newKey, config.masterKeyVersion, retired, opts.reencrypt)
      const { slots, unopened } = await resealAll(config, next, opened, opts, newKey)
      if (unopened.length > 0 && !opts.dropUnopened) {
        throw new VolumeError('slots-unopened', `no credential was given for key slot${unopened.length > 1 ? 's' : ''} ${unopened.map(u => `'${u.name}'${u.why !== '' ? ` (${u.why})` : ''}`).join(', ')}: give ${unopened.length > 1 ? 'them' : 'it'} with --also-passfile or --also-keyfile, or remove ${unopened.length > 1 ? 'them' : 'it'} with --drop-unopened`)
      }
      next.slots = slots
      checkConfig(next, path.join(dir, CONFIG_FILE))
      writeConfig(dir, next)
      const rotation = new KeyRotation(dir, next, config.masterKeyVersion, false, { retired, current: dekWrapKey(newKey), journal: rotationJournalKey(newKey) }, index, lock, unopened.map(u => u.name))
      retired = null  // the rotation has them now
      index = null
      return rotation
    } finally {
      index?.close()
      retired?.dispose()
      oldKey.dispose()
      newKey.dispose()
    }
  }

  /**
   * One file's header (its first HEADER_BYTES) rewrapped under key N+1, or already so (a
   * resumed rotation, a hard link seen twice), or damaged: it does not authenticate under
   * either key, or names a version neither is (it is left as it is).
   */
  rewrapHeader (bytes: Buffer): HeaderRewrap {
    const h = bytes.length === HEADER_BYTES ? decodeHeader(bytes) : null
    if (h === null) return { kind: 'damaged' }
    if (h.keyVersion === this.to) {
      if (!this.#opens(this.#key(this.#current), h.wrappedDek, h.fileId, this.to, h.flags)) return { kind: 'damaged' }
      return { kind: 'current', row: { fileId: h.fileId, keyVersion: this.to, wrapped: h.wrappedDek } }
    }
    if (h.keyVersion !== this.from) return { kind: 'damaged' }
    const wrapped = this.#rewrap(h.wrappedDek, h.fileId, h.flags)
    if (wrapped === null) return { kind: 'damaged' }
    const header: FileHeader = { ...h, keyVersion: this.to, wrappedDek: wrapped }
    return { kind: 'rewrapped', header: encodeHeader(header), row: { fileId: h.fileId, keyVersion: this.to, wrapped } }
  }

  /**
   * For a re-encrypting rotation: a header under key N opened (its DEK) and given a new DEK
   * under key N+1, or already done, or damaged (as rewrapHeader says).
   */
  reencryptHeader (bytes: Buffer): Reencryption | HeaderRewrap {
    const h = bytes.length === HEADER_BYTES ? decodeHeader(bytes) : null
    if (h === null || h.keyVersion !== this.from) return this.rewrapHeader(bytes)
    let oldDek: SecretKey
    try {
      oldDek = unwrapDek(this.#key(this.#retired), h.wrappedDek, this.volumeId, h.fileId, this.from, h.flags)
    } catch (e) {
      if (e instanceof AuthenticationError) return { kind: 'damaged' }
      throw e
    }
    const newDek = SecretKey.random()
    try {
      // A new DEK, a new nonce chain (docs/FORMAT.md §6.4).
      const nonce = (h.flags & FLAG_WRITE_WINDOW) !== 0 ? firstNonce(h.flags) : undefined
      const wrapped = wrapDek(this.#key(this.#current), newDek, this.volumeId, h.fileId, this.to, h.flags, nonce)
      return {
        fileId: h.fileId,
        flags: h.flags,
        oldDek,
        newDek,
        oldNonce: Buffer.from(headerNonce(h.wrappedDek)),
        header: encodeHeader({ ...h, keyVersion: this.to, wrappedDek: wrapped }),
        row: { fileId: h.fileId, keyVersion: this.to, wrapped }
      }
    } catch (e) {
      oldDek.dispose()
      newDek.dispose()
      throw e
    }
  }

  /** A header under key N+1 (a re-encrypted file's, in its staging copy): its row, or null if it does not authenticate. */
  rowOf (bytes: Buffer): RewrappedRow | null {
    const r = this.rewrapHeader(bytes)
    return r.kind === 'current' ? r.row : null
  }

  /**
   * The journal's bytes as stored: its body, a newline, and a MAC (hex) under this rotation's
   * journal key binding the volume and the target version, so that a planted journal, or one
   * left by another rotation, is never applied.
   */
  sealJournal (body: Buffer): Buffer {
    return Buffer.concat([body, Buffer.from(`\n${mac(this.#key(this.#journalKey), this.#journalMessage(body)).toString('hex')}\n`)])
  }

  /** The body of a journal this rotation wrote, or null. */
  openJournal (stored: Buffer): Buffer | null {
    const text = stored.toString('latin1')
    const m = /\n([0-9a-f]{64})\n$/.exec(text)
    if (m === null) return null
    const body = stored.subarray(0, stored.length - 66)
    return macMatches(this.#key(this.#journalKey), this.#journalMessage(body), Buffer.from(m[1], 'hex')) ? body : null
  }

  #journalMessage (body: Buffer): Buffer {
    return Buffer.concat([Buffer.from(`sealfs-rotation-journal-v1\nvolumeId=${this.volumeId.toString('hex')}\nmasterKeyVersion=${this.to}\n`, 'ascii'), body])
  }

  /** The chunk AAD prefix of a file: volume ID || file ID. */
  aadPrefix (fileId: Buffer): Buffer {
    return Buffer.concat([this.volumeId, fileId])
  }

  /**
   * Rewraps the index rows still under key N: those of files the walk did not reach (a
   * damaged header, whose row is what can restore it). A row keeps no flags, so every value
   * is tried. Rows no key opens are left as they are. Returns [rewrapped, left].
   */
  finishIndex (): [number, number] {
    let done = 0
    let left = 0
    const rows: RewrappedRow[] = []
    for (const row of this.index.rowsAt(this.from)) {
      let wrapped: Buffer | null = null
      for (const flags of [0, FLAG_SPARSE, FLAG_END_TAG, FLAG_SPARSE | FLAG_END_TAG, FLAG_END_TAG | FLAG_WRITE_WINDOW, FLAG_SPARSE | FLAG_END_TAG | FLAG_WRITE_WINDOW]) if ((wrapped = this.#rewrap(row.wrapped, row.fileId, flags)) !== null) break
      if (wrapped === null) { left++; continue }
      rows.push({ fileId: row.fileId, keyVersion: this.to, wrapped })
      done++
      if (rows.length >= 1000) this.index.put(rows.splice(0))
    }
    this.index.put(rows)
    return [done, left]
  }

  /**
   * Ends the rotation: key N's DEK-wrap key leaves the config, the one place it was kept.
   * Call only once every header and row rewrapped is on disk (the caller syncs).
   */
  finish (): void {
    const lock = ConfigLock.acquire(this.dir)
    try {
      removeStaleTemps(this.dir)
      const config = readConfig(this.dir)
      if (config.rotation?.fromVersion !== this.from || config.masterKeyVersion !== this.to) {
        throw new VolumeError('damaged-config', `${this.dir}/${CONFIG_FILE} changed during the rotation (its rotation state is not the one begun)`)
      }
      const { rotation: _done, ...rest } = config
      writeConfig(this.dir, rest)
    } finally {
      lock.release()
    }
  }

  /** Forgets the keys and closes the index; releases the mount lock, or with `keepLock` hands it back (to start another rotation). */
  close (keepLock = false): VolumeLock | null {
    this.index.close()
    this.#dispose()
    if (keepLock) return this.lock
    this.lock.release()
    return null
  }

  #dispose (): void {
    this.#retired?.dispose()
    this.#current?.dispose()
    this.#journalKey?.dispose()
    this.#retired = null
    this.#current = null
    this.#journalKey = null
  }

  #key (k: SecretKey | null): SecretKey {
    if (k === null) throw new Error('key rotation used after close')
    return k
  }

  #opens (kek: SecretKey, wrapped: Buffer, fileId: Buffer, version: number, flags: number): boolean {
    try {
      unwrapDek(kek, wrapped, this.volumeId, fileId, version, flags).dispose()
      return true
    } catch (e) {
      if (e instanceof AuthenticationError) return false
      throw e
    }
  }

  /** A DEK wrapped under key N, wrapped under key N+1 instead; null if it does not authenticate. */
  #rewrap (wrapped: Buffer, fileId: Buffer, flags: number): Buffer | null {
    let dek: SecretKey
    try {
      dek = unwrapDek(this.#key(this.#retired), wrapped, this.volumeId, fileId, this.from, flags)
    } catch (e) {
      if (e instanceof AuthenticationError) return null
      throw e
    }
    try {
      // At the same nonce, under the new key: a file's end tag is bound to its header's nonce
      // (docs/FORMAT.md §6.4), and a new key makes every (key, nonce) pair new.
      return wrapDek(this.#key(this.#current), dek, this.volumeId, fileId, this.to, flags, headerNonce(wrapped))
    } finally {
      dek.dispose()
    }
  }
}

function openIndex (dir: string, config: VolumeConfig): DekIndexRewrite {
  try {
    return new DekIndexRewrite(dir, config.volumeId)
  } catch (e) {
    throw new VolumeError('damaged-config', `${dir}/sealfs.index cannot be opened (${(e as Error).message.split('\n')[0]})`)
  }
}

/**
 * Every slot of `config` rewrapped for `next`, as far as a credential opens it: the slot the
 * volume was opened with, key-service slots (their services are asked), and the further
 * credentials given. The rest are `unopened`, with why where a service failed.
 */
async function resealAll (config: VolumeConfig, next: VolumeConfig, opened: KeySlot, opts: RotateOptions, newKey: SecretKey): Promise<{ slots: KeySlot[], unopened: Array<{ name: string, why: string }> }> {
  // Each further passphrase may be tried against every passphrase slot: bounded as an unlock is.
  if (opts.also.some(c => c.kind === 'passphrase')) checkUnlockCost(config.slots, 'the volume config')
  const slots: KeySlot[] = []
  const unopened: Array<{ name: string, why: string }> = []
  for (const slot of config.slots) {
    let fresh: KeySlot | null = null
    let why = ''
    if (slot === opened) {
      fresh = await resealSlot(config, next, slot, opts.unlock.credential, newKey)
    } else if (slot.kind === 'command') {
      let asked: Credential | null = null
      try {
        asked = await askKeyService(slot)
        fresh = await resealSlot(config, next, slot, asked, newKey)
        if (fresh === null) why = 'its key service gave a secret that does not open it'
      } catch (e) {
        if (!(e instanceof VolumeError)) throw e
        why = e.message
      } finally {
        asked?.secret.fill(0)
      }
    } else {
      for (const c of opts.also) {
        fresh = await resealSlot(config, next, slot, c, newKey)
        if (fresh !== null) break
      }
    }
    if (fresh !== null) slots.push(fresh)
    else unopened.push({ name: slotName(slot), why })
  }
  return { slots, unopened }
}
