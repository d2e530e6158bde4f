import crypto from 'crypto'
import { execFileSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { describe, expect, it } from 'vitest'
import { END_TAG_BYTES } from '../src/crypto/end-tag'
import sodium from 'sodium-native'
import { FLAG_WRITE_WINDOW, HEADER_BYTES, decodeHeader } from '../src/volume/file-header'
import { Volume } from '../src/volume/volume'
import { cleanup, fsckJson, makeVolume, mount, sealfs, sleep, umount, Vol, walk } from './helpers'

const C = 4096
const STRIDE = C + 28
const OPEN = /was being written when it was copied, or when the volume stopped/

function backingSize (n: number): number {
  return HEADER_BYTES + n + Math.ceil(n / C) * 28 + END_TAG_BYTES
}

/** The backing file of `size` bytes (each file of a test has a size of its own). */
function backingOfSize (dir: string, size: number): string {
  const found = walk(dir).filter(f => !path.basename(f).includes('.') && fs.lstatSync(f).isFile() && fs.lstatSync(f).size === size)
  expect(found, `a backing file of ${size} bytes`).toHaveLength(1)
  return found[0]
}

function readRange (file: string, start: number, length: number): Buffer {
  const fd = fs.openSync(file, 'r')
  try {
    const b = Buffer.alloc(length)
    expect(fs.readSync(fd, b, 0, length, start)).toBe(length)
    return b
  } finally {
    fs.closeSync(fd)
  }
}

function writeRange (file: string, start: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+')
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, start)
  } finally {
    fs.closeSync(fd)
  }
}

/** Polls (not timed: windows close a moment after a close(2), or a second after the last write) until `changed` holds; whether it did within 10 s. */
async function until (changed: () => boolean): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (changed()) return true
    await sleep(100)
  }
  return changed()
}

/** Writes `files` through the mount of `v`, then mounts it again: every window they opened is closed (the release of a close(2) reaches the daemon later). */
async function writtenAndRemounted (v: Vol, files: Record<string, Buffer>): Promise<void> {
  mount(v)
  for (const [name, data] of Object.entries(files)) fs.writeFileSync(path.join(v.mnt, name), data)
  await umount(v)
  mount(v)
}

/** fsck of a copy of the volume `v` at `dir`. */
function fsckOf (v: Vol, dir: string, extra: string[] = []): ReturnType<typeof fsckJson> {
  return fsckJson({ ...v, cipher: dir }, extra)
}

/** What fsck says of files' contents (a copy taken within a second of a write may lack index rows, which --repair writes from the headers). */
function dataProblems (r: ReturnType<typeof fsckJson>): string[] {
  return r.json.problems.filter(p => !/index row/.test(p.what)).map(p => `${p.path}: ${p.what}`)
}

/**
 * Write windows (docs/FORMAT.md §6.4): a file's end tag is bound to its header's nonce, or to
 * the next one while it is being written, so that a copy of the cipher dir taken while a file
 * was overwritten in place (same size, every chunk authenticating) shows it to fsck.
 */
describe('write windows', () => {
  it('fsck names a file overwritten in place while it was copied, whether or not its window had closed (fsync does not close it, its close does); files closed before the copy are clean; --repair closes the window', async () => {
    const v = makeVolume()
    try {
      const f = crypto.randomBytes(5 * C + 123)
      const g = crypto.randomBytes(3 * C + 7)
      await writtenAndRemounted(v, { f, g })
      const fBacking = backingOfSize(v.cipher, backingSize(f.length))
      expect(fs.readFileSync(fBacking).readUInt16BE(6) & FLAG_WRITE_WINDOW).toBe(FLAG_WRITE_WINDOW)
      const headerBefore = readRange(fBacking, 0, HEADER_BYTES)
      // A copy reads the file from its start: the header and chunk 0 now, the rest after the
      // writes below (as tar, rsync or cp do while a writer goes on).
      const start = readRange(fBacking, 0, HEADER_BYTES + STRIDE)
      const fd = fs.openSync(path.join(v.mnt, 'f'), 'r+')
      const mixed = Buffer.from(f)
      try {
        const a = crypto.randomBytes(100)
        const b = crypto.randomBytes(200)
        fs.writeSync(fd, a, 0, a.length, 10)
        fs.writeSync(fd, b, 0, b.length, 3 * C + 50)
        b.copy(mixed, 3 * C + 50)  // what the copy holds: chunk 0 old, chunk 3 new
        // Copy 1: the window still open (the file is open and was written a moment ago).
        // fsync does not close it.
        fs.fsyncSync(fd)
        execFileSync('cp', ['-a', v.cipher, path.join(v.base, 'open')])
        expect(readRange(fBacking, 0, HEADER_BYTES).equals(headerBefore)).toBe(true)
      } finally {
        fs.closeSync(fd)
      }
      // The close closes the window: the header moves to the next nonce, the file's times stay.
      const mtime = fs.statSync(fBacking).mtimeMs
      expect(await until(() => !readRange(fBacking, 0, HEADER_BYTES).equals(headerBefore))).toBe(true)
      expect(fs.statSync(fBacking).mtimeMs).toBe(mtime)
      // Copy 2: after the window closed; copy 3: the same, but with the start read before.
      execFileSync('cp', ['-a', v.cipher, path.join(v.base, 'closed')])
      execFileSync('cp', ['-a', v.cipher, path.join(v.base, 'torn')])
      for (const copy of ['open', 'torn']) {
        writeRange(backingOfSize(path.join(v.base, copy), backingSize(f.length)), 0, start)
        fs.rmSync(path.join(v.base, copy, 'sealfs.lock'), { force: true })
      }
      fs.rmSync(path.join(v.base, 'closed', 'sealfs.lock'), { force: true })
      await umount(v)

      // Copies whose file f mixes chunks from before and after its writes: named, g not.
      for (const copy of ['open', 'torn']) {
        const r = fsckOf(v, path.join(v.base, copy))
        expect(r.status, `${copy}: ${r.stderr}`).toBe(20)
        expect(dataProblems(r), copy).toEqual([expect.stringMatching(new RegExp(`^/f: ${OPEN.source}`))])
      }
      // The copy taken after the window closed holds the file as written: clean.
      expect(dataProblems(fsckOf(v, path.join(v.base, 'closed')))).toEqual([])

      // A copy with its window open mounts and reads (each chunk old or new, never other
      // bytes); --repair closes the window, and the copy is clean after it.
      const torn = { ...v, cipher: path.join(v.base, 'torn') }
      mount(torn)
      try {
        expect(fs.readFileSync(path.join(v.mnt, 'f')).equals(mixed)).toBe(true)
        expect(fs.readFileSync(path.join(v.mnt, 'g')).equals(g)).toBe(true)
      } finally {
        await umount(torn)
      }
      const repaired = fsckOf(v, torn.cipher, ['--repair'])
      expect(repaired.status, repaired.stderr).toBe(21)
      expect(dataProblems(repaired)).toHaveLength(1)
      expect(repaired.json.problems.every(p => p.repaired)).toBe(true)
      expect(fsckOf(v, torn.cipher).status).toBe(0)
      mount(torn)
      try {
        expect(fs.readFileSync(path.join(v.mnt, 'f')).equals(mixed)).toBe(true)
      } finally {
        await umount(torn)
      }
    } finally {
      await cleanup(v)
    }
  })

  it('fsck names a file appended to while it was copied, and one created then; not one closed before', async () => {
    const v = makeVolume()
    try {
      await writtenAndRemounted(v, { log: crypto.randomBytes(C + 17), quiet: crypto.randomBytes(2 * C + 1) })
      const fd = fs.openSync(path.join(v.mnt, 'log'), 'a')
      const made = fs.openSync(path.join(v.mnt, 'new'), 'w')
      try {
        fs.writeSync(fd, Buffer.from('one more line\n'))
        fs.writeSync(made, crypto.randomBytes(3000))
        execFileSync('cp', ['-a', v.cipher, path.join(v.base, 'copy')])
      } finally {
        fs.closeSync(fd)
        fs.closeSync(made)
      }
      await umount(v)
      fs.rmSync(path.join(v.base, 'copy', 'sealfs.lock'), { force: true })
      const r = fsckOf(v, path.join(v.base, 'copy'))
      expect(dataProblems(r).sort()).toEqual([expect.stringMatching(new RegExp(`^/log: ${OPEN.source}`)), expect.stringMatching(new RegExp(`^/new: ${OPEN.source}`))])
      expect(dataProblems(fsckJson(v))).toEqual([])
    } finally {
      await cleanup(v)
    }
  })

  it('a window closes when the file is closed, and after a second without writes while it stays open; the times stay the writes\'', async () => {
    const v = makeVolume()
    try {
      const f = crypto.randomBytes(2 * C + 5)
      await writtenAndRemounted(v, { f })
      const fBacking = backingOfSize(v.cipher, backingSize(f.length))
      const header = (): Buffer => readRange(fBacking, 0, HEADER_BYTES)
      const fd = fs.openSync(path.join(v.mnt, 'f'), 'r+')
      try {
        const before = header()
        fs.writeSync(fd, Buffer.from('in place'), 0, 8, C + 1)
        const mtime = fs.statSync(fBacking).mtimeMs
        // The idle close comes about a second after the last write.
        expect(await until(() => !header().equals(before))).toBe(true)
        expect(fs.statSync(fBacking).mtimeMs).toBe(mtime)
        execFileSync('cp', ['-a', v.cipher, path.join(v.base, 'idle')])
        // Written again, then closed: the close moves it on once more.
        fs.writeSync(fd, Buffer.from('again'), 0, 5, 7)
        fs.closeSync(fd)
      } catch (e) {
        fs.closeSync(fd)
        throw e
      }
      await umount(v)
      fs.rmSync(path.join(v.base, 'idle', 'sealfs.lock'), { force: true })
      expect(dataProblems(fsckOf(v, path.join(v.base, 'idle')))).toEqual([])
      const r = fsckJson(v)
      expect(r.status, JSON.stringify(r.json.problems)).toBe(0)
    } finally {
      await cleanup(v)
    }
  })

  it('the end tag is the MAC docs/FORMAT.md §6.3 and §6.4 give: bound to the header\'s nonce, or to the next link (counter + 1) while a window is open', async () => {
    const v = makeVolume()
    try {
      const f = crypto.randomBytes(3 * C + 9)
      await writtenAndRemounted(v, { f })
      // A copy taken while a write in place holds the window open, and one after it closed.
      const fd = fs.openSync(path.join(v.mnt, 'f'), 'r+')
      try {
        fs.writeSync(fd, Buffer.from('open'), 0, 4, 2 * C + 1)
        execFileSync('cp', ['-a', v.cipher, path.join(v.base, 'open')])
      } finally {
        fs.closeSync(fd)
      }
      await umount(v)
      const u64 = (n: number): Buffer => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b }
      for (const [dir, open] of [[v.cipher, false], [path.join(v.base, 'open'), true]] as const) {
        fs.rmSync(path.join(dir, 'sealfs.lock'), { force: true })
        const backing = fs.readFileSync(backingOfSize(dir, backingSize(f.length)))
        const volume = await Volume.unlock(dir, { kind: 'passphrase', secret: Buffer.from('test passphrase') }, { readOnly: true })
        try {
          const h = decodeHeader(backing.subarray(0, HEADER_BYTES))
          if (h === null) throw new Error('no header')
          const dek = volume.openDek(h)
          try {
            // Written from the text of docs/FORMAT.md, not from src/crypto.
            const ke = Buffer.alloc(32)
            sodium.crypto_kdf_derive_from_key(ke, 1, Buffer.from('sealfset'), dek.bytes)
            const nonce = backing.subarray(28, 52)
            const flags = Buffer.alloc(2)
            flags.writeUInt16BE(h.flags)
            const next = Buffer.concat([nonce.subarray(0, 14), flags, u64(Number(nonce.readBigUInt64BE(16)) + 1)])
            // A new file's first link holds its flags and counter 0; its first write opened a
            // window its close closed (link 1); the write in place opened another (link 2).
            expect(nonce.readUInt16BE(14)).toBe(h.flags)
            expect(nonce.readBigUInt64BE(16)).toBe(open ? 1n : 2n)
            const tag = backing.subarray(backing.length - END_TAG_BYTES)
            const mac = Buffer.alloc(16)
            sodium.crypto_generichash(mac, Buffer.concat([volume.volumeId, h.fileId, u64(f.length), tag.subarray(0, 4), open ? next : nonce]), ke)
            expect(tag.subarray(4).equals(mac), open ? 'open' : 'closed').toBe(true)
          } finally {
            dek.dispose()
          }
        } finally {
          await volume.close()
        }
      }
    } finally {
      await cleanup(v)
    }
  })

  it('a tag left behind its header, or a header left behind its tag (a power cut between a window\'s tag and its close), reads up to 64 links away; fsck names it and --repair mends it', async () => {
    const v = makeVolume()
    try {
      const f = crypto.randomBytes(2 * C + 3)
      await writtenAndRemounted(v, { f })
      const backing = backingOfSize(v.cipher, backingSize(f.length))
      const tagAt = backingSize(f.length) - END_TAG_BYTES
      /** Windows opened by a write in place and closed by setting the file's times. */
      const windows = (n: number): void => {
        const fd = fs.openSync(path.join(v.mnt, 'f'), 'r+')
        try {
          for (let i = 0; i < n; i++) {
            fs.writeSync(fd, Buffer.from([i]), 0, 1, 5 + i)
            f[5 + i] = i
            fs.futimesSync(fd, new Date(), new Date())
          }
        } finally {
          fs.closeSync(fd)
        }
      }
      for (const [stale, links, reads] of [['tag', 1, true], ['tag', 100, false], ['header', 3, true], ['header', 100, false]] as const) {
        // What reached the disk: the headers and not the tags, or the tags and not the headers.
        const at = stale === 'tag' ? tagAt : 0
        const length = stale === 'tag' ? END_TAG_BYTES : HEADER_BYTES
        const before = readRange(backing, at, length)
        windows(links)
        await umount(v)
        writeRange(backing, at, before)
        mount(v)
        try {
          if (reads) expect(fs.readFileSync(path.join(v.mnt, 'f')).equals(f)).toBe(true)
          else expect(() => fs.readFileSync(path.join(v.mnt, 'f'))).toThrow(/EIO/)
        } finally {
          await umount(v)
        }
        const r = fsckJson(v)
        expect(r.status).toBe(20)
        expect(dataProblems(r)).toEqual([expect.stringMatching(stale === 'tag' ? /^\/f: its end tag is from before its header's last write window/ : /^\/f: its end is from a later write window than its header/)])
        expect(fsckJson(v, ['--repair']).status).toBe(21)
        expect(fsckJson(v).status).toBe(0)
        mount(v)
        expect(fs.readFileSync(path.join(v.mnt, 'f')).equals(f)).toBe(true)
      }
    } finally {
      await cleanup(v)
    }
  })

  it('a volume with end tags made before write windows mounts; fsck --repair --upgrade gives its files windows', async () => {
    const v = makeVolume()
    try {
      const conf = path.join(v.cipher, 'sealfs.conf')
      const c = JSON.parse(fs.readFileSync(conf, 'utf8'))
      expect(c.writeWindows).toBe(true)
      delete c.writeWindows
      fs.writeFileSync(conf, JSON.stringify(c))
      const files = [crypto.randomBytes(3 * C + 11), crypto.randomBytes(C), crypto.randomBytes(77)]
      const m = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
      expect(m.status, m.stderr).toBe(0)
      expect(m.stderr).toMatch(/no write windows.*sealfs fsck --repair --upgrade/)
      try {
        files.forEach((b, i) => fs.writeFileSync(path.join(v.mnt, `f${i}`), b))
      } finally {
        await umount(v)
      }
      for (const b of files) expect(fs.readFileSync(backingOfSize(v.cipher, backingSize(b.length))).readUInt16BE(6) & FLAG_WRITE_WINDOW).toBe(0)
      expect(fsckJson(v).status).toBe(0)
      const r = fsckJson(v, ['--repair', '--upgrade'])
      expect(r.status, r.stderr).toBe(0)
      expect(r.json.upgrade).toBe('finished')
      expect(r.json.upgraded).toBe(files.length)
      expect(JSON.parse(fs.readFileSync(conf, 'utf8')).writeWindows).toBe(true)
      for (const b of files) expect(fs.readFileSync(backingOfSize(v.cipher, backingSize(b.length))).readUInt16BE(6) & FLAG_WRITE_WINDOW).toBe(FLAG_WRITE_WINDOW)
      expect(fsckJson(v).status).toBe(0)
      const again = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
      expect(again.status, again.stderr).toBe(0)
      expect(again.stderr).not.toMatch(/no write windows/)
      try {
        files.forEach((b, i) => expect(fs.readFileSync(path.join(v.mnt, `f${i}`)).equals(b)).toBe(true))
        fs.appendFileSync(path.join(v.mnt, 'f0'), 'more')
      } finally {
        await umount(v)
      }
      expect(fsckJson(v).status).toBe(0)
    } finally {
      await cleanup(v)
    }
  })
})
