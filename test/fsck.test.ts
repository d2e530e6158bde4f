import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { afterEach, describe, expect, it } from 'vitest'
import { HEADER_BYTES } from '../src/volume/file-header'
import { END_TAG_BYTES } from '../src/crypto/end-tag'
import { cleanup, fsckJson, makeVolume, mount, py, sealfs, umount, Vol, walk } from './helpers'

/** The backing file of the one plaintext file whose backing size is `size` (the tests give each a size of its own). */
function backingOfSize (v: Vol, size: number): string {
  const found = walk(v.cipher).filter(f => !path.basename(f).includes('.') && fs.lstatSync(f).isFile() && fs.lstatSync(f).size === size)
  expect(found).toHaveLength(1)
  return found[0]
}

/** Backing size of a plaintext file of n bytes (4 KiB chunks, 28 bytes each of nonce and tag). */
function sealedSize (n: number): number {
  return n === 0 ? 0 : HEADER_BYTES + n + Math.ceil(n / 4096) * 28 + END_TAG_BYTES
}

async function fill (v: Vol): Promise<void> {
  mount(v)
  try {
    py(`
import os
m = ${JSON.stringify(v.mnt)}
os.makedirs(m + '/d/e')
for name, n in [('d/victim', 5000), ('d/gone', 7000), ('d/e/source', 9000), ('keep', 11000), ('d/orphaned', 3000)]:
    with open(m + '/' + name, 'wb') as f: f.write(os.urandom(n))
open(m + '/d/empty', 'w').close()
os.symlink('d/victim', m + '/lnk')
os.link(m + '/keep', m + '/d/e/keep2')
with open(m + '/' + 'L' * 220, 'w') as f: f.write('long name')
with open(m + '/sparse', 'wb') as f:
    f.truncate(1000000)
    f.write(b'x')
print('null')`)
  } finally {
    await umount(v)
  }
}

const fsck = fsckJson

describe('sealfs fsck', () => {
  const vols: Vol[] = []
  const volume = (): Vol => { const v = makeVolume(); vols.push(v); return v }
  afterEach(async () => { for (const v of vols.splice(0)) await cleanup(v) })

  it('names each problem by its plaintext path; --repair mends what it can and deletes no contents', async () => {
    const v = volume()
    await fill(v)
    let r = fsck(v)
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toMatchObject({ problems: [], files: 9 })
    expect(r.stderr).toMatch(/^Checked 3 directories, 9 files \([\d.]+ MB\) and 1 symlinks in [\d.]+ s: no problems\.\n$/)

    // A flipped byte in a chunk, a file deleted behind sealfs's back (its row stays), a
    // header copied onto an empty file, crash leftovers, a stray entry, a lone sidecar.
    const victim = backingOfSize(v, sealedSize(5000))
    py(`
with open(${JSON.stringify(victim)}, 'r+b') as f:
    f.seek(4300)
    b = f.read(1)
    f.seek(4300)
    f.write(bytes([b[0] ^ 1]))
print('null')`)
    fs.rmSync(backingOfSize(v, sealedSize(7000)))
    const source = fs.readFileSync(backingOfSize(v, sealedSize(9000))).subarray(0, HEADER_BYTES)
    const empty = walk(v.cipher).find(f => !path.basename(f).includes('.') && fs.lstatSync(f).isFile() && fs.lstatSync(f).size === 0) as string
    fs.writeFileSync(empty, source)
    const dir = path.dirname(victim)
    fs.writeFileSync(path.join(v.cipher, 'sealfs.tmp.0123abcd'), 'half a create')
    fs.mkdirSync(path.join(dir, 'sealfs.tmp.4567'))
    fs.writeFileSync(path.join(dir, 'sealfs.tmp.4567', 'sealfs.diriv'), Buffer.alloc(16))
    fs.writeFileSync(path.join(v.cipher, 'strayname'), 'someone else\'s file')
    fs.writeFileSync(path.join(dir, 'sealfs.long.abcdefgh.name'), 'a sidecar without its entry')
    fs.writeFileSync(path.join(v.cipher, 'stray+file'), 'not a name sealfs makes: never ours to move')
    fs.renameSync(backingOfSize(v, sealedSize(3000)), path.join(v.cipher, 'sealfs.orphan.00ff'))  // an orphan holds contents

    r = fsck(v)
    expect(r.status).toBe(20)
    // Which of the two files sharing an ID is named first depends on the listing order.
    const found = r.json.problems.map(p => `${p.path}: ${p.what}`).map(l => l.replace(/^\/d\/e\/source: has the same file ID as \/d\/empty/, '/d/empty: has the same file ID as /d/e/source')).sort()
    expect(found).toEqual([
      '(index): 1 row of files that no longer exist',
      '/(stray+file): is not an entry of a sealfs volume; left as it is',
      '/(sealfs.orphan.00ff): is left over from a crash',
      '/(backing name strayname): does not decrypt (a damaged name, or a long name without its sidecar)',
      '/(sealfs.tmp.0123abcd): is left over from a crash',
      '/d/(sealfs.long.abcdefgh.name): is a long name\'s sidecar without its entry',
      '/d/(sealfs.tmp.4567): is left over from a crash',
      '/d/victim: 1 chunk does not authenticate (bytes 4096-4999)'
    ].sort())
    expect(r.json.problems.every(p => !p.repaired)).toBe(true)

    r = fsck(v, ['--repair'])
    expect(r.status).toBe(20)  // the damaged chunk is left (a header copied onto an empty file is no problem: that file has no data)
    const left = (): string[] => r.json.problems.filter(p => !p.repaired).map(p => p.path.replace('/d/e/source', '/d/empty')).sort()
    expect(left()).toEqual(['/(stray+file)', '/d/victim'])
    expect(fs.existsSync(path.join(v.cipher, 'sealfs.tmp.0123abcd'))).toBe(false)
    expect(fs.existsSync(path.join(dir, 'sealfs.long.abcdefgh.name'))).toBe(false)
    const quarantined = fs.readdirSync(path.join(v.cipher, 'sealfs.quarantine')).sort()
    expect(quarantined).toHaveLength(2)  // the orphan's contents are moved, not deleted
    expect(quarantined[0]).toMatch(/^sealfs\.orphan\.00ff\.[0-9a-f]{12}$/)
    expect(fs.readFileSync(path.join(v.cipher, 'sealfs.quarantine', quarantined[1]), 'utf8')).toBe('someone else\'s file')
    expect(fs.existsSync(path.join(v.cipher, 'stray+file'))).toBe(true)
    r = fsck(v)
    expect(left()).toEqual(['/(stray+file)', '/d/victim'])

    // The rest of the volume reads as before.
    mount(v)
    try {
      expect(fs.readFileSync(path.join(v.mnt, 'd/e/source')).length).toBe(9000)
      expect(fs.readFileSync(path.join(v.mnt, 'L'.repeat(220)), 'utf8')).toBe('long name')
      expect(fs.readlinkSync(path.join(v.mnt, 'lnk'))).toBe('d/victim')
      expect(() => fs.readFileSync(path.join(v.mnt, 'd/victim'))).toThrow(/EIO/)
    } finally {
      await umount(v)
    }
  }, 120_000)

  it('names a file or directory whose extended attribute does not decrypt', async () => {
    const v = volume()
    mount(v)
    try {
      fs.mkdirSync(path.join(v.mnt, 'dir'))
      fs.writeFileSync(path.join(v.mnt, 'dir/file'), 'x')
      py(`
import os, sys
os.setxattr(sys.argv[1] + '/dir', 'user.color', b'blue')
os.setxattr(sys.argv[1] + '/dir/file', 'user.color', b'red')
os.setxattr(sys.argv[1] + '/dir/file', 'user.size', b'big')
print('null')`, { args: [v.mnt] })
    } finally {
      await umount(v)
    }
    expect(fsck(v).status).toBe(0)
    const file = walk(v.cipher).find(f => !path.basename(f).includes('.') && fs.lstatSync(f).isFile() && fs.lstatSync(f).size > 0) as string
    const dir = path.dirname(file)
    py(`
import os, sys
for p in sys.argv[1:]:
    name = sorted(n for n in os.listxattr(p) if n.startswith('user.sealfs.'))[0]
    v = bytearray(os.getxattr(p, name)); v[-1] ^= 1
    os.setxattr(p, name, bytes(v))
print('null')`, { args: [file, dir] })
    const r = fsck(v)
    expect(r.status).toBe(20)
    expect(r.json.problems.map(p => `${p.path}: ${p.what.replace(/attribute .*\.\.\./, 'attribute ...')}`).sort()).toEqual([
      '/dir/file: its extended attribute ... does not decrypt',
      '/dir: its extended attribute ... does not decrypt'
    ])
  })

  it('an empty directory that lost its ID (a crash inside rmdir) gets a new one from the mount or from fsck --repair; one with entries is named', async () => {
    const v = volume()
    mount(v)
    try {
      for (const d of ['a', 'b', 'full']) fs.mkdirSync(path.join(v.mnt, d))
      fs.writeFileSync(path.join(v.mnt, 'full', 'f'), 'x')
    } finally {
      await umount(v)
    }
    const dirs = walk(v.cipher).filter(f => path.basename(f) === 'sealfs.diriv' && path.dirname(f) !== v.cipher).map(path.dirname)
    expect(dirs).toHaveLength(3)
    for (const d of dirs) fs.rmSync(path.join(d, 'sealfs.diriv'))
    const r = fsck(v)
    expect(r.status).toBe(20)
    expect(r.json.problems.map(p => `${p.path}: ${p.what}`).sort()).toEqual([
      '(index): 1 row of files that no longer exist (or were not reached: kept until the rest is repaired)',
      '/a: its directory ID (sealfs.diriv) is missing, and it holds no entry (a crash during rmdir?)',
      '/b: its directory ID (sealfs.diriv) is missing, and it holds no entry (a crash during rmdir?)',
      '/full: its directory ID (sealfs.diriv) is missing or damaged: none of its entries can be read'
    ])
    // The mount mends one by itself when it is first listed; fsck --repair the other.
    mount(v)
    try {
      expect(fs.readdirSync(path.join(v.mnt, 'a'))).toEqual([])
      fs.writeFileSync(path.join(v.mnt, 'a', 'new'), 'y')
      expect(() => fs.readdirSync(path.join(v.mnt, 'full'))).toThrow(/EIO/)
    } finally {
      await umount(v)
    }
    expect(fsck(v, ['--repair']).json.problems.filter(p => !p.repaired).map(p => p.path).sort()).toEqual(['(index)', '/full'])
    mount(v)
    try {
      expect(fs.readdirSync(path.join(v.mnt, 'b'))).toEqual([])
      fs.rmdirSync(path.join(v.mnt, 'b'))
      expect(fs.readFileSync(path.join(v.mnt, 'a', 'new'), 'utf8')).toBe('y')
    } finally {
      await umount(v)
    }
  })

  it('a file truncated to zero is cut to nothing at its last close, and its index row goes with its data', async () => {
    const v = volume()
    mount(v)
    try {
      fs.writeFileSync(path.join(v.mnt, 'emptied'), crypto.randomBytes(6000))
      fs.writeFileSync(path.join(v.mnt, 'rewritten'), crypto.randomBytes(6000))
      fs.truncateSync(path.join(v.mnt, 'emptied'), 0)
      fs.writeFileSync(path.join(v.mnt, 'rewritten'), 'new contents')  // O_TRUNC, then a write: a new identity
      expect(fs.readFileSync(path.join(v.mnt, 'rewritten'), 'utf8')).toBe('new contents')
      expect(fs.statSync(path.join(v.mnt, 'emptied')).size).toBe(0)
    } finally {
      await umount(v)
    }
    expect(walk(v.cipher).filter(f => !path.basename(f).includes('.')).map(f => fs.statSync(f).size).sort((a, b) => a - b)).toEqual([0, sealedSize(12)])
    const r = fsck(v)
    expect(r.status, r.stderr).toBe(0)  // no row is left of the data that is gone
  })

  it('--salvage copies every readable byte of each damaged file out, bad chunks as zeros, and names the bytes lost', async () => {
    const v = volume()
    const big = crypto.randomBytes(50000)
    const torn = crypto.randomBytes(9000)
    mount(v)
    try {
      fs.mkdirSync(path.join(v.mnt, 'd'))
      fs.writeFileSync(path.join(v.mnt, 'd/big'), big)
      fs.writeFileSync(path.join(v.mnt, 'torn'), torn)
      fs.writeFileSync(path.join(v.mnt, 'fine'), 'untouched')
    } finally {
      await umount(v)
    }
    const bBig = backingOfSize(v, sealedSize(50000))
    const f = fs.readFileSync(bBig)
    for (const chunk of [2, 3, 7]) f[HEADER_BYTES + chunk * 4124 + 500] ^= 1   // bytes 8192-16383 and 28672-32767
    fs.writeFileSync(bBig, f)
    fs.truncateSync(backingOfSize(v, sealedSize(9000)), HEADER_BYTES + 2 * 4124 + 20)  // the last chunk cut inside its nonce
    const out = path.join(v.base, 'salvage')

    // Never inside the cipher dir, nor around it (the copies are plaintext), and nothing made there.
    expect(sealfs(['fsck', '--passfile', v.passfile, '--salvage', path.join(v.cipher, 'x', 'y'), v.cipher]).status).toBe(2)
    expect(fs.existsSync(path.join(v.cipher, 'x'))).toBe(false)
    expect(sealfs(['fsck', '--passfile', v.passfile, '--salvage', v.base, v.cipher]).status).toBe(2)
    const r = sealfs(['fsck', '--passfile', v.passfile, '--json', '--salvage', out, v.cipher])
    expect(r.status, r.stderr).toBe(20)
    const json = JSON.parse(r.stdout.trim()) as { salvaged: Array<{ path: string, to: string, size: number, lost: Array<[number, number | null]> }> }
    expect(json.salvaged.sort((a, b) => a.path.localeCompare(b.path))).toEqual([
      { path: '/d/big', to: 'd/big', size: 50000, lost: [[8192, 16383], [28672, 32767]] },
      { path: '/torn', to: 'torn', size: 8192, lost: [[8192, null]] }
    ])
    expect(r.stderr).toContain(`/d/big: salvaged to ${out}/d/big (50,000 bytes; lost, as zeros: bytes 8192-16383, 28672-32767)`)
    const expected = Buffer.from(big)
    expected.fill(0, 8192, 16384)
    expected.fill(0, 28672, 32768)
    expect(fs.readFileSync(path.join(out, 'd/big')).equals(expected)).toBe(true)
    expect(fs.readFileSync(path.join(out, 'torn')).equals(torn.subarray(0, 8192))).toBe(true)
    expect(fs.readdirSync(out).sort()).toEqual(['d', 'torn'])  // undamaged files are not copied
    // A second salvage never replaces the first copy.
    expect(sealfs(['fsck', '--passfile', v.passfile, '--salvage', out, v.cipher]).status).toBe(20)
    expect(fs.readdirSync(path.join(out, 'd')).sort()).toEqual(['big', 'big.salvaged-1'])
  })

  it('rebuilds a deleted index from the headers (exit 21), after which the volume is clean; refuses a volume mounted read-write', async () => {
    const v = volume()
    await fill(v)
    fs.rmSync(path.join(v.cipher, 'sealfs.index'))
    let r = fsck(v)
    expect(r.status).toBe(20)
    expect(r.stderr).toMatch(/sealfs\.index is missing: run 'sealfs fsck --repair' to rebuild it from the file headers/)
    r = fsck(v, ['--repair'])
    expect(r.status, r.stderr).toBe(21)
    expect(r.json.problems.filter(p => p.what === 'has no index row')).toHaveLength(7)  // keep and keep2 are one file; empty has none
    expect(r.json.problems.every(p => p.repaired)).toBe(true)
    expect(fsck(v).status).toBe(0)
    const rows = py(`
import sqlite3, json
print(json.dumps(sqlite3.connect(${JSON.stringify(path.join(v.cipher, 'sealfs.index'))}).execute('SELECT count(*) FROM deks').fetchone()[0]))`)
    expect(rows).toBe(7)

    // A directory whose ID is gone hides its files: their rows are kept, not taken for orphans.
    const source = backingOfSize(v, sealedSize(9000))
    const idFile = path.join(path.dirname(source), 'sealfs.diriv')
    const id = fs.readFileSync(idFile)
    fs.rmSync(idFile)
    r = fsck(v, ['--repair'])
    expect(r.status).toBe(20)
    expect(r.json.problems.map(p => `${p.path}: ${p.what}: ${String(p.repaired)}`).sort()).toEqual([
      '(index): 1 row of files that no longer exist (or were not reached: kept until the rest is repaired): false',
      '/d/e: its directory ID (sealfs.diriv) is missing or damaged: none of its entries can be read: false'
    ])
    expect(py(`
import sqlite3, json
print(json.dumps(sqlite3.connect(${JSON.stringify(path.join(v.cipher, 'sealfs.index'))}).execute('SELECT count(*) FROM deks').fetchone()[0]))`)).toBe(7)
    fs.writeFileSync(idFile, id, { mode: 0o400 })
    expect(fsck(v).status).toBe(0)
    mount(v)
    try {
      const busy = sealfs(['fsck', '--passfile', v.passfile, v.cipher])
      expect(busy.status).toBe(11)
    } finally {
      await umount(v)
    }
  }, 120_000)
})
