import { SecretKey } from '../crypto/secret-key'

interface Entry { key: SecretKey, pins: number }

/**
 * Unwrapped DEKs by header (file ID and the header's fields: see dekCacheId). Keys of open files are pinned; unpinned keys stay for reuse
 * (stat-open-read-close loops) up to `maxIdle`, least recently used first out, and are
 * zeroed when evicted or when the cache is cleared at unmount.
 */
export class DekCache {
  readonly #entries = new Map<string, Entry>()
  #idle = 0

  constructor (readonly maxIdle = 256) {}

  /** The pinned key for `id`, unwrapped by `load` if not cached. Pair with unpin(). */
  pin (id: string, load: () => SecretKey): SecretKey {
    let e = this.#entries.get(id)
    if (e === undefined) {
      e = { key: load(), pins: 0 }
    } else {
      this.#entries.delete(id)  // re-insert: most recently used last
      if (e.pins === 0) this.#idle--
    }
    e.pins++
    this.#entries.set(id, e)
    return e.key
  }

  unpin (id: string): void {
    const e = this.#entries.get(id)
    if (e === undefined || e.pins === 0) return
    if (--e.pins === 0) {
      this.#idle++
      this.#evict()
    }
  }

  /** Forgets a key (its file is gone). */
  drop (id: string): void {
    const e = this.#entries.get(id)
    if (e === undefined || e.pins > 0) return
    this.#entries.delete(id)
    this.#idle--
    e.key.dispose()
  }

  /** Forgets every unpinned key whose id begins `prefix` (the ids of one file's headers). */
  dropPrefix (prefix: string): void {
    for (const id of [...this.#entries.keys()]) if (id.startsWith(prefix)) this.drop(id)
  }

  get size (): number {
    return this.#entries.size
  }

  #evict (): void {
    for (const [id, e] of this.#entries) {
      if (this.#idle <= this.maxIdle) return
      if (e.pins > 0) continue
      this.#entries.delete(id)
      this.#idle--
      e.key.dispose()
    }
  }

  clear (): void {
    for (const e of this.#entries.values()) e.key.dispose()
    this.#entries.clear()
    this.#idle = 0
  }
}
