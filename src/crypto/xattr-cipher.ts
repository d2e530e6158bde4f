import sodium from 'sodium-native'
import { AuthenticationError, MalformedCiphertextError } from './errors'
import { DIR_ID_BYTES, DOMAIN_XATTR, NameCipher } from './name-cipher'
import { SecretKey } from './secret-key'

const NONCE_BYTES = 24
const TAG_BYTES = 16
/** Extended-attribute names are encrypted in one fixed context (not per directory). */
const XATTR_CONTEXT = Buffer.alloc(DIR_ID_BYTES)

/**
 * Extended attributes: the name deterministically (the name cipher in the xattr domain, so
 * it can be looked up), the value with XChaCha20-Poly1305 under its own key, random nonce,
 * AAD = "sealfs-xattr-v1" || volumeId || encrypted name (a value cannot move to another name).
 */
export class XattrCipher {
  readonly #aadPrefix: Buffer

  constructor (private readonly names: NameCipher, private readonly key: SecretKey, volumeId: Buffer) {
    this.#aadPrefix = Buffer.concat([Buffer.from('sealfs-xattr-v1', 'ascii'), volumeId])
  }

  encryptName (name: Buffer): string {
    return this.names.encrypt(XATTR_CONTEXT, name, DOMAIN_XATTR)
  }

  decryptName (encoded: string): Buffer {
    return this.names.decrypt(XATTR_CONTEXT, encoded, DOMAIN_XATTR)
  }

  encryptValue (encName: string, value: Buffer): Buffer {
    const out = Buffer.alloc(NONCE_BYTES + value.length + TAG_BYTES)
    const nonce = out.subarray(0, NONCE_BYTES)
    sodium.randombytes_buf(nonce)
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(NONCE_BYTES), value, this.#aad(encName), null, nonce, this.key.bytes)
    return out
  }

  decryptValue (encName: string, sealed: Buffer): Buffer {
    if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new MalformedCiphertextError('xattr value')
    const out = Buffer.alloc(sealed.length - NONCE_BYTES - TAG_BYTES)
    try {
      sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, null, sealed.subarray(NONCE_BYTES), this.#aad(encName), sealed.subarray(0, NONCE_BYTES), this.key.bytes)
    } catch {
      throw new AuthenticationError('xattr value')
    }
    return out
  }

  #aad (encName: string): Buffer {
    return Buffer.concat([this.#aadPrefix, Buffer.from(encName, 'ascii')])
  }
}
