import sodium from 'sodium-native'
import { AuthenticationError, MalformedCiphertextError } from './errors'
import { KEY_BYTES, SecretKey } from './secret-key'

const NONCE_BYTES = 24
const TAG_BYTES = 16
/** nonce (24) || encrypted key (32) || tag (16) */
export const WRAPPED_KEY_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES

/**
 * Wraps a 256-bit key under a key-encryption key with XChaCha20-Poly1305 and a random
 * 192-bit nonce (no nonce bookkeeping needed, however many keys are wrapped).
 * `aad` binds the wrapped key to its context (volume, file, key version, parameters).
 * `nonce` is given only where the caller keeps (kek, nonce) unique itself: a file header's
 * nonce chain (docs/FORMAT.md §6.4), each link of which wraps one key and one AAD.
 */
export function wrapKey (kek: SecretKey, key: SecretKey, aad: Buffer, givenNonce?: Buffer): Buffer {
  const out = Buffer.alloc(WRAPPED_KEY_BYTES)
  const nonce = out.subarray(0, NONCE_BYTES)
  if (givenNonce === undefined) sodium.randombytes_buf(nonce)
  else if (givenNonce.length !== NONCE_BYTES) throw new RangeError('key wrap: bad nonce')
  else givenNonce.copy(nonce)
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(NONCE_BYTES), key.bytes, aad, null, nonce, kek.bytes)
  return out
}

export function unwrapKey (kek: SecretKey, wrapped: Buffer, aad: Buffer, what: string): SecretKey {
  if (wrapped.length !== WRAPPED_KEY_BYTES) throw new MalformedCiphertextError(what)
  const key = SecretKey.alloc()
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(key.bytes, null, wrapped.subarray(NONCE_BYTES), aad, wrapped.subarray(0, NONCE_BYTES), kek.bytes)
  } catch {
    key.dispose()
    throw new AuthenticationError(what)
  }
  return key
}
