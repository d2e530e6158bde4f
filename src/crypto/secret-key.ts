import sodium from 'sodium-native'

export const KEY_BYTES = 32

/**
 * Secure memory for keys, a page of keys at a time. One sodium_malloc per key cost about
 * 25 µs (mmap, mprotect and mlock of its own guarded pages; every new file gets a DEK) and
 * three memory mappings each, so that some 21,000 live keys exhausted vm.max_map_count and
 * the next allocation aborted the process. Slabs are never freed; a disposed key's slot is
 * zeroed and reused, so the memory held is bounded by the most keys ever alive at once.
 */
const SLAB_BYTES = 4096
const freeSlots: Buffer[] = []

function takeSlot (): Buffer {
  let slot = freeSlots.pop()
  if (slot === undefined) {
    const slab = sodium.sodium_malloc(SLAB_BYTES)
    for (let at = SLAB_BYTES - KEY_BYTES; at > 0; at -= KEY_BYTES) freeSlots.push(slab.subarray(at, at + KEY_BYTES))
    slot = slab.subarray(0, KEY_BYTES)
  }
  return slot
}

/**
 * A 256-bit key in sodium secure memory (guarded, locked pages, zeroed when disposed).
 * Whoever creates one disposes of it; a disposed key throws on use.
 */
export class SecretKey {
  #buf: Buffer | null

  private constructor (buf: Buffer) {
    this.#buf = buf
  }

  static random (): SecretKey {
    const buf = takeSlot()
    sodium.randombytes_buf(buf)
    return new SecretKey(buf)
  }

  /** Copies `source` into secure memory and zeroes `source`. */
  static adopt (source: Buffer): SecretKey {
    if (source.length !== KEY_BYTES) throw new RangeError('a key is 32 bytes')
    const buf = takeSlot()
    source.copy(buf)
    sodium.sodium_memzero(source)
    return new SecretKey(buf)
  }

  /** An empty key to be filled by a KDF or an unwrap. */
  static alloc (): SecretKey {
    return new SecretKey(takeSlot())
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
      freeSlots.push(this.#buf)
      this.#buf = null
    }
  }
}

export function randomBytes (n: number): Buffer {
  const b = Buffer.alloc(n)
  sodium.randombytes_buf(b)
  return b
}
