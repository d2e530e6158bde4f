import fs from 'fs'
import path from 'path'
import { isValidChunkSize } from '../crypto/chunk-cipher'
import { costIsAcceptable } from '../crypto/passphrase-kdf'
import { WRAPPED_KEY_BYTES } from '../crypto/key-wrap'
import { writeFileAtomic } from './atomic-file'
import { VolumeError } from './errors'

export const CONFIG_FILE = 'sealfs.conf'
export const FORMAT_VERSION = 1
export const CONTENT_CIPHER = 'AES-256-GCM'
export const NAME_CIPHER = 'HMAC-SHA256-SIV+AES-256-CTR'
export const KEY_WRAP = 'XChaCha20-Poly1305'

export interface PassphraseSlot {
  id: number
  kind: 'passphrase'
  kdf: 'argon2id'
  opslimit: number
  memlimit: number
  salt: string        // hex, 16 bytes
  wrappedKey: string  // hex, 72 bytes: nonce || encrypted master key || tag
}

export type KeySlot = PassphraseSlot

export interface VolumeConfig {
  format: 'sealfs'
  formatVersion: number
  volumeId: string    // hex, 16 bytes
  contentCipher: string
  chunkSize: number
  nameCipher: string
  keyWrap: string
  masterKeyVersion: number
  slots: KeySlot[]
}

const HEX = /^[0-9a-f]*$/

function hexOf (v: unknown, bytes: number): boolean {
  return typeof v === 'string' && v.length === bytes * 2 && HEX.test(v)
}

/** Reads and checks sealfs.conf. Every field is later authenticated as AAD of the slot wrap. */
export function readConfig (cipherDir: string): VolumeConfig {
  const file = path.join(cipherDir, CONFIG_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new VolumeError('not-a-volume', `${cipherDir} is not a sealfs volume (no ${CONFIG_FILE})`)
    throw new VolumeError('damaged-config', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  let c: VolumeConfig
  try {
    c = JSON.parse(text)
  } catch {
    throw new VolumeError('damaged-config', `${file} is not valid JSON`)
  }
  if (c === null || typeof c !== 'object' || c.format !== 'sealfs') throw new VolumeError('damaged-config', `${file} is not a sealfs config`)
  if (c.formatVersion !== FORMAT_VERSION) throw new VolumeError('unsupported', `${file} has format version ${String(c.formatVersion)}; this sealfs reads version ${FORMAT_VERSION}`)
  if (c.contentCipher !== CONTENT_CIPHER || c.nameCipher !== NAME_CIPHER || c.keyWrap !== KEY_WRAP) throw new VolumeError('unsupported', `${file} names an algorithm this sealfs does not support`)
  if (!hexOf(c.volumeId, 16) || !isValidChunkSize(c.chunkSize) || !Number.isInteger(c.masterKeyVersion) || c.masterKeyVersion < 1 || c.masterKeyVersion > 0xffffffff) {
    throw new VolumeError('damaged-config', `${file} has an invalid field`)
  }
  if (!Array.isArray(c.slots) || c.slots.length === 0) throw new VolumeError('damaged-config', `${file} has no key slots`)
  for (const s of c.slots) {
    if (s === null || typeof s !== 'object' || s.kind !== 'passphrase' || s.kdf !== 'argon2id') throw new VolumeError('unsupported', `${file} has a key slot of an unknown kind`)
    if (!Number.isInteger(s.id) || !hexOf(s.salt, 16) || !hexOf(s.wrappedKey, WRAPPED_KEY_BYTES)) throw new VolumeError('damaged-config', `${file} has an invalid key slot`)
    if (!costIsAcceptable(s)) throw new VolumeError('weak-kdf', `${file}: key slot ${s.id} has Argon2id parameters outside the accepted range (opslimit >= 2, memlimit >= 64 MiB)`)
  }
  return c
}

export function writeConfig (cipherDir: string, config: VolumeConfig): void {
  writeFileAtomic(path.join(cipherDir, CONFIG_FILE), JSON.stringify(config, null, 2) + '\n', 0o600)
}

/**
 * The exact bytes authenticated with a slot's wrapped master key: every volume parameter
 * and every slot parameter, so that editing any of them makes the slot fail to open.
 */
export function slotAad (config: VolumeConfig, slot: KeySlot): Buffer {
  const lines = [
    'sealfs-slot-v1',
    `formatVersion=${config.formatVersion}`,
    `volumeId=${config.volumeId}`,
    `contentCipher=${config.contentCipher}`,
    `chunkSize=${config.chunkSize}`,
    `nameCipher=${config.nameCipher}`,
    `keyWrap=${config.keyWrap}`,
    `masterKeyVersion=${config.masterKeyVersion}`,
    `slotId=${slot.id}`,
    `kind=${slot.kind}`,
    `kdf=${slot.kdf}`,
    `opslimit=${slot.opslimit}`,
    `memlimit=${slot.memlimit}`,
    `salt=${slot.salt}`
  ]
  return Buffer.from(lines.join('\n') + '\n', 'ascii')
}
