/**
 * The names of hard-linked files, by backing inode. libfuse gives each name its own kernel
 * inode, and the kernel caches attributes per inode, so a change through one name (a write,
 * chmod, link or unlink) must drop what the kernel holds for the others. A name is tracked
 * once a lookup has shown it with a link count above one, or when link() made it.
 * Bounded: past MAX_NAMES the oldest names are handed back to be invalidated, then forgotten.
 */
const MAX_NAMES = 65536

export class LinkNames {
  readonly #byIno = new Map<string, Set<string>>()
  readonly #byPath = new Map<string, string>()

  get size (): number {
    return this.#byPath.size
  }

  /** Records what a lookup showed; returns names evicted to stay within the bound. */
  seen (p: string, ino: bigint | number, nlink: number): string[] {
    if (nlink < 2) {
      if (this.#byPath.size > 0) this.forget(p)
      return []
    }
    const key = String(ino)
    const old = this.#byPath.get(p)
    if (old === key) return []
    if (old !== undefined) this.forget(p)
    let names = this.#byIno.get(key)
    if (names === undefined) this.#byIno.set(key, names = new Set())
    names.add(p)
    this.#byPath.set(p, key)
    const evicted: string[] = []
    for (const oldest of this.#byPath.keys()) {
      if (this.#byPath.size <= MAX_NAMES) break
      evicted.push(oldest)
      this.forget(oldest)
    }
    return evicted
  }

  /** The other tracked names of the file that `p` names. */
  others (p: string): string[] {
    const key = this.#byPath.get(p)
    if (key === undefined) return []
    return [...(this.#byIno.get(key) ?? [])].filter(n => n !== p)
  }

  /** All tracked names of the file that `p` named, `p` included (call before forgetting it). */
  namesWith (p: string): string[] {
    const key = this.#byPath.get(p)
    return key === undefined ? [] : [...(this.#byIno.get(key) ?? [])]
  }

  /** How many tracked names of the file that `p` names satisfy `pred`. */
  count (p: string, pred: (name: string) => boolean): number {
    const key = this.#byPath.get(p)
    if (key === undefined) return 0
    let n = 0
    for (const name of this.#byIno.get(key) ?? []) if (pred(name)) n++
    return n
  }

  forget (p: string): void {
    const key = this.#byPath.get(p)
    if (key === undefined) return
    this.#byPath.delete(p)
    const names = this.#byIno.get(key)
    names?.delete(p)
    if (names?.size === 0) this.#byIno.delete(key)
  }

  /** A name, or a directory above names, moved from `from` to `to` (which it replaced). */
  renamed (from: string, to: string): void {
    if (this.#byPath.size === 0) return
    this.forget(to)
    const prefix = from + '/'
    const moved = [...this.#byPath.entries()].filter(([p]) => p === from || p.startsWith(prefix))
    for (const [p] of moved) this.forget(p)
    for (const [p, key] of moved) {
      const q = to + p.slice(from.length)
      this.#byPath.set(q, key)
      let names = this.#byIno.get(key)
      if (names === undefined) this.#byIno.set(key, names = new Set())
      names.add(q)
    }
  }

  /** Two names swapped what they refer to (RENAME_EXCHANGE). */
  exchanged (a: string, b: string): void {
    const marker = `\0${a}`
    this.renamed(a, marker)
    this.renamed(b, a)
    this.renamed(marker, b)
  }
}
