/**
 * Buffers for large requests, reused. A 1 MiB READ or WRITE needs two or three buffers of
 * about 1 MiB (the payload, its sealed form, the reply). Allocated fresh, each came from
 * new pages that the kernel faulted in and zeroed: 256 page faults per buffer, half the
 * daemon's CPU in a sequential write. Small requests allocate as before (malloc's bins serve
 * them without faults).
 *
 * A buffer is given back only once nothing uses it any more: after the pool job that read or
 * wrote it has finished and the reply that carried it has been written.
 */
export class RequestBuffers {
  /** Smaller requests are not pooled. */
  static readonly MIN_BYTES = 64 * 1024
  /**
   * One size for every pooled buffer: the sealed run of a 1 MiB request with partial chunks
   * at both ends, for chunks of up to 32 KiB (257 * 4124 bytes with the default 4 KiB).
   * Larger runs (volumes with larger chunks) are allocated as they come.
   */
  static readonly CAPACITY = 1024 * 1024 + 64 * 1024
  /** Free buffers kept: enough for the requests in flight at once (readahead, several writers). */
  static readonly KEPT = 8

  readonly #free: Buffer[] = []
  /**
   * The views lent and not yet given back: only these come back, once each. Views, not their
   * memory: a stale view of memory lent again since must not return it a second time.
   */
  readonly #lent = new WeakSet<Buffer>()

  /** A buffer of `size` bytes, contents undefined. */
  take (size: number): Buffer {
    if (size < RequestBuffers.MIN_BYTES || size > RequestBuffers.CAPACITY) return Buffer.allocUnsafe(size)
    let whole = this.#free.pop()
    if (whole === undefined) {
      // None free: a request much smaller than a pooled buffer gets its own, of its size.
      if (size < RequestBuffers.CAPACITY / 4) return Buffer.allocUnsafe(size)
      whole = Buffer.allocUnsafe(RequestBuffers.CAPACITY)
    }
    const view = whole.subarray(0, size)
    this.#lent.add(view)
    return view
  }

  /**
   * Gives back a buffer from take(), which its caller must not touch again. Anything else, or
   * a buffer given back twice (it could then be lent to two users at once), is ignored.
   */
  give (buf: Buffer): void {
    if (!this.#lent.delete(buf)) return
    if (this.#free.length < RequestBuffers.KEPT) this.#free.push(Buffer.from(buf.buffer, 0, RequestBuffers.CAPACITY))
  }
}

/** The daemon's one set (one mount per process). */
export const requestBuffers = new RequestBuffers()
