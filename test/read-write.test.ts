import { execFileSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Vol, cleanup, makeVolume, mount, plainBeside, rng, sealfs, umount } from './helpers'

// Random writes and truncates at random offsets, done the same way on a plain directory
// and on a sealfs mount; the two must read back identical, also after a remount.
for (const chunkSize of [4096, 32768]) {
  describe(`random I/O against a plain directory (chunk size ${chunkSize})`, () => {
    let v: Vol
    let plain: string
    beforeAll(() => {
      v = makeVolume({ chunkSize })
      plain = plainBeside(v)
      mount(v)
    })
    afterAll(async () => { await cleanup(v) })

    const files = ['a', 'b', 'sub/c']

    function compare (): void {
      for (const f of files) {
        const p = path.join(plain, f)
        const m = path.join(v.mnt, f)
        expect(fs.existsSync(m)).toBe(fs.existsSync(p))
        if (!fs.existsSync(p)) continue
        expect(fs.statSync(m).size, `size of ${f}`).toBe(fs.statSync(p).size)
        expect(fs.readFileSync(m).equals(fs.readFileSync(p)), `contents of ${f}`).toBe(true)
      }
    }

    it('reads back what a plain directory reads back', async () => {
      const seed = Number(process.env.SEALFS_SEED ?? 1234 + chunkSize)
      const r = rng(seed)
      fs.mkdirSync(path.join(plain, 'sub'))
      fs.mkdirSync(path.join(v.mnt, 'sub'))
      const fds: Record<string, [number, number]> = {}
      for (const f of files) fds[f] = [fs.openSync(path.join(plain, f), 'w+'), fs.openSync(path.join(v.mnt, f), 'w+')]
      const maxSize = 6 * chunkSize
      for (let step = 0; step < 400; step++) {
        const f = files[Math.floor(r() * files.length)]
        const [pfd, mfd] = fds[f]
        const op = r()
        if (op < 0.7) {
          const off = Math.floor(r() * maxSize)
          const len = 1 + Math.floor(r() * (r() < 0.3 ? 3 * chunkSize : 300))
          const data = Buffer.alloc(len)
          for (let i = 0; i < len; i++) data[i] = Math.floor(r() * 256)
          expect(fs.writeSync(mfd, data, 0, len, off)).toBe(fs.writeSync(pfd, data, 0, len, off))
        } else if (op < 0.85) {
          const size = Math.floor(r() * maxSize)
          fs.ftruncateSync(pfd, size)
          fs.ftruncateSync(mfd, size)
        } else {
          const off = Math.floor(r() * maxSize)
          const len = Math.floor(r() * 2 * chunkSize)
          const a = Buffer.alloc(len)
          const b = Buffer.alloc(len)
          const na = fs.readSync(pfd, a, 0, len, off)
          const nb = fs.readSync(mfd, b, 0, len, off)
          expect(nb, `read length at step ${step} (seed ${seed})`).toBe(na)
          expect(b.subarray(0, nb).equals(a.subarray(0, na)), `read at step ${step} (seed ${seed})`).toBe(true)
        }
        if (step % 50 === 0) compare()
      }
      for (const [pfd, mfd] of Object.values(fds)) { fs.closeSync(pfd); fs.closeSync(mfd) }
      compare()
      await umount(v)
      mount(v)
      compare()
    })

    it('mounts a cp -a copy and a tar copy of the cipher dir with the same contents', async () => {
      await umount(v)
      for (const how of ['cp', 'tar']) {
        const copy: Vol = { ...v, cipher: path.join(v.base, `copy-${how}`), mnt: path.join(v.base, `mnt-${how}`) }
        fs.mkdirSync(copy.mnt)
        if (how === 'cp') {
          execFileSync('cp', ['-a', v.cipher, copy.cipher])
        } else {
          fs.mkdirSync(copy.cipher)
          execFileSync('sh', ['-c', `tar -C "${v.cipher}" -cf - . | tar -C "${copy.cipher}" -xf -`])
        }
        mount(copy)
        try {
          for (const f of files) expect(fs.readFileSync(path.join(copy.mnt, f)).equals(fs.readFileSync(path.join(plain, f))), `${how}: ${f}`).toBe(true)
        } finally {
          await umount(copy)
        }
      }
      mount(v)
    })

    it('round-trips large sequential files and sizes around chunk boundaries', () => {
      for (const size of [0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3 * chunkSize, 5 * 1024 * 1024 + 3]) {
        const data = Buffer.alloc(size)
        for (let i = 0; i < size; i++) data[i] = (i * 31 + size) & 0xff
        const f = path.join(v.mnt, `seq-${size}`)
        fs.writeFileSync(f, data)
        expect(fs.statSync(f).size).toBe(size)
        expect(fs.readFileSync(f).equals(data)).toBe(true)
      }
    })
  })
}

describe('the nonce bound of a DEK', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume(); mount(v) })
  afterAll(async () => { await cleanup(v) })

  /** A file written, then (unmounted) recorded as if `sealed` chunks had been sealed under its DEK before; mounted again. */
  const worn = async (name: string, sealed: number): Promise<string> => {
    const f = path.join(v.mnt, name)
    fs.writeFileSync(f, 'sealed many times')
    await umount(v)
    execFileSync('python3', ['-c', `import sqlite3; c = sqlite3.connect('${v.cipher}/sealfs.index'); c.execute('update deks set chunk_writes = ${sealed}'); c.commit()`])
    mount(v)
    return f
  }

  it('refuses writes (EIO) once a file has sealed 2^31 chunks, counting the writes of earlier mounts; reads still work', async () => {
    const f = await worn('worn', 2 ** 31 - 2)
    expect(fs.readFileSync(f, 'utf8')).toBe('sealed many times')
    const fd = fs.openSync(f, 'r+')
    try {
      fs.writeSync(fd, 'A', 0)
      fs.fsyncSync(fd)
      fs.writeSync(fd, 'B', 1)
      fs.fsyncSync(fd)
      expect(() => { fs.writeSync(fd, 'C', 2); fs.fsyncSync(fd) }).toThrow(/EIO/)
    } finally {
      fs.closeSync(fd)
    }
    expect(fs.readFileSync(f, 'utf8')).toBe('ABaled many times')
  })

  it('keeps the count when the index is lost: the end tag\'s write epoch bounds it, at the next mount and after fsck --repair', async () => {
    const f = await worn('worn-lost', 2 ** 31 - 3)
    const writeAt0 = (): void => { const fd = fs.openSync(f, 'r+'); try { fs.writeSync(fd, 'X', 0); fs.fsyncSync(fd) } finally { fs.closeSync(fd) } }
    writeAt0()  // 2^31 - 2 chunks: past the end tag's epoch (0), so the tag records the new one first
    for (const after of ['a mount that makes a new index', 'fsck --repair']) {
      await umount(v)
      for (const name of ['sealfs.index', 'sealfs.index-journal']) fs.rmSync(path.join(v.cipher, name), { force: true })
      if (after === 'fsck --repair') expect(sealfs(['fsck', '--passfile', v.passfile, '--repair', v.cipher]).status).toBe(21)
      mount(v)
      expect(fs.readFileSync(f, 'utf8'), after).toBe('Xealed many times')
      expect(writeAt0, after).toThrow(/EIO/)
    }
  })

  it('gives a file whose index row was lost a row at its next write: its writes go on being counted, and its epoch does not grow at every open', async () => {
    const f = path.join(v.mnt, 'rowless')
    fs.writeFileSync(f, 'abc')
    await umount(v)
    for (const name of ['sealfs.index', 'sealfs.index-journal']) fs.rmSync(path.join(v.cipher, name), { force: true })
    mount(v)
    for (let i = 0; i < 3; i++) fs.appendFileSync(f, 'x')  // three opens, one write each
    await umount(v)
    const backing = fs.readdirSync(v.cipher).map(n => path.join(v.cipher, n)).filter(p => fs.statSync(p).size === 100 + 6 + 28 + 20)
    expect(backing).toHaveLength(1)
    const tag = fs.readFileSync(backing[0]).subarray(-20)
    expect(tag.readUInt32BE(0), 'the end tag\'s epoch').toBe(1)  // counted from the end of epoch 0, once
    const rows = execFileSync('python3', ['-c', `import sqlite3; print(sqlite3.connect('${v.cipher}/sealfs.index').execute('select count(*), max(chunk_writes) from deks').fetchone())`]).toString().trim()
    expect(rows).toBe(`(1, ${2 ** 20 + 3})`)
    mount(v)
    expect(fs.readFileSync(f, 'utf8')).toBe('abcxxx')
  })

  it('keeps the count when the file is made sparse before its first write in a mount (the header is rewrapped)', async () => {
    const f = await worn('worn-sparse', 2 ** 31 - 1)
    fs.truncateSync(f, 100_000)  // holes: the sparse flag is set, and the DEK wrapped again, before any write
    expect(() => { const fd = fs.openSync(f, 'r+'); try { fs.writeSync(fd, 'X', 0) } finally { fs.closeSync(fd) } }).toThrow(/EIO/)
  })
})
