import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { removeTree, tempDir } from './helpers'
import { ChunkCipher, CHUNK_OVERHEAD } from '../src/crypto/chunk-cipher'
import { AuthenticationError } from '../src/crypto/errors'
import { SecretKey } from '../src/crypto/secret-key'

const keyBytes = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex')
const prefix = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf', 'hex')

function aad (index: number): Buffer {
  const i = Buffer.alloc(8)
  i.writeBigUInt64BE(BigInt(index))
  return Buffer.concat([prefix, i])
}

/** The chunk format computed independently with node:crypto. */
function nodeSeal (plain: Buffer, index: number, nonce: Buffer): Buffer {
  const c = crypto.createCipheriv('aes-256-gcm', keyBytes, nonce, { authTagLength: 16 })
  c.setAAD(aad(index))
  return Buffer.concat([nonce, c.update(plain), c.final(), c.getAuthTag()])
}

function nodeOpen (sealed: Buffer, index: number): Buffer {
  const d = crypto.createDecipheriv('aes-256-gcm', keyBytes, sealed.subarray(0, 12), { authTagLength: 16 })
  d.setAAD(aad(index))
  d.setAuthTag(sealed.subarray(sealed.length - 16))
  return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()])
}

describe('ChunkCipher (native AES-256-GCM)', () => {
  const key = SecretKey.adopt(Buffer.from(keyBytes))
  const cc = new ChunkCipher(4096)
  let dir: string
  beforeAll(() => { dir = tempDir('cc') })
  afterAll(async () => { await removeTree(dir) })

  it('matches a fixed vector computed by node:crypto', () => {
    const plain = Buffer.alloc(4096 + 100, 0x61)
    const nonces = [Buffer.from('000000000000000000000001', 'hex'), Buffer.from('ffffffffffffffffffffff02', 'hex')]
    const sealed = Buffer.concat([nodeSeal(plain.subarray(0, 4096), 7, nonces[0]), nodeSeal(plain.subarray(4096), 8, nonces[1])])
    // Pinned bytes of that vector: a change of format or AAD layout shows up here.
    expect(sealed.subarray(sealed.length - 16).toString('hex')).toBe('96a3cd67c58510a2dfa94d587c87a7a5')
    expect(crypto.createHash('sha256').update(sealed).digest('hex')).toBe('f339d4186616b73af384585fa3eadbb6c1078882b354a7bcea54f2182b88b2a1')
    const out = Buffer.alloc(plain.length)
    expect(cc.openSync(key, prefix, 7, sealed, out)).toBe(plain.length)
    expect(out.equals(plain)).toBe(true)
  })

  it('seals runs that node:crypto opens, chunk by chunk, sync and async', async () => {
    for (const len of [1, 4095, 4096, 4097, 3 * 4096, 5 * 4096 + 17]) {
      const plain = crypto.randomBytes(len)
      for (const mode of ['sync', 'async']) {
        const sealed = Buffer.alloc(cc.sealedSize(len))
        const n = mode === 'sync' ? cc.sealSync(key, prefix, 1000, plain, sealed) : await cc.seal(key, prefix, 1000, plain, sealed)
        expect(n).toBe(len + Math.ceil(len / 4096) * CHUNK_OVERHEAD)
        const parts: Buffer[] = []
        for (let off = 0, i = 0; off < sealed.length; off += cc.stride, i++) parts.push(nodeOpen(sealed.subarray(off, Math.min(off + cc.stride, sealed.length)), 1000 + i))
        expect(Buffer.concat(parts).equals(plain)).toBe(true)
      }
    }
  })

  it('uses a fresh nonce on every seal', () => {
    const plain = Buffer.alloc(4096 * 4)
    const sealed = Buffer.alloc(cc.sealedSize(plain.length))
    const nonces = new Set<string>()
    for (let r = 0; r < 50; r++) {
      cc.sealSync(key, prefix, 0, plain, sealed)
      for (let i = 0; i < 4; i++) nonces.add(sealed.subarray(i * cc.stride, i * cc.stride + 12).toString('hex'))
    }
    expect(nonces.size).toBe(200)
  })

  it('rejects a flipped bit, a wrong index, a wrong file and a truncated chunk, naming the chunk', async () => {
    const plain = crypto.randomBytes(3 * 4096)
    const sealed = Buffer.alloc(cc.sealedSize(plain.length))
    cc.sealSync(key, prefix, 0, plain, sealed)
    const out = Buffer.alloc(plain.length)
    const flipped = Buffer.from(sealed)
    flipped[cc.stride + 500] ^= 1
    await expect(cc.open(key, prefix, 0, flipped, out)).rejects.toMatchObject({ detail: { chunk: 1 } })
    expect(out.every(b => b === 0)).toBe(true)  // nothing of the run is handed back
    expect(() => cc.openSync(key, prefix, 1, sealed, out)).toThrow(AuthenticationError)
    const otherFile = Buffer.from(prefix)
    otherFile[31] ^= 1
    expect(() => cc.openSync(key, otherFile, 0, sealed, out)).toThrow(AuthenticationError)
    expect(() => cc.openSync(key, prefix, 0, sealed.subarray(0, 2 * cc.stride + 20), out)).toThrow(AuthenticationError)
  })

  it('sealAt writes a sealed run into a file and openAt reads it back in one job; a file that ends early is EIO', async () => {
    const file = path.join(dir, 'seal')
    const fd = fs.openSync(file, 'w+')
    try {
      const plain = crypto.randomBytes(5 * 4096 + 100)
      const sealed = Buffer.alloc(cc.sealedSize(plain.length))
      const at = 100 + 3 * cc.stride
      expect(await cc.sealAt(key, prefix, 3, plain, sealed, fd, at)).toBe(sealed.length)
      expect(fs.readFileSync(file).subarray(at).equals(sealed)).toBe(true)
      const out = Buffer.alloc(plain.length)
      expect(await cc.openAt(key, prefix, 3, fd, at, Buffer.alloc(sealed.length), out)).toBe(plain.length)
      expect(out.equals(plain)).toBe(true)
      await expect(cc.openAt(key, prefix, 3, fd, at + 1, Buffer.alloc(sealed.length), out)).rejects.toMatchObject({ code: 'EIO' })
      await expect(cc.openAt(key, prefix, 2, fd, at, Buffer.alloc(sealed.length), out)).rejects.toThrow(AuthenticationError)
    } finally {
      fs.closeSync(fd)
    }
    const ro = fs.openSync(file, 'r')
    try {
      await expect(cc.sealAt(key, prefix, 0, Buffer.alloc(4096), Buffer.alloc(cc.sealedSize(4096)), ro, 0)).rejects.toMatchObject({ code: 'EBADF' })
    } finally {
      fs.closeSync(ro)
    }
  })

  it('rewriteAt merges old bytes around new ones in the first and last chunk, in one job; a tampered old chunk is named', async () => {
    const file = path.join(dir, 'rewrite')
    const fd = fs.openSync(file, 'w+')
    try {
      const old = crypto.randomBytes(3 * 4096 + 1000)  // 4 chunks, the last partial
      await cc.sealAt(key, prefix, 0, old, Buffer.alloc(cc.sealedSize(old.length)), fd, 0)
      const expected = Buffer.from(old)
      // New bytes from the middle of chunk 1 to the middle of chunk 2: run = chunks 1..2.
      const data = crypto.randomBytes(5000)
      const start = 4096 + 1500
      data.copy(expected, start)
      const plain = Buffer.alloc(2 * 4096)
      data.copy(plain, start - 4096)
      const sealed = Buffer.alloc(cc.sealedSize(plain.length))
      expect(await cc.rewriteAt(key, prefix, 1, plain, sealed, fd, cc.stride, start - 4096, start - 4096 + data.length, 2 * 4096, false)).toBe(sealed.length)
      // Extending the partial last chunk past the old end (run = chunk 3, 1000 old bytes).
      const tail = crypto.randomBytes(2000)
      const grown = Buffer.concat([expected, Buffer.alloc(1500)])
      tail.copy(grown, 3 * 4096 + 500)
      const plain3 = Buffer.alloc(2500)
      tail.copy(plain3, 500)
      expect(await cc.rewriteAt(key, prefix, 3, plain3, Buffer.alloc(cc.sealedSize(2500)), fd, 3 * cc.stride, 500, 2500, 1000, false)).toBe(cc.sealedSize(2500))
      const all = Buffer.alloc(grown.length)
      await cc.openAt(key, prefix, 0, fd, 0, Buffer.alloc(cc.sealedSize(grown.length)), all)
      expect(all.equals(grown)).toBe(true)
      // A flipped byte in old chunk 2 fails the merge, naming chunk 2, and writes nothing.
      const before = fs.readFileSync(file)
      const b = Buffer.alloc(1)
      fs.readSync(fd, b, 0, 1, 2 * cc.stride + 40)
      fs.writeSync(fd, Buffer.of(b[0] ^ 1), 0, 1, 2 * cc.stride + 40)
      const err = await cc.rewriteAt(key, prefix, 1, Buffer.alloc(2 * 4096), Buffer.alloc(cc.sealedSize(2 * 4096)), fd, cc.stride, 100, 4096 + 10, 2 * 4096, false).catch(e => e)
      expect(err).toBeInstanceOf(AuthenticationError)
      expect(err.detail.chunk).toBe(2)
      before[2 * cc.stride + 40] ^= 1
      expect(fs.readFileSync(file).equals(before)).toBe(true)
    } finally {
      fs.closeSync(fd)
    }
  })
})
