import sodium from 'sodium-native'
import { SecretKey } from './secret-key'

const MAC_BYTES = 32

/** BLAKE2b-256 of `message` keyed by `key` (libsodium crypto_generichash): a MAC. */
export function mac (key: SecretKey, message: Buffer): Buffer {
  const out = Buffer.alloc(MAC_BYTES)
  sodium.crypto_generichash(out, message, key.bytes)
  return out
}

/** Whether `tag` is `message`'s MAC under `key`, compared in constant time. */
export function macMatches (key: SecretKey, message: Buffer, tag: Buffer): boolean {
  const want = mac(key, message)
  return tag.length === MAC_BYTES && sodium.sodium_memcmp(want, tag)
}
