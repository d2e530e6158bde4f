import { describe, expect, it } from 'vitest'
import { NameCipher } from '../src/crypto/name-cipher'
import { LinkCipher } from '../src/crypto/link-cipher'
import { SecretKey } from '../src/crypto/secret-key'

describe('NameCipher', () => {
  const names = new NameCipher(SecretKey.random(), SecretKey.random())
  const dirA = Buffer.alloc(16, 1)
  const dirB = Buffer.alloc(16, 2)

  it('is deterministic per directory, differs across directories, and round-trips', () => {
    const n = Buffer.from('report.pdf')
    expect(names.encrypt(dirA, n)).toBe(names.encrypt(dirA, n))
    expect(names.encrypt(dirA, n)).not.toBe(names.encrypt(dirB, n))
    expect(names.decrypt(dirA, names.encrypt(dirA, n)).toString()).toBe('report.pdf')
    expect(names.encrypt(dirA, n)).toMatch(/^[A-Za-z0-9_-]+$/)
  })

  it('rejects a name moved to another directory, a tampered name and a non-canonical encoding', () => {
    const enc = names.encrypt(dirA, Buffer.from('a'))
    expect(() => names.decrypt(dirB, enc)).toThrow()
    const t = (enc[5] === 'A' ? 'B' : 'A')
    expect(() => names.decrypt(dirA, enc.slice(0, 5) + t + enc.slice(6))).toThrow()
    // 17 bytes encode to 23 characters; the last carries 2 spare bits that must be zero.
    const last = enc[enc.length - 1]
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const twin = alphabet[alphabet.indexOf(last) ^ 1]
    expect(() => names.decrypt(dirA, enc.slice(0, -1) + twin)).toThrow()
  })

  it('handles 255-byte names', () => {
    const n = Buffer.alloc(255, 0x78)
    expect(names.decrypt(dirA, names.encrypt(dirA, n)).equals(n)).toBe(true)
  })
})

describe('LinkCipher', () => {
  it('round-trips, is randomised, and rejects tampering', () => {
    const links = new LinkCipher(SecretKey.random(), Buffer.alloc(16, 9))
    const t = Buffer.from('../some/where')
    const a = links.encrypt(t)
    expect(a).not.toBe(links.encrypt(t))
    expect(links.decrypt(a).equals(t)).toBe(true)
    expect(() => links.decrypt(a.slice(0, -2) + (a.endsWith('AA') ? 'BA' : 'AA'))).toThrow()
  })
})
