import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { spawnSync } from 'child_process'
import { afterEach, describe, expect, it } from 'vitest'
import { END_TAG_BYTES } from '../src/crypto/end-tag'
import { FLAG_END_TAG, HEADER_BYTES } from '../src/volume/file-header'
import { cleanup, fsckJson, makeVolume, mount, mountForeground, plainBeside, sealfs, umount, Vol, walk } from './helpers'

const C = 4096
const STRIDE = C + 28

/** Backing size of a plaintext file of n bytes, with or without its end tag. */
function backingSize (n: number, tagged = true): number {
  return n === 0 ? 0 : HEADER_BYTES + n + Math.ceil(n / C) * 28 + (tagged ? END_TAG_BYTES : 0)
}

/** The backing file whose size is `size` (each file of a test has a size of its own; one name of a hard-linked one). */
function backingOfSize (v: Vol, size: number): string {
  const found = new Map<number, string>()
  for (const f of walk(v.cipher)) if (!path.basename(f).includes('.') && fs.lstatSync(f).isFile() && fs.lstatSync(f).size === size) found.set(fs.lstatSync(f).ino, f)
  expect([...found.values()], `a backing file of ${size} bytes`).toHaveLength(1)
  return [...found.values()][0]
}

/**
 * The same operations on a mount and on a plain directory: files that end on a chunk boundary
 * and inside a chunk, a log grown by small appends, a sparse file, a write past the end, and
 * files shrunk and grown by truncate. Returns the plaintext sizes by name.
 */
function writeFiles (dir: string, seed: Buffer): Record<string, number> {
  let at = 0
  const bytes = (n: number): Buffer => {
    const out = Buffer.alloc(n)
    for (let i = 0; i < n; i++) out[i] = seed[(at + i * 7) % seed.length] ^ (i & 0xff)
    at += n
    return out
  }
  const p = (name: string): string => path.join(dir, name)
  fs.writeFileSync(p('whole'), bytes(3 * C))
  fs.writeFileSync(p('part'), bytes(3 * C + 500))
  for (let i = 0; i < 150; i++) fs.appendFileSync(p('log'), bytes(97))
  let fd = fs.openSync(p('sparse'), 'w')
  fs.ftruncateSync(fd, 10 * C + 7)
  fs.writeSync(fd, bytes(100), 0, 100, 4 * C + 9)
  fs.closeSync(fd)
  fd = fs.openSync(p('past'), 'w')
  fs.writeSync(fd, bytes(10), 0, 10, 0)
  fs.writeSync(fd, bytes(300), 0, 300, 5 * C + 3)
  fs.closeSync(fd)
  fs.writeFileSync(p('shrunk'), bytes(6 * C + 100))
  fs.truncateSync(p('shrunk'), 4 * C)
  fs.truncateSync(p('shrunk'), 2 * C + 33)
  fs.writeFileSync(p('grown'), bytes(1000))
  fs.truncateSync(p('grown'), 3 * C + 1)
  fs.appendFileSync(p('grown'), bytes(10))
  fs.writeFileSync(p('cut'), bytes(2 * C + 7))
  fs.truncateSync(p('cut'), 0)
  const sizes: Record<string, number> = {}
  for (const name of fs.readdirSync(dir)) sizes[name] = fs.statSync(p(name)).size
  return sizes
}

function expectSame (mnt: string, plain: string): void {
  expect(fs.readdirSync(mnt).sort()).toEqual(fs.readdirSync(plain).sort())
  for (const name of fs.readdirSync(plain)) {
    expect(fs.readFileSync(path.join(mnt, name)).equals(fs.readFileSync(path.join(plain, name))), name).toBe(true)
  }
}

function expectEio (file: string): void {
  expect(() => fs.readFileSync(file), file).toThrow(/EIO/)
}

function headerFlags (file: string): number {
  const fd = fs.openSync(file, 'r')
  try {
    const b = Buffer.alloc(8)
    fs.readSync(fd, b, 0, 8, 0)
    return b.readUInt16BE(6)
  } finally {
    fs.closeSync(fd)
  }
}

describe('the authenticated end of a file', () => {
  const vols: Vol[] = []
  const volume = (): Vol => { const v = makeVolume(); vols.push(v); return v }
  afterEach(async () => { for (const v of vols.splice(0)) await cleanup(v) })

  it('a file cut short (whole chunks dropped, its end tag moved or cut into) reads as EIO, is not made whole by a write, and fsck names it; the rest reads as a plain directory does', async () => {
    const v = volume()
    const plain = plainBeside(v)
    const seed = crypto.randomBytes(4093)
    mount(v)
    let sizes: Record<string, number>
    try {
      sizes = writeFiles(v.mnt, seed)
      expect(writeFiles(plain, seed)).toEqual(sizes)
      expectSame(v.mnt, plain)
    } finally {
      await umount(v)
    }
    // Every file with contents ends in its tag; one truncated to zero is its header alone.
    for (const [name, n] of Object.entries(sizes)) if (n > 0) backingOfSize(v, backingSize(n))
    mount(v)
    try {
      expectSame(v.mnt, plain)
    } finally {
      await umount(v)
    }
    expect(fsckJson(v).status).toBe(0)

    // Cut short, four ways. Each leaves chunks that authenticate one by one.
    const whole = backingOfSize(v, backingSize(3 * C))
    const bytes = fs.readFileSync(whole)
    fs.writeFileSync(whole, Buffer.concat([bytes.subarray(0, HEADER_BYTES + 2 * STRIDE), bytes.subarray(bytes.length - END_TAG_BYTES)]))  // last chunk dropped, tag kept
    const sparse = backingOfSize(v, backingSize(10 * C + 7))
    const s = fs.readFileSync(sparse)
    const kept = HEADER_BYTES + 8 * STRIDE  // two trailing holes dropped, tag kept
    fs.writeFileSync(sparse, Buffer.concat([s.subarray(0, kept), s.subarray(s.length - END_TAG_BYTES)]))
    const part = backingOfSize(v, backingSize(3 * C + 500))
    fs.truncateSync(part, backingSize(3 * C + 500) - 1)  // into the end tag
    const log = backingOfSize(v, backingSize(150 * 97))
    fs.truncateSync(log, HEADER_BYTES + 3 * STRIDE)  // at a chunk boundary: the tag goes too
    const past = backingOfSize(v, backingSize(5 * C + 303))
    fs.truncateSync(past, HEADER_BYTES + 5 * STRIDE + END_TAG_BYTES)  // a size a file could have, ending in 16 bytes that are no tag
    const fg = await mountForeground(v)
    try {
      for (const name of ['whole', 'sparse', 'part', 'log', 'past']) expectEio(path.join(v.mnt, name))
      // An append does not write a new tag over a wrong one (which would make the cut file whole).
      expect(() => fs.appendFileSync(path.join(v.mnt, 'past'), 'more'), 'append to a cut file').toThrow(/EIO/)
      expect(() => fs.truncateSync(path.join(v.mnt, 'past'), 6 * C), 'truncate of a cut file').toThrow(/EIO/)
      expectEio(path.join(v.mnt, 'past'))
      // What precedes the cut still reads.
      const fd = fs.openSync(path.join(v.mnt, 'whole'), 'r')
      const first = Buffer.alloc(C)
      expect(fs.readSync(fd, first, 0, C, 0)).toBe(C)
      fs.closeSync(fd)
      expect(first.equals(fs.readFileSync(path.join(plain, 'whole')).subarray(0, C))).toBe(true)
      for (const name of ['shrunk', 'grown', 'cut']) expect(fs.readFileSync(path.join(v.mnt, name)).equals(fs.readFileSync(path.join(plain, name))), name).toBe(true)
    } finally {
      await umount(v)
    }
    expect(fg.log()).toMatch(/end of file failed authentication; returning EIO/)
    const r = fsckJson(v)
    expect(r.status, r.stderr).toBe(20)
    const named = new Set(r.json.problems.filter(p => /end does not authenticate|end is torn/.test(p.what)).map(p => p.path))
    expect([...named].sort()).toEqual(['/log', '/part', '/past', '/sparse', '/whole'])
  })

  it('a config edited to drop end tags makes every file EIO, not a file whose cut goes unseen', async () => {
    const v = volume()
    mount(v)
    try {
      fs.writeFileSync(path.join(v.mnt, 'f'), Buffer.alloc(2 * C, 7))
    } finally {
      await umount(v)
    }
    const conf = path.join(v.cipher, 'sealfs.conf')
    const c = JSON.parse(fs.readFileSync(conf, 'utf8'))
    expect(c.endTags).toBe(true)
    delete c.endTags
    delete c.writeWindows
    fs.writeFileSync(conf, JSON.stringify(c))
    const f = backingOfSize(v, backingSize(2 * C))
    fs.truncateSync(f, backingSize(C, false))  // as a volume without tags would end after one chunk
    const r = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
    try {
      expect(r.status).toBe(0)
      expect(r.stderr).toMatch(/no end tags/)
      expectEio(path.join(v.mnt, 'f'))
    } finally {
      await umount(v)
    }
  })

  it('a volume made before end tags mounts; fsck --repair --upgrade gives every file its tag, resumably, keeping contents and times', async () => {
    const v = volume()
    const plain = plainBeside(v)
    // A volume as sealfs made it before end tags: its config has no `endTags`.
    const conf = path.join(v.cipher, 'sealfs.conf')
    const c = JSON.parse(fs.readFileSync(conf, 'utf8'))
    delete c.endTags
    delete c.writeWindows
    fs.writeFileSync(conf, JSON.stringify(c))
    const seed = crypto.randomBytes(4093)
    const m = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
    expect(m.status, m.stderr).toBe(0)
    expect(m.stderr).toMatch(/no end tags .*sealfs fsck --repair --upgrade/)
    expect(sealfs(['info', v.cipher]).stdout).toMatch(/end tags: +no \(made before them\)/)
    let sizes: Record<string, number>
    let times: Record<string, number>
    try {
      sizes = writeFiles(v.mnt, seed)
      writeFiles(plain, seed)
      fs.linkSync(path.join(v.mnt, 'part'), path.join(v.mnt, 'part-link'))
      fs.linkSync(path.join(plain, 'part'), path.join(plain, 'part-link'))
      fs.utimesSync(path.join(v.mnt, 'whole'), new Date('2001-02-03T04:05:06Z'), new Date('2001-02-03T04:05:06Z'))
      times = Object.fromEntries(fs.readdirSync(v.mnt).map(n => [n, fs.statSync(path.join(v.mnt, n)).mtimeMs]))
      expectSame(v.mnt, plain)
    } finally {
      await umount(v)
    }
    const withContents = Object.entries(sizes).filter(([, n]) => n > 0)
    for (const [, n] of withContents) expect(headerFlags(backingOfSize(v, backingSize(n, false))) & FLAG_END_TAG).toBe(0)
    const oldLogHeader = fs.readFileSync(backingOfSize(v, backingSize(150 * 97, false))).subarray(0, HEADER_BYTES)

    // Killed part-way: at the main thread's second fdatasync, the one after the second
    // file's tag is written and before its header is.
    const killed = spawnSync('strace', ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=fdatasync', '-e', 'inject=fdatasync:signal=KILL:when=2',
      process.execPath, path.join(__dirname, '..', 'bin', 'sealfs.js'), 'fsck', '--passfile', v.passfile, '--repair', '--upgrade', v.cipher], { encoding: 'utf8' })
    expect(killed.signal, killed.stderr).toBe('SIGKILL')  // strace ends itself with the tracee's signal
    expect(JSON.parse(fs.readFileSync(conf, 'utf8')).endTags).toBe('upgrading')
    expect(sealfs(['info', v.cipher]).stdout).toMatch(/end tags: +upgrade unfinished/)
    const refused = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
    expect(refused.status).toBe(22)
    expect(refused.stderr).toMatch(/sealfs fsck --repair --upgrade/)
    expect(fsckJson(v).status).toBe(22)  // a check alone does not open it either
    // One file has its tag and not yet its header: what the next run must recognize.
    const halfway = withContents.filter(([, n]) => { const f = walk(v.cipher).find(x => !path.basename(x).includes('.') && fs.statSync(x).size === backingSize(n)); return f !== undefined && (headerFlags(f) & FLAG_END_TAG) === 0 })
    expect(halfway).toHaveLength(1)

    const r = fsckJson(v, ['--repair', '--upgrade'])
    // The kill also lost the index row queued for the file finished before it: rewritten now.
    expect(r.status, r.stderr).toBe(21)
    expect(r.json.problems.map(p => `${p.what} ${String(p.repaired)}`)).toEqual(['its index row does not match its header true'])
    expect(r.json.upgrade).toBe('finished')
    expect(r.json.upgraded).toBe(withContents.length - 1)  // the first was done before the kill
    expect(r.stderr).toMatch(/every file's end is now authenticated/)
    expect(JSON.parse(fs.readFileSync(conf, 'utf8')).endTags).toBe(true)
    expect(sealfs(['info', v.cipher]).stdout).toMatch(/end tags: +yes/)
    for (const [, n] of withContents) expect(headerFlags(backingOfSize(v, backingSize(n))) & FLAG_END_TAG).toBe(FLAG_END_TAG)
    expect(fsckJson(v).status).toBe(0)
    expect(fsckJson(v, ['--repair', '--upgrade']).json.upgrade).toBe('not needed')

    const again = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
    expect(again.status, again.stderr).toBe(0)
    expect(again.stderr).not.toMatch(/no end tags/)
    try {
      expectSame(v.mnt, plain)
      for (const [name, t] of Object.entries(times)) expect(fs.statSync(path.join(v.mnt, name)).mtimeMs, name).toBe(t)
      fs.appendFileSync(path.join(v.mnt, 'log'), 'more')  // upgraded files go on being written
      fs.appendFileSync(path.join(plain, 'log'), 'more')
      expectSame(v.mnt, plain)
    } finally {
      await umount(v)
    }
    // And a cut is now seen.
    fs.truncateSync(backingOfSize(v, backingSize(3 * C + 500)), HEADER_BYTES + 2 * STRIDE)
    mount(v)
    try {
      expectEio(path.join(v.mnt, 'part'))
    } finally {
      await umount(v)
    }
    // A header from before the upgrade, put back over a file cut to an older layout's size,
    // with the config set back to 'upgrading': the index row says the header is older.
    const log = backingOfSize(v, backingSize(150 * 97 + 4))
    fs.writeFileSync(log, Buffer.concat([oldLogHeader, fs.readFileSync(log).subarray(HEADER_BYTES, HEADER_BYTES + 2 * STRIDE)]))
    fs.writeFileSync(conf, JSON.stringify({ ...JSON.parse(fs.readFileSync(conf, 'utf8')), endTags: 'upgrading', writeWindows: undefined }))
    const replay = fsckJson(v, ['--repair', '--upgrade'])
    expect(replay.json.problems.filter(p => p.path === '/log').map(p => p.what).join('\n')).toMatch(/header is older than its index row/)
    mount(v)
    try {
      expectEio(path.join(v.mnt, 'log'))
    } finally {
      await umount(v)
    }
  })
})
