import sodium from 'sodium-native'
import { SecretKey } from './secret-key'

const KEYFILE_DOMAIN = Buffer.from('sealfs-keyfile-v1\0', 'ascii')
const SERVICE_DOMAIN = Buffer.from('sealfs-keyservice-v1\0', 'ascii')
/** Key files are read whole; a larger file is not a key file we made (ours are 32 bytes). */
export const MAX_KEYFILE_BYTES = 64 * 1024
/** A key-service slot's secret as handed to the service: 64 lower-case hex digits (256 bits). */
export const SERVICE_SECRET_CHARS = 64

/**
 * Keys that wrap the master key from secrets that need no stretching, because sealfs made
 * them with 256 random bits: BLAKE2b-256 of a domain and the secret, keyed by the slot's
 * 16-byte salt.
 */
function derive (domain: Buffer, secret: Buffer, salt: Buffer): SecretKey {
  if (salt.length !== sodium.crypto_generichash_KEYBYTES_MIN) throw new RangeError('salt must be 16 bytes')
  const key = SecretKey.alloc()
  const msg = Buffer.concat([domain, secret])
  try {
    sodium.crypto_generichash(key.bytes, msg, salt)
  } finally {
    msg.fill(0)
  }
  return key
}

/** The key of a key-file slot: from the key file's bytes. */
export function deriveFromKeyfile (keyfile: Buffer, salt: Buffer): SecretKey {
  return derive(KEYFILE_DOMAIN, keyfile, salt)
}

/** The key of a key-service slot: from its secret (SERVICE_SECRET_CHARS hex digits, as ASCII). */
export function deriveFromServiceSecret (secretHex: Buffer, salt: Buffer): SecretKey {
  if (!isServiceSecret(secretHex)) throw new RangeError('not a key-service secret')
  return derive(SERVICE_DOMAIN, secretHex, salt)
}

/** A new key-service secret: 256 random bits as hex digits, built without a JS string. */
export function newServiceSecret (): Buffer {
  const raw = Buffer.alloc(SERVICE_SECRET_CHARS / 2)
  sodium.randombytes_buf(raw)
  const out = Buffer.alloc(SERVICE_SECRET_CHARS)
  const digits = Buffer.from('0123456789abcdef', 'ascii')
  for (let i = 0; i < raw.length; i++) {
    out[2 * i] = digits[raw[i] >> 4]
    out[2 * i + 1] = digits[raw[i] & 15]
  }
  raw.fill(0)
  return out
}

export function isServiceSecret (b: Buffer): boolean {
  if (b.length !== SERVICE_SECRET_CHARS) return false
  for (const c of b) if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false
  return true
}
