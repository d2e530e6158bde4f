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
   * One size for every pooled buffer: a 1 MiB request's run of 4 KiB chunks, partial chunks
   * at both ends, sealed (258 * 4124 bytes), with room to spare.
   */
  static readonly CAPACITY = 1024 * 1024 + 64 * 1024
  /** Free buffers kept: enough for the requests in flight at once (readahead, several writers). */
  static readonly KEPT = 8

  readonly #free: Buffer[] = []
  /** The memory of every pooled buffer made here: anything else given back is ignored. */
  readonly #ours = new WeakSet<ArrayBufferLike>()

  /** A buffer of `size` bytes, contents undefined. */
  take (size: number): Buffer {
    if (size < RequestBuffers.MIN_BYTES || size > RequestBuffers.CAPACITY) return Buffer.allocUnsafe(size)
    let whole = this.#free.pop()
    if (whole === undefined) {
      whole = Buffer.allocUnsafe(RequestBuffers.CAPACITY)
      this.#ours.add(whole.buffer)
    }
    return whole.subarray(0, size)
  }

  /** Gives back a buffer from take(), which its caller must not touch again. */
  give (buf: Buffer): void {
    if (!this.#ours.has(buf.buffer) || this.#free.length >= RequestBuffers.KEPT) return
    // Given back twice, it would be handed to two users at once.
    if (this.#free.some(b => b.buffer === buf.buffer)) return
    this.#free.push(Buffer.from(buf.buffer, 0, RequestBuffers.CAPACITY))
  }
}

/** The daemon's one set (one mount per process). */
export const requestBuffers = new RequestBuffers()
