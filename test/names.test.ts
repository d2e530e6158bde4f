import crypto from 'crypto'
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

  it('is exactly the construction docs/FORMAT.md gives (HMAC-SHA256 tag, AES-256-CTR under it)', () => {
    const enc = SecretKey.random()
    const mac = SecretKey.random()
    const cipher = new NameCipher(enc, mac)
    for (const [name, domain] of [[Buffer.from('report.pdf'), 0x4e], [Buffer.alloc(255, 0xe9), 0x4e], [Buffer.from('user.comment'), 0x58]] as const) {
      const tag = crypto.createHmac('sha256', mac.bytes).update(Buffer.of(domain)).update(dirA).update(name).digest().subarray(0, 16)
      const c = crypto.createCipheriv('aes-256-ctr', enc.bytes, tag)
      const expected = Buffer.concat([tag, c.update(name), c.final()]).toString('base64url')
      expect(cipher.encrypt(dirA, name, domain)).toBe(expected)
      expect(cipher.decrypt(dirA, expected, domain).equals(name)).toBe(true)
      expect(() => cipher.decrypt(dirA, expected, domain ^ 1)).toThrow()
    }
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
