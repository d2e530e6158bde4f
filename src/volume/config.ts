import fs from 'fs'
import path from 'path'
import { isValidChunkSize } from '../crypto/chunk-cipher'
import { costIsAcceptable } from '../crypto/passphrase-kdf'
import { WRAPPED_KEY_BYTES } from '../crypto/key-wrap'
import { writeFileAtomic } from './atomic-file'
import { VolumeError } from './errors'

export const CONFIG_FILE = 'sealfs.conf'
/** What `init` writes. A volume becomes version 2 at its first key rotation (NAME_KEYS). */
export const FORMAT_VERSION = 1
/** Version 2: the name, link and xattr keys are kept wrapped in the config (`nameKeys`), not derived from the master key. */
export const FORMAT_VERSION_NAME_KEYS = 2
export const CONTENT_CIPHER = 'AES-256-GCM'
export const NAME_CIPHER = 'HMAC-SHA256-SIV+AES-256-CTR'
export const KEY_WRAP = 'XChaCha20-Poly1305'

/**
 * Fields every slot has. A slot made before slots had names (`slotVersion` absent) is a
 * passphrase slot known by its id; newer ones (`slotVersion: 2`) have a name and a creation
 * time, and their wrap authenticates every field they hold (slotAad).
 */
interface SlotBase {
  id: number
  slotVersion?: 2
  name?: string
  created?: string    // ISO 8601, UTC
  wrappedKey: string  // hex, 72 bytes: nonce || encrypted master key || tag
}

export interface PassphraseSlot extends SlotBase {
  kind: 'passphrase'
  kdf: 'argon2id'
  opslimit: number
  memlimit: number
  salt: string        // hex, 16 bytes
  /** A generated recovery key: what is typed is normalized first (docs/FORMAT.md). */
  recovery?: boolean
}

/** A key file's bytes, hashed with the salt (BLAKE2b-256), are the key that wraps the master key. */
export interface KeyfileSlot extends SlotBase {
  kind: 'keyfile'
  kdf: 'blake2b'
  salt: string        // hex, 16 bytes
}

/**
 * A key-service slot: a random slot secret is held by an external program (a KMS, Tang or a
 * TPM through clevis, systemd-creds, age...). `blob` is what its wrap command printed for the
 * secret; `unwrapCmd` turns the blob back into the secret, whose BLAKE2b hash with the salt
 * is the key that wraps the master key.
 */
export interface CommandSlot extends SlotBase {
  kind: 'command'
  kdf: 'blake2b'
  salt: string        // hex, 16 bytes
  unwrapCmd: string   // run with /bin/sh -c; the blob on stdin, the secret on stdout
  blob: string        // base64
}

export type KeySlot = PassphraseSlot | KeyfileSlot | CommandSlot

/** Bounds of a key-service slot's fields. */
export const MAX_UNWRAP_CMD = 4096
export const MAX_SERVICE_BLOB = 64 * 1024
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const MAX_CONFIG_BYTES = 4 * 1024 * 1024

/** At most this many slots: unlock tries them one by one. */
export const MAX_SLOTS = 32
/**
 * The most Argon2id work one unlock may cost over the passphrase slots it tries, in
 * GiB-passes (opslimit x memlimit in GiB; the default slot costs 0.75): one slot at the
 * per-slot ceiling (64 passes over 4 GiB), about 6 minutes on the reference machine. A
 * config asking for more is refused before any KDF runs, so that a planted or damaged
 * config cannot keep an unlock busy for hours.
 */
export const MAX_UNLOCK_COST_GIB_PASSES = 256
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const CREATED = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/

/** What a slot is called in commands and listings: its name, or (made before names) its id. */
export function slotName (slot: KeySlot): string {
  return slot.name ?? String(slot.id)
}

/** Whether a name can be given to a slot: letters, digits, '.', '_' or '-', not starting with one of the last three. */
export function isValidSlotName (name: string): boolean {
  return NAME.test(name)
}

export interface VolumeConfig {
  format: 'sealfs'
  formatVersion: number
  volumeId: string    // hex, 16 bytes
  contentCipher: string
  chunkSize: number
  nameCipher: string
  keyWrap: string
  masterKeyVersion: number
  /**
   * Format version 2: the keys of names, symlink targets and xattrs, each wrapped under the
   * current master key (volume-keys.ts). They outlive rotations: renaming every entry is
   * not needed to rotate the master key.
   */
  nameKeys?: NameKeysField
  /**
   * An unfinished rotation from master key `fromVersion`: the DEK-wrap key of that version,
   * wrapped under the current master key, until every file header is rewrapped. The volume
   * is not mounted meanwhile; `key rotate` finishes it.
   */
  rotation?: RotationField
  /** A throwaway volume: its master key lived only in the daemon that made it; no slots. */
  ephemeral?: true
  /**
   * Every file with contents ends in its end tag (docs/FORMAT.md §6.3): true in volumes made
   * since, absent in older ones; 'upgrading' while `fsck --repair --upgrade` adds them to an
   * older volume's files (it does not mount meanwhile). Not part of the slots' AAD (an upgrade
   * cannot rewrap slots it has no credential for): each file's header says, authenticated,
   * whether it has one, and a file that disagrees with the volume reads as EIO.
   */
  endTags?: true | 'upgrading'
  /**
   * Every file with contents has write windows (FLAG_WRITE_WINDOW, docs/FORMAT.md §6.4): its end
   * tag is bound to its header's nonce, so that a copy taken while it was written shows it.
   * True in volumes made since (with `endTags: true`); absent in older ones, until `fsck
   * --repair --upgrade` (which sets `endTags` to 'upgrading' meanwhile) gives them to every file.
   */
  writeWindows?: true
  slots: KeySlot[]
}

export const NAME_KEYS = ['nameEnc', 'nameMac', 'link', 'xattr'] as const
export type NameKeysField = Record<typeof NAME_KEYS[number], string>
export interface RotationField { fromVersion: number, retiredKey: string, reencrypt?: true }

const HEX = /^[0-9a-f]*$/

function hexOf (v: unknown, bytes: number): boolean {
  return typeof v === 'string' && v.length === bytes * 2 && HEX.test(v)
}

/**
 * Refuses a cipher dir that holds another volume than the one the user pinned (its volume ID,
 * 32 hex digits, as `sealfs info` shows it): a volume substituted there, even one that opens
 * with the same credential, is not mounted. Checked before any KDF or key service runs.
 */
export function checkVolumeId (config: VolumeConfig, cipherDir: string, pinned: string | undefined): void {
  if (pinned === undefined) return
  const want = pinned.toLowerCase()
  if (!hexOf(want, 16)) throw new VolumeError('bad-input', `a volume ID is 32 hex digits (as 'sealfs info' shows it), not '${pinned}'`)
  if (config.volumeId !== want) throw new VolumeError('volume-mismatch', `${cipherDir} holds volume ${config.volumeId}, not the pinned volume ${want}`)
}

/** Reads and checks sealfs.conf. Every field is later authenticated as AAD of the slot wrap. */
export function readConfig (cipherDir: string): VolumeConfig {
  const file = path.join(cipherDir, CONFIG_FILE)
  return checkConfig(parseConfig(readConfigBytes(cipherDir, file), file), file)
}

/**
 * sealfs.conf's bytes, read through one descriptor: never through a symlink, never blocking
 * on a FIFO, never more than MAX_CONFIG_BYTES (a file that grows while read is refused).
 */
function readConfigBytes (cipherDir: string, file: string): Buffer {
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new VolumeError('not-a-volume', `${cipherDir} is not a sealfs volume (no ${CONFIG_FILE})`)
    if ((e as NodeJS.ErrnoException).code === 'EACCES') throw new VolumeError('permission-denied', `cannot read ${file}: permission denied (the volume belongs to another user; run sealfs as that user, or as root)`)
    throw new VolumeError('damaged-config', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code === 'ELOOP' ? 'it is a symlink' : (e as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new VolumeError('damaged-config', `${file} is not a regular file`)
    const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1)
    let n = 0
    for (let got = 1; got > 0 && n < buf.length; n += got) got = fs.readSync(fd, buf, n, buf.length - n, null)
    if (n > MAX_CONFIG_BYTES) throw new VolumeError('damaged-config', `${file} is too large to be a sealfs config`)
    return buf.subarray(0, n)
  } catch (e) {
    if (e instanceof VolumeError) throw e
    throw new VolumeError('damaged-config', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
  } finally {
    fs.closeSync(fd)
  }
}

function parseConfig (bytes: Buffer, file: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'))
  } catch {
    throw new VolumeError('damaged-config', `${file} is not valid JSON`)
  }
}

/**
 * Checks a config (as read from `file`, or about to be written there): every field, every
 * slot, and what an unlock of it would cost.
 */
export function checkConfig (parsed: unknown, file: string): VolumeConfig {
  const c = parsed as VolumeConfig
  if (c === null || typeof c !== 'object' || c.format !== 'sealfs') throw new VolumeError('damaged-config', `${file} is not a sealfs config`)
  if (c.formatVersion !== FORMAT_VERSION && c.formatVersion !== FORMAT_VERSION_NAME_KEYS) {
    throw new VolumeError('unsupported', `${file} has format version ${String(c.formatVersion)}; this sealfs reads versions ${FORMAT_VERSION} and ${FORMAT_VERSION_NAME_KEYS}`)
  }
  if (c.contentCipher !== CONTENT_CIPHER || c.nameCipher !== NAME_CIPHER || c.keyWrap !== KEY_WRAP) throw new VolumeError('unsupported', `${file} names an algorithm this sealfs does not support`)
  if (!hexOf(c.volumeId, 16) || !isValidChunkSize(c.chunkSize) || !Number.isInteger(c.masterKeyVersion) || c.masterKeyVersion < 1 || c.masterKeyVersion > 0xffffffff) {
    throw new VolumeError('damaged-config', `${file} has an invalid field`)
  }
  if (c.ephemeral !== undefined && c.ephemeral !== true) throw new VolumeError('damaged-config', `${file} has an invalid field`)
  checkKeyFields(c, file)
  if (!Array.isArray(c.slots) || (c.slots.length === 0) !== (c.ephemeral === true)) {
    throw new VolumeError('damaged-config', c.ephemeral === true ? `${file} is ephemeral but has key slots` : `${file} has no key slots`)
  }
  if (c.slots.length > MAX_SLOTS) throw new VolumeError('damaged-config', `${file} has more than ${MAX_SLOTS} key slots`)
  const ids = new Set<number>()
  const names = new Set<string>()
  for (const s of c.slots) checkSlot(file, s)
  for (const s of c.slots) {
    const name = slotName(s)
    if (ids.has(s.id) || names.has(name)) throw new VolumeError('damaged-config', `${file} has two key slots with the same id or name`)
    ids.add(s.id)
    names.add(name)
  }
  return c
}

const TOP_FIELDS = ['format', 'formatVersion', 'volumeId', 'contentCipher', 'chunkSize', 'nameCipher', 'keyWrap', 'masterKeyVersion', 'nameKeys', 'rotation', 'ephemeral', 'endTags', 'writeWindows', 'slots']

/** The fields of format version 2 and of an unfinished rotation: present exactly when they must be, each of one spelling. */
function checkKeyFields (c: VolumeConfig, file: string): void {
  const bad = (): never => { throw new VolumeError('damaged-config', `${file} has an invalid field`) }
  if (Object.keys(c).some(k => !TOP_FIELDS.includes(k))) bad()
  if ((c.nameKeys !== undefined) !== (c.formatVersion === FORMAT_VERSION_NAME_KEYS)) bad()
  if (c.endTags !== undefined && c.endTags !== true && c.endTags !== 'upgrading') bad()
  if (c.endTags === 'upgrading' && c.rotation !== undefined) bad()
  if (c.writeWindows !== undefined && (c.writeWindows !== true || c.endTags !== true)) bad()
  if (c.nameKeys !== undefined) {
    const n = c.nameKeys as unknown as Record<string, unknown>
    if (n === null || typeof n !== 'object' || Array.isArray(n) || Object.keys(n).length !== NAME_KEYS.length || NAME_KEYS.some(k => !hexOf(n[k], WRAPPED_KEY_BYTES))) bad()
  }
  if (c.rotation !== undefined) {
    const r = c.rotation as unknown as Record<string, unknown>
    if (r === null || typeof r !== 'object' || Array.isArray(r) || c.nameKeys === undefined || c.ephemeral === true) bad()
    if (Object.keys(r).some(k => !['fromVersion', 'retiredKey', 'reencrypt'].includes(k)) || (r.reencrypt !== undefined && r.reencrypt !== true)) bad()
    if (r.fromVersion !== c.masterKeyVersion - 1 || !hexOf(r.retiredKey, WRAPPED_KEY_BYTES)) bad()
  }
}

/** The Argon2id work (GiB-passes) of trying these slots. */
export function unlockCost (slots: KeySlot[]): number {
  let cost = 0
  for (const s of slots) if (s.kind === 'passphrase') cost += s.opslimit * (s.memlimit / 2 ** 30)
  return cost
}

/** Refuses, before any KDF runs, to try slots that together cost more than an unlock may. */
export function checkUnlockCost (slots: KeySlot[], what: string): void {
  const cost = unlockCost(slots)
  if (cost > MAX_UNLOCK_COST_GIB_PASSES) {
    throw new VolumeError('weak-kdf', `${what}: its passphrase slots together ask for more Argon2id work than an unlock may cost (${cost.toFixed(1)} GiB-passes, at most ${MAX_UNLOCK_COST_GIB_PASSES})`)
  }
}

/** The fields a named (v2) slot of each kind holds; `recovery` is optional. */
const V2_FIELDS: Record<KeySlot['kind'], string[]> = {
  passphrase: ['id', 'slotVersion', 'name', 'created', 'kind', 'kdf', 'opslimit', 'memlimit', 'salt', 'wrappedKey'],
  keyfile: ['id', 'slotVersion', 'name', 'created', 'kind', 'kdf', 'salt', 'wrappedKey'],
  command: ['id', 'slotVersion', 'name', 'created', 'kind', 'kdf', 'salt', 'unwrapCmd', 'blob', 'wrappedKey']
}
/** Printable ASCII: the only strings a slot holds, so that its AAD has one spelling in any language. */
const PRINTABLE = /^[\x20-\x7e]*$/

function checkSlot (file: string, s: KeySlot): void {
  if (s === null || typeof s !== 'object' || Array.isArray(s)) throw new VolumeError('damaged-config', `${file} has an invalid key slot`)
  const known = (s.kind === 'passphrase' && s.kdf === 'argon2id') || ((s.kind === 'keyfile' || s.kind === 'command') && s.kdf === 'blake2b')
  if (!known) throw new VolumeError('unsupported', `${file} has a key slot of an unknown kind`)
  if (!Number.isInteger(s.id) || s.id < 1 || s.id > 0x7fffffff || !hexOf(s.salt, 16) || !hexOf(s.wrappedKey, WRAPPED_KEY_BYTES)) {
    throw new VolumeError('damaged-config', `${file} has an invalid key slot`)
  }
  if (s.slotVersion === undefined) {
    // Made before slots had names: a passphrase slot with exactly the fields of then.
    const legacy = ['id', 'kind', 'kdf', 'opslimit', 'memlimit', 'salt', 'wrappedKey']
    if (s.kind !== 'passphrase' || Object.keys(s).some(k => !legacy.includes(k))) throw new VolumeError('damaged-config', `${file} has an invalid key slot`)
  } else {
    if (s.slotVersion !== 2 || typeof s.name !== 'string' || !NAME.test(s.name) || typeof s.created !== 'string' || !CREATED.test(s.created)) {
      throw new VolumeError('damaged-config', `${file} has an invalid key slot`)
    }
    // Every field is authenticated (slotAad), so each must have one canonical spelling: the
    // kind's own fields only, integers or printable ASCII strings (and recovery: true).
    const allowed = V2_FIELDS[s.kind]
    for (const [k, v] of Object.entries(s)) {
      const known = allowed.includes(k) || (k === 'recovery' && s.kind === 'passphrase' && v === true)
      const plain = (typeof v === 'string' && PRINTABLE.test(v)) || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) || v === true
      if (!known || !plain) throw new VolumeError('damaged-config', `${file} has an invalid key slot`)
    }
    if (allowed.some(k => !(k in s))) throw new VolumeError('damaged-config', `${file} has an invalid key slot`)
    if (s.kind === 'command') {
      const cmdOk = typeof s.unwrapCmd === 'string' && s.unwrapCmd.length > 0 && s.unwrapCmd.length <= MAX_UNWRAP_CMD
      // Canonical base64 with padding (it decodes and encodes back to itself), of at most MAX_SERVICE_BLOB bytes.
      const blobOk = typeof s.blob === 'string' && s.blob.length > 0 && s.blob.length <= Math.ceil(MAX_SERVICE_BLOB / 3) * 4 && BASE64.test(s.blob) &&
        Buffer.from(s.blob, 'base64').length <= MAX_SERVICE_BLOB && Buffer.from(s.blob, 'base64').toString('base64') === s.blob
      if (!cmdOk || !blobOk) throw new VolumeError('damaged-config', `${file} has an invalid key slot`)
    }
  }
  if (s.kind === 'passphrase' && !costIsAcceptable(s)) {
    throw new VolumeError('weak-kdf', `${file}: key slot ${slotName(s)} has Argon2id parameters outside the accepted range (opslimit 2-64, memlimit 64 MiB-4 GiB)`)
  }
}

export function writeConfig (cipherDir: string, config: VolumeConfig): void {
  const file = path.join(cipherDir, CONFIG_FILE)
  // Root changing a user's volume (a key command, a rotation) leaves the config theirs.
  let owner: { uid: number, gid: number } | undefined
  if (process.geteuid?.() === 0) {
    try {
      const st = fs.lstatSync(file)
      if (st.isFile()) owner = { uid: st.uid, gid: st.gid }
    } catch { /* a new volume's first config */ }
  }
  writeFileAtomic(file, JSON.stringify(config, null, 2) + '\n', 0o600, owner)
}

/** The volume's own parameters, first in every slot's AAD. */
function volumeLines (config: VolumeConfig): string[] {
  return [
    `formatVersion=${config.formatVersion}`,
    `volumeId=${config.volumeId}`,
    `contentCipher=${config.contentCipher}`,
    `chunkSize=${config.chunkSize}`,
    `nameCipher=${config.nameCipher}`,
    `keyWrap=${config.keyWrap}`,
    `masterKeyVersion=${config.masterKeyVersion}`
  ]
}

/**
 * The exact bytes authenticated with a slot's wrapped master key: every volume parameter
 * and every slot field but the wrapped key itself, so that editing any of them makes the
 * slot fail to open. A named slot (v2) binds all its fields, sorted by name, each value in
 * JSON; a slot made before names (v1) binds the fields it had.
 */
export function slotAad (config: VolumeConfig, slot: KeySlot): Buffer {
  if (slot.slotVersion === 2) {
    const fields = Object.keys(slot).filter(k => k !== 'wrappedKey').sort()
    const lines = ['sealfs-slot-v2', ...volumeLines(config), ...fields.map(k => `slot.${k}=${JSON.stringify((slot as unknown as Record<string, unknown>)[k])}`)]
    return Buffer.from(lines.join('\n') + '\n', 'utf8')
  }
  const p = slot as PassphraseSlot
  const lines = [
    'sealfs-slot-v1',
    ...volumeLines(config),
    `slotId=${p.id}`,
    `kind=${p.kind}`,
    `kdf=${p.kdf}`,
    `opslimit=${p.opslimit}`,
    `memlimit=${p.memlimit}`,
    `salt=${p.salt}`
  ]
  return Buffer.from(lines.join('\n') + '\n', 'ascii')
}

/** Temp files of config writes that a crash interrupted (written only under the key-slot lock). */
export function removeStaleTemps (dir: string): void {
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith(`${CONFIG_FILE}.tmp-`)) continue
    const file = path.join(dir, name)
    if (fs.lstatSync(file).isFile()) fs.rmSync(file, { force: true })  // anything else is not ours
  }
}
