import { decodeCanonical, encode } from './base64url'
import { AuthenticationError, MalformedCiphertextError } from './errors'
import { loadAddon, NameCipherAddon, NameKeys } from '../native'
import { SecretKey } from './secret-key'

const addon = loadAddon<NameCipherAddon>('name_cipher')
const ERR_AUTH = -2

export const DIR_ID_BYTES = 16
const TAG_BYTES = 16
export const DOMAIN_NAME = 0x4e
export const DOMAIN_XATTR = 0x58
/** Longest plaintext name (bytes), as on Linux filesystems. */
export const NAME_MAX = 255

/**
 * Deterministic authenticated encryption of a name within one directory (SIV construction):
 *   tag = HMAC-SHA256(macKey, domain || dirId || name)[0..16]   (domain 0x4e for names)
 *   ct  = AES-256-CTR(encKey, iv = tag, name)
 *   out = base64url(tag || ct), unpadded
 * The same name in the same directory always encrypts the same way (so lookups need no
 * directory scan); the same name in two directories does not. Tampering or moving a
 * name to another directory fails the tag check. Native (native-deps/name-cipher): every
 * lookup encrypts a name, and node:crypto's per-call objects cost several times more.
 */
export class NameCipher {
  /** Keyed OpenSSL contexts (HMAC and AES-CTR), reset per name instead of built per name. */
  readonly #keys: NameKeys

  constructor (encKey: SecretKey, macKey: SecretKey) {
    this.#keys = addon.keys(encKey.bytes, macKey.bytes)
  }

  /** Frees the contexts (OpenSSL cleanses the keys); the cipher is unusable afterwards. */
  dispose (): void {
    addon.free(this.#keys)
  }

  /** `domain` separates uses of the same keys: 0x4e for entry names, 0x58 for xattr names. */
  encrypt (dirId: Buffer, name: Buffer, domain = DOMAIN_NAME): string {
    if (dirId.length !== DIR_ID_BYTES) throw new RangeError('a directory ID is 16 bytes')
    if (name.length > NAME_MAX) throw new RangeError(`a name is at most ${NAME_MAX} bytes`)
    const out = Buffer.allocUnsafe(TAG_BYTES + name.length)
    const n = addon.encrypt(this.#keys, domain, dirId, name, out)
    if (n !== out.length) throw new Error('name cipher: bad arguments or OpenSSL failure')
    return encode(out)
  }

  decrypt (dirId: Buffer, encoded: string, domain = DOMAIN_NAME): Buffer {
    if (dirId.length !== DIR_ID_BYTES) throw new RangeError('a directory ID is 16 bytes')
    const raw = decodeCanonical(encoded)
    if (raw === null || raw.length <= TAG_BYTES || raw.length > TAG_BYTES + NAME_MAX) throw new MalformedCiphertextError('name')
    const out = Buffer.alloc(raw.length - TAG_BYTES)
    const n = addon.decrypt(this.#keys, domain, dirId, raw, out)
    if (n === ERR_AUTH) throw new AuthenticationError('name')
    if (n !== out.length) throw new Error('name cipher: bad arguments or OpenSSL failure')
    return out
  }
}
