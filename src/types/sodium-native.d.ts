// The subset of sodium-native that sealfs uses.
declare module 'sodium-native' {
  export function sodium_malloc (size: number): Buffer
  export function sodium_free (buf: Buffer): void
  export function sodium_memzero (buf: Buffer): void
  export function randombytes_buf (buf: Buffer): void
  export function crypto_pwhash (out: Buffer, passwd: Buffer, salt: Buffer, opslimit: number, memlimit: number, alg: number): void
  export function crypto_pwhash_async (out: Buffer, passwd: Buffer, salt: Buffer, opslimit: number, memlimit: number, alg: number, cb: (err: Error | null) => void): void
  export const crypto_pwhash_ALG_ARGON2ID13: number
  export const crypto_pwhash_SALTBYTES: number
  export const crypto_pwhash_OPSLIMIT_INTERACTIVE: number
  export const crypto_pwhash_MEMLIMIT_INTERACTIVE: number
  export const crypto_pwhash_OPSLIMIT_MODERATE: number
  export const crypto_pwhash_MEMLIMIT_MODERATE: number
  export function crypto_kdf_derive_from_key (out: Buffer, id: number, ctx: Buffer, key: Buffer): void
  export function crypto_aead_xchacha20poly1305_ietf_encrypt (c: Buffer, m: Buffer, ad: Buffer | null, nsec: null, npub: Buffer, k: Buffer): number
  export function crypto_aead_xchacha20poly1305_ietf_decrypt (m: Buffer, nsec: null, c: Buffer, ad: Buffer | null, npub: Buffer, k: Buffer): number
  export const crypto_aead_xchacha20poly1305_ietf_NPUBBYTES: number
  export const crypto_aead_xchacha20poly1305_ietf_ABYTES: number
  export function crypto_generichash (out: Buffer, input: Buffer, key?: Buffer): void
  export function sodium_memcmp (a: Buffer, b: Buffer): boolean
  export const crypto_generichash_KEYBYTES_MIN: number
}
