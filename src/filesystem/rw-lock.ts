/**
 * A readers-writer lock for one file's contents: reads share, writes and truncates
 * exclude everything, so no read sees a chunk half rewritten. FIFO, so writers do not starve.
 */
export class RwLock {
  #readers = 0
  #writer = false
  readonly #queue: Array<{ write: boolean, wake: () => void }> = []

  async read<T> (fn: () => Promise<T>): Promise<T> {
    if (this.#writer || this.#queue.length > 0) await new Promise<void>(resolve => this.#queue.push({ write: false, wake: resolve }))
    else this.#readers++
    try { return await fn() } finally { this.#readers--; this.#drain() }
  }

  async write<T> (fn: () => Promise<T>): Promise<T> {
    if (this.#writer || this.#readers > 0 || this.#queue.length > 0) await new Promise<void>(resolve => this.#queue.push({ write: true, wake: resolve }))
    else this.#writer = true
    try { return await fn() } finally { this.#writer = false; this.#drain() }
  }

  #drain (): void {
    while (this.#queue.length > 0 && !this.#writer) {
      const next = this.#queue[0]
      if (next.write) {
        if (this.#readers > 0) return
        this.#queue.shift()
        this.#writer = true
        next.wake()
        return
      }
      this.#queue.shift()
      this.#readers++
      next.wake()
    }
  }
}
