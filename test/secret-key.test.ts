import { describe, expect, it } from 'vitest'
import { SecretKey } from '../src/crypto/secret-key'

describe('SecretKey', () => {
  it('holds tens of thousands of live keys (one per open file) and zeroes each when disposed', () => {
    // One sodium_malloc per key ran out of memory mappings near 21,000 keys and aborted the daemon.
    const keys = Array.from({ length: 30000 }, () => SecretKey.random())
    expect(new Set(keys.map(k => k.bytes.toString('hex'))).size).toBe(keys.length)
    const view = keys[123].bytes
    keys[123].dispose()
    expect(view.equals(Buffer.alloc(32))).toBe(true)
    expect(() => keys[123].bytes).toThrow()
    const again = SecretKey.random()
    expect(again.bytes.equals(Buffer.alloc(32))).toBe(false)
    for (const k of [...keys, again]) k.dispose()
  })
})
