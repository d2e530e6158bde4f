import fs from 'fs'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, makeVolume, mount, mountForeground, sleep, takeDown, umount, Vol, walk } from './helpers'
import { HEADER_BYTES } from '../src/volume/file-header'
import { END_TAG_BYTES } from '../src/crypto/end-tag'

const MARKER = 'SEALFS-MARKER-7f3a9c'

describe('the cipher dir holds no plaintext', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume(); mount(v) })
  afterAll(async () => { await cleanup(v) })

  it('contains no marker in contents, names, directory names or symlink targets', async () => {
    const body = Buffer.from(`${MARKER}\n`.repeat(5000))
    fs.mkdirSync(path.join(v.mnt, `dir-${MARKER}`))
    fs.writeFileSync(path.join(v.mnt, `dir-${MARKER}`, `file-${MARKER}.txt`), body)
    fs.writeFileSync(path.join(v.mnt, `${MARKER}`.repeat(12).slice(0, 250)), MARKER)  // a long name
    fs.symlinkSync(`/target/${MARKER}`, path.join(v.mnt, `link-${MARKER}`))
    fs.writeFileSync(path.join(v.mnt, 'small'), MARKER)
    await umount(v)
    const needle = Buffer.from(MARKER.slice(0, 12))
    const all = walk(v.cipher)
    expect(all.length).toBeGreaterThan(6)
    for (const f of all) {
      expect(f.includes(MARKER.slice(0, 12)), f).toBe(false)
      const st = fs.lstatSync(f)
      const bytes = st.isSymbolicLink() ? Buffer.from(fs.readlinkSync(f)) : fs.readFileSync(f)
      expect(bytes.includes(needle), `plaintext in ${f}`).toBe(false)
    }
    mount(v)
    expect(fs.readFileSync(path.join(v.mnt, `dir-${MARKER}`, `file-${MARKER}.txt`)).equals(body)).toBe(true)
    expect(fs.readlinkSync(path.join(v.mnt, `link-${MARKER}`))).toBe(`/target/${MARKER}`)
    expect(fs.readdirSync(v.mnt).sort()).toEqual([`${MARKER}`.repeat(12).slice(0, 250), `dir-${MARKER}`, `link-${MARKER}`, 'small'].sort())
  })
})

describe('tampering with chunks gives EIO, never wrong data', () => {
  let v: Vol
  const C = 4096
  const stride = C + 28
  beforeAll(() => { v = makeVolume({ chunkSize: C }) })
  afterEach(async () => { await takeDown(v.base) })  // the test's finally: no mount or daemon outlives it
  afterAll(async () => { await cleanup(v) })

  function backingOf (name: string): string {
    // The one regular file in the root whose plaintext name is `name`: find by size.
    const size = fs.statSync(path.join(v.mnt, name)).size
    const want = HEADER_BYTES + size + Math.ceil(size / C) * 28 + END_TAG_BYTES
    const hits = fs.readdirSync(v.cipher).filter(n => !n.includes('.') && fs.statSync(path.join(v.cipher, n)).size === want)
    expect(hits.length).toBe(1)
    return path.join(v.cipher, hits[0])
  }

  async function expectEio (name: string, offset: number): Promise<void> {
    const fd = fs.openSync(path.join(v.mnt, name), 'r')
    try {
      expect(() => fs.readSync(fd, Buffer.alloc(C), 0, C, offset)).toThrow(/EIO/)
    } finally {
      fs.closeSync(fd)
    }
  }

  it('detects a flipped byte, two swapped chunks and a chunk moved from another file', async () => {
    mount(v)
    const a = Buffer.alloc(4 * C, 0x41)
    const b = Buffer.alloc(5 * C, 0x42)
    fs.writeFileSync(path.join(v.mnt, 'flip'), Buffer.alloc(3 * C, 0x43))
    fs.writeFileSync(path.join(v.mnt, 'swap'), Buffer.concat([Buffer.alloc(2 * C, 1), Buffer.alloc(2 * C, 2)]))
    fs.writeFileSync(path.join(v.mnt, 'victim'), Buffer.concat([a, a.subarray(0, 2 * C)]))
    fs.writeFileSync(path.join(v.mnt, 'donor'), b)
    const flip = backingOf('flip')
    const swap = backingOf('swap')
    const victim = backingOf('victim')
    const donor = backingOf('donor')
    await umount(v)

    const f = fs.readFileSync(flip)
    f[HEADER_BYTES + stride + 100] ^= 0x01
    fs.writeFileSync(flip, f)

    const s = fs.readFileSync(swap)
    const c1 = Buffer.from(s.subarray(HEADER_BYTES + stride, HEADER_BYTES + 2 * stride))
    const c3 = Buffer.from(s.subarray(HEADER_BYTES + 3 * stride, HEADER_BYTES + 4 * stride))
    c3.copy(s, HEADER_BYTES + stride)
    c1.copy(s, HEADER_BYTES + 3 * stride)
    fs.writeFileSync(swap, s)

    const vv = fs.readFileSync(victim)
    fs.readFileSync(donor).subarray(HEADER_BYTES + 2 * stride, HEADER_BYTES + 3 * stride).copy(vv, HEADER_BYTES + 2 * stride)
    fs.writeFileSync(victim, vv)
    mount(v)

    // An all-zero chunk is not a hole in a file that was never extended sparsely.
    fs.writeFileSync(path.join(v.mnt, 'zeroed'), Buffer.alloc(7 * C, 0x5a))
    const zeroed = backingOf('zeroed')
    await umount(v)
    const z = fs.readFileSync(zeroed)
    z.fill(0, HEADER_BYTES + 2 * stride, HEADER_BYTES + 3 * stride)
    fs.writeFileSync(zeroed, z)

    const fg = await mountForeground(v)
    await expectEio('zeroed', 2 * C)
    const first = Buffer.alloc(C)
    await expectEio('flip', C)
    await expectEio('swap', C)
    await expectEio('swap', 3 * C)
    await expectEio('victim', 2 * C)
    // Untouched chunks of the same files still read correctly.
    const fd = fs.openSync(path.join(v.mnt, 'victim'), 'r')
    fs.readSync(fd, first, 0, C, 0)
    fs.closeSync(fd)
    expect(first.equals(Buffer.alloc(C, 0x41))).toBe(true)
    expect(() => fs.readFileSync(path.join(v.mnt, 'flip'))).toThrow(/EIO/)
    await umount(v)
    await sleep(100)
    const log = fg.log()
    expect(log).toMatch(/file [0-9a-f]{32}: chunk 1 failed authentication; returning EIO/)
    expect(log).not.toMatch(/flip|swap|victim|donor/)
  })
})
