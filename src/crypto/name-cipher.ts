import crypto from 'crypto'
import { decodeCanonical, encode } from './base64url'
import { AuthenticationError, MalformedCiphertextError } from './errors'
import { SecretKey } from './secret-key'

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
 * name to another directory fails the tag check.
 */
export class NameCipher {
  readonly #encKey: crypto.KeyObject
  readonly #macKey: crypto.KeyObject

  constructor (encKey: SecretKey, macKey: SecretKey) {
    // KeyObjects keep the key inside OpenSSL so it is not re-copied per call.
    this.#encKey = crypto.createSecretKey(encKey.bytes)
    this.#macKey = crypto.createSecretKey(macKey.bytes)
  }

  /** `domain` separates uses of the same keys: 0x4e for entry names, 0x58 for xattr names. */
  encrypt (dirId: Buffer, name: Buffer, domain = DOMAIN_NAME): string {
    const tag = this.#tag(dirId, name, domain)
    const c = crypto.createCipheriv('aes-256-ctr', this.#encKey, tag)
    return encode(Buffer.concat([tag, c.update(name), c.final()]))
  }

  decrypt (dirId: Buffer, encoded: string, domain = DOMAIN_NAME): Buffer {
    const raw = decodeCanonical(encoded)
    if (raw === null || raw.length <= TAG_BYTES || raw.length > TAG_BYTES + NAME_MAX) throw new MalformedCiphertextError('name')
    const tag = raw.subarray(0, TAG_BYTES)
    const d = crypto.createDecipheriv('aes-256-ctr', this.#encKey, tag)
    const name = Buffer.concat([d.update(raw.subarray(TAG_BYTES)), d.final()])
    if (!crypto.timingSafeEqual(tag, this.#tag(dirId, name, domain))) throw new AuthenticationError('name')
    return name
  }

  #tag (dirId: Buffer, name: Buffer, domain: number): Buffer {
    if (dirId.length !== DIR_ID_BYTES) throw new RangeError('a directory ID is 16 bytes')
    return crypto.createHmac('sha256', this.#macKey).update(Buffer.of(domain)).update(dirId).update(name).digest().subarray(0, TAG_BYTES)
  }
}
