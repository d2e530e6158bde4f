import sodium from 'sodium-native'

export const KEY_BYTES = 32

/**
 * A 256-bit key in sodium secure memory (guarded pages, locked, zeroed on free).
 * Whoever creates one disposes of it; a disposed key throws on use.
 */
export class SecretKey {
  #buf: Buffer | null

  private constructor (buf: Buffer) {
    this.#buf = buf
  }

  static random (): SecretKey {
    const buf = sodium.sodium_malloc(KEY_BYTES)
    sodium.randombytes_buf(buf)
    return new SecretKey(buf)
  }

  /** Copies `source` into secure memory and zeroes `source`. */
  static adopt (source: Buffer): SecretKey {
    if (source.length !== KEY_BYTES) throw new RangeError('a key is 32 bytes')
    const buf = sodium.sodium_malloc(KEY_BYTES)
    source.copy(buf)
    sodium.sodium_memzero(source)
    return new SecretKey(buf)
  }

  /** An empty key to be filled by a KDF or an unwrap. */
  static alloc (): SecretKey {
    return new SecretKey(sodium.sodium_malloc(KEY_BYTES))
  }

  /** The key bytes, for handing to a primitive. Never copy them elsewhere. */
  get bytes (): Buffer {
    if (this.#buf === null) throw new Error('key used after dispose')
    return this.#buf
  }

  /**
   * Derives an independent subkey: libsodium crypto_kdf (BLAKE2b-256 keyed by this key,
   * subkey id as salt, 8-byte context as personalisation).
   */
  derive (id: number, context: string): SecretKey {
    const ctx = Buffer.from(context, 'ascii')
    if (ctx.length !== 8) throw new RangeError('a KDF context is 8 ASCII bytes')
    const sub = SecretKey.alloc()
    sodium.crypto_kdf_derive_from_key(sub.bytes, id, ctx, this.bytes)
    return sub
  }

  dispose (): void {
    if (this.#buf !== null) {
      sodium.sodium_memzero(this.#buf)
      sodium.sodium_free(this.#buf)
      this.#buf = null
    }
  }
}

export function randomBytes (n: number): Buffer {
  const b = Buffer.alloc(n)
  sodium.randombytes_buf(b)
  return b
}
