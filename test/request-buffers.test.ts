import { describe, expect, it } from 'vitest'
import { RequestBuffers } from '../src/filesystem/request-buffers'

const MiB = 1024 * 1024

describe('the buffers of large requests', () => {
  it('reuses a buffer given back, and never lends one buffer to two users at once', () => {
    const pool = new RequestBuffers()
    const a = pool.take(MiB)
    expect(a.length).toBe(MiB)
    pool.give(a)
    const b = pool.take(MiB)
    expect(b.buffer).toBe(a.buffer)  // reused: no fresh pages for the next request
    // `a` given back again by mistake while `b` (the same memory) is in use: ignored.
    pool.give(a)
    const c = pool.take(MiB)
    expect(c.buffer).not.toBe(b.buffer)
    pool.give(b)
    pool.give(b)
    const d = pool.take(MiB)
    const e = pool.take(MiB)
    expect(d.buffer).not.toBe(e.buffer)
  })

  it('leaves small requests, and buffers it did not lend, alone', () => {
    const pool = new RequestBuffers()
    const small = pool.take(4096)
    expect(small.length).toBe(4096)
    pool.give(small)
    const foreign = Buffer.alloc(RequestBuffers.CAPACITY)
    pool.give(foreign)
    expect(pool.take(MiB).buffer).not.toBe(foreign.buffer)
  })
})
