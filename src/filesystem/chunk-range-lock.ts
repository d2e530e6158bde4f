/** A span of chunk indexes, inclusive; the whole file is [0, Infinity]. */
interface Span { first: number, last: number, write: boolean }
interface Waiter extends Span { wake: () => void }

export const WHOLE_FILE = { first: 0, last: Infinity }

function overlap (a: Span, b: Span): boolean {
  return a.first <= b.last && b.first <= a.last && (a.write || b.write)
}

/**
 * A readers-writer lock over ranges of one file's chunks: reads of a range share it, a write
 * excludes reads and writes of the chunks it touches, so no read sees a chunk half rewritten
 * while writes to other chunks (several processes writing one file at random places) run
 * side by side. Whatever changes the size (an extending write, a truncate) takes the whole
 * file. A waiter goes ahead of earlier waiters only if it overlaps none of them, so an
 * overlapping writer is never starved.
 */
export class ChunkRangeLock {
  readonly #held = new Set<Span>()
  readonly #queue: Waiter[] = []

  async run<T> (first: number, last: number, write: boolean, fn: () => Promise<T>): Promise<T> {
    const span: Waiter = { first, last, write, wake: () => undefined }
    if (this.#free(span, this.#queue.length)) this.#held.add(span)
    else await new Promise<void>(resolve => { span.wake = resolve; this.#queue.push(span) })
    try {
      return await fn()
    } finally {
      this.#held.delete(span)
      this.#drain()
    }
  }

  /** Whether `span` conflicts with nothing held and with none of the first `before` waiters. */
  #free (span: Span, before: number): boolean {
    for (const h of this.#held) if (overlap(h, span)) return false
    for (let i = 0; i < before; i++) if (overlap(this.#queue[i], span)) return false
    return true
  }

  #drain (): void {
    for (let i = 0; i < this.#queue.length;) {
      const w = this.#queue[i]
      if (!this.#free(w, i)) { i++; continue }
      this.#queue.splice(i, 1)
      this.#held.add(w)  // the same object run() deletes when it is done
      w.wake()
    }
  }
}
