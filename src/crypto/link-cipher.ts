import sodium from 'sodium-native'
import { decodeCanonical, encode } from './base64url'
import { AuthenticationError, MalformedCiphertextError } from './errors'
import { SecretKey } from './secret-key'

const NONCE_BYTES = 24
const TAG_BYTES = 16
/** Longest symlink target that still fits a 4095-byte encoded backing target. */
export const LINK_TARGET_MAX = Math.floor(4095 / 4) * 3 - NONCE_BYTES - TAG_BYTES

/**
 * Randomised authenticated encryption of symlink targets:
 *   base64url(nonce (24) || XChaCha20-Poly1305(linkKey, nonce, target, aad = "sealfs-link-v1" || volumeId))
 */
export class LinkCipher {
  readonly #aad: Buffer

  constructor (private readonly key: SecretKey, volumeId: Buffer) {
    this.#aad = Buffer.concat([Buffer.from('sealfs-link-v1', 'ascii'), volumeId])
  }

  encrypt (target: Buffer): string {
    const out = Buffer.alloc(NONCE_BYTES + target.length + TAG_BYTES)
    const nonce = out.subarray(0, NONCE_BYTES)
    sodium.randombytes_buf(nonce)
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(NONCE_BYTES), target, this.#aad, null, nonce, this.key.bytes)
    return encode(out)
  }

  decrypt (encoded: string): Buffer {
    const raw = decodeCanonical(encoded)
    if (raw === null || raw.length < NONCE_BYTES + TAG_BYTES) throw new MalformedCiphertextError('symlink target')
    const out = Buffer.alloc(raw.length - NONCE_BYTES - TAG_BYTES)
    try {
      sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, null, raw.subarray(NONCE_BYTES), this.#aad, raw.subarray(0, NONCE_BYTES), this.key.bytes)
    } catch {
      throw new AuthenticationError('symlink target')
    }
    return out
  }
}
