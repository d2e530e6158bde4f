import { spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterEach, describe, expect, it } from 'vitest'
import { CONFIG_FILE, readConfig } from '../src/volume/config'
import { decodeHeader, HEADER_BYTES } from '../src/volume/file-header'
import { unlockSlot } from '../src/volume/key-slot'
import { CLI, FAST_KDF, cleanup, makeVolume, mount, py, rng, sealfs, sleep, umount, Vol, walk } from './helpers'

function file (v: Vol, name: string, content: string | Buffer, mode = 0o600): string {
  const f = path.join(v.base, name)
  fs.writeFileSync(f, content, { mode })
  return f
}

/**
 * What a user sees of a tree: every entry's type, mode, size, mtime, contents, symlink target
 * and user xattrs, and which names share an inode (hard links).
 */
function snapshot (root: string): unknown {
  return py(`
import os, json, hashlib
root = ${JSON.stringify(root)}
out = {}
inodes = {}
for d, dirs, files in os.walk(root):
    for n in sorted(dirs + files):
        p = os.path.join(d, n)
        st = os.lstat(p)
        e = {'mode': oct(st.st_mode), 'size': st.st_size, 'mtime': st.st_mtime_ns}
        if os.path.islink(p):
            e['target'] = os.readlink(p)
        elif os.path.isfile(p):
            e['sha'] = hashlib.sha256(open(p, 'rb').read()).hexdigest()
            e['xattrs'] = {k: os.getxattr(p, k).hex() for k in sorted(os.listxattr(p)) if k.startswith('user.')}
            e['link'] = inodes.setdefault(st.st_ino, os.path.relpath(p, root))
        out[os.path.relpath(p, root)] = e
print(json.dumps(out, sort_keys=True))`)
}

/** Times and modes of the backing files (what a rotation must leave as they were). */
function backingTimes (cipher: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const f of walk(cipher)) {
    if (path.basename(f).includes('.') && !/sealfs\.(long|orphan)\.[^.]+$/.test(f)) continue
    const st = fs.lstatSync(f, { bigint: true })
    out[path.relative(cipher, f)] = `${st.mode.toString(8)} ${st.mtimeNs} ${st.atimeNs}`
  }
  return out
}

/** Master-key versions of every backing file's header (none for an empty file). */
function headerVersions (cipher: string): Map<number, number> {
  const versions = new Map<number, number>()
  for (const f of walk(cipher)) {
    if (path.basename(f).includes('.') && !/sealfs\.(long|orphan)\.[^.]+$/.test(f)) continue
    if (!fs.lstatSync(f).isFile() || fs.statSync(f).size === 0) continue
    const fd = fs.openSync(f, fs.constants.O_RDONLY | fs.constants.O_NOATIME)  // the test's reads must not move atimes
    const b = Buffer.alloc(HEADER_BYTES)
    fs.readSync(fd, b, 0, HEADER_BYTES, 0)
    fs.closeSync(fd)
    const h = decodeHeader(b)
    const v = h === null ? -1 : h.keyVersion
    versions.set(v, (versions.get(v) ?? 0) + 1)
  }
  return versions
}

/** A tree of every kind of entry, through the mount: contents, a read-only file, an empty one, links, xattrs, a long name. */
function populate (mnt: string, files: number): void {
  py(`
import os
m = ${JSON.stringify(mnt)}
os.makedirs(m + '/d/e')
for i in range(${files}):
    with open(m + '/d/f%d' % i, 'w') as f: f.write('file %d ' % i * (1 + i % 7))
with open(m + '/big', 'wb') as f: f.write(bytes(range(256)) * 1000)
with open(m + '/ro', 'w') as f: f.write('read only')
os.chmod(m + '/ro', 0o444)
open(m + '/empty', 'w').close()
os.symlink('d/f1', m + '/lnk')
os.link(m + '/big', m + '/d/e/hard')
os.setxattr(m + '/d/f0', 'user.note', b'kept')
with open(m + '/' + 'L' * 200, 'w') as f: f.write('long name')
os.utime(m + '/d/f2', (1000000000, 1000000000))
with open(m + '/sparse', 'wb') as f:
    f.write(b'head')
    f.truncate(20000000)
    f.seek(10000000)
    f.write(b'middle')
print('null')`)
}

/** What users see of the volume, through a mount of its own. */
async function mountedSnapshot (v: Vol): Promise<unknown> {
  mount(v)
  try {
    return snapshot(v.mnt)
  } finally {
    await umount(v)
  }
}

/** Fills the volume (populate, then `more`) through a mount, and returns what users see of it. */
async function populated (v: Vol, files: number, more: (mnt: string) => void = () => undefined): Promise<unknown> {
  mount(v)
  try {
    populate(v.mnt, files)
    more(v.mnt)
  } finally {
    await umount(v)
  }
  return await mountedSnapshot(v)
}

describe('master-key rotation', () => {
  const vols: Vol[] = []
  const volume = (): Vol => { const v = makeVolume(); vols.push(v); return v }
  afterEach(async () => {
    for (const v of vols.splice(0)) await cleanup(v)
  })

  it('rewraps every file and the slots it is given, keeps what users see, and leaves a removed slot with an old config nothing to open', async () => {
    const v = volume()
    const seen = await populated(v, 20)
    const p2 = file(v, 'p2', 'second passphrase\n')
    const kf = path.join(v.base, 'stick.key')
    expect(sealfs(['key', 'add', '--passfile', v.passfile, '--name', 'two', '--new-passfile', p2, ...FAST_KDF, v.cipher]).status).toBe(0)
    expect(sealfs(['key', 'add', '--passfile', v.passfile, '--name', 'stick', '--new-keyfile', kf, v.cipher]).status).toBe(0)
    const oldConfig = fs.readFileSync(path.join(v.cipher, CONFIG_FILE))
    const times = backingTimes(v.cipher)

    // Slots it was given no credential for: refused, nothing changed.
    let r = sealfs(['key', 'rotate', '--passfile', v.passfile, v.cipher])
    expect(r.status).toBe(19)
    expect(r.stderr).toMatch(/^sealfs: no credential was given for key slots 'two', 'stick': give them with --also-passfile or --also-keyfile, or remove them with --drop-unopened\n$/)
    expect(fs.readFileSync(path.join(v.cipher, CONFIG_FILE)).equals(oldConfig)).toBe(true)

    // Mounted: refused.
    mount(v)
    try {
      r = sealfs(['key', 'rotate', '--passfile', v.passfile, '--drop-unopened', v.cipher])
      expect(r.status).toBe(11)
      expect(r.stderr).toMatch(/is already mounted.*unmount it before rotating its master key/)
    } finally {
      await umount(v)
    }

    // 'two' is removed, then the rotation keeps the key file's slot.
    expect(sealfs(['key', 'remove', '--passfile', v.passfile, v.cipher, 'two']).status).toBe(0)
    r = sealfs(['key', 'rotate', '--passfile', v.passfile, '--also-keyfile', kf, '--json', v.cipher])
    expect(r.status, r.stderr).toBe(0)
    const result = JSON.parse(r.stdout.trim().split('\n').pop() as string) as Record<string, unknown>
    expect(result).toMatchObject({ masterKeyVersion: 2, resumed: false, dropped: [], files: 26, rewrapped: 24, damaged: [], unwritable: [] })
    expect(r.stderr).toMatch(/^Rotated to master key version 2: 24 of 26 files rewrapped in [\d.]+ s; key version 1 is gone\.\n$/)
    const config = readConfig(v.cipher)
    expect(config).toMatchObject({ formatVersion: 2, masterKeyVersion: 2 })
    expect(config.rotation).toBeUndefined()
    expect(fs.existsSync(path.join(v.cipher, 'sealfs.rotation-journal'))).toBe(false)
    expect([...headerVersions(v.cipher)]).toEqual([[2, 25]])
    expect(backingTimes(v.cipher)).toEqual(times)
    expect(JSON.parse(sealfs(['key', 'list', '--json', v.cipher]).stdout)).toMatchObject({ masterKeyVersion: 2, unfinishedRotationFrom: null, slots: [{ name: 'passphrase' }, { name: 'stick' }] })

    // Both kept credentials open it; everything reads as before; a file is written after.
    for (const cred of [['--passfile', v.passfile], ['--keyfile', kf]]) {
      expect(sealfs(['mount', ...cred, v.cipher, v.mnt]).status).toBe(0)
      try {
        expect(snapshot(v.mnt)).toEqual(seen)
      } finally {
        await umount(v)
      }
    }
    mount(v)
    try {
      fs.writeFileSync(path.join(v.mnt, 'after'), 'written after the rotation')
      fs.appendFileSync(path.join(v.mnt, 'd', 'f3'), ' and more')
    } finally {
      await umount(v)
    }

    // The removed slot's passphrase no longer opens the volume...
    expect(sealfs(['mount', '--passfile', p2, v.cipher, v.mnt]).status).toBe(7)
    // ...and with the config from before the rotation, it opens the volume (that config's
    // master key) but no file: every header and index row is wrapped under the new key.
    const stolen = path.join(v.base, 'stolen')
    fs.cpSync(v.cipher, stolen, { recursive: true, preserveTimestamps: true })
    fs.writeFileSync(path.join(stolen, CONFIG_FILE), oldConfig)
    expect(sealfs(['mount', '--passfile', p2, stolen, v.mnt]).status).toBe(0)
    try {
      const names = fs.readdirSync(v.mnt).sort()
      expect(names).toContain('after')  // names are not re-keyed (docs/SECURITY.md)
      for (const f of walk(v.mnt).filter(f => fs.lstatSync(f).isFile() && fs.statSync(f).size > 0)) {
        expect(() => fs.readFileSync(f), f).toThrow(/EIO/)
      }
    } finally {
      await umount({ ...v, cipher: stolen })
    }
  }, 120_000)

  it.each([['key rotate', []], ['key rotate --reencrypt', ['--reencrypt']]])('%s resumes after kill -9 at any point: the volume is refused until the rotation is finished, then every file reads back with its times', async (_name, extra) => {
    const v = volume()
    const files = Number(process.env.SEALFS_ROTATE_FILES ?? 2000)
    const rounds = Number(process.env.SEALFS_ROTATE_ROUNDS ?? 10)
    const random = rng(Number(process.env.SEALFS_ROTATE_SEED ?? 1))
    const seen = await populated(v, files)
    const times = backingTimes(v.cipher)
    const outcomes: string[] = []
    let refusedMount = false
    // One whole rotation first, with its journal repair: killed with a batch of headers
    // written and no time put back (fault injection), then run again. Its length then
    // spreads the kills over a rotation's whole run.
    // A re-encryption is also killed once with a file's new header copied over its old chunks.
    for (const fault of extra.length > 0 ? ['kill-mid-copy', 'kill-after-header-writes'] : ['kill-after-header-writes']) {
      const faulty = spawnSync(process.execPath, [CLI, 'key', 'rotate', '--passfile', v.passfile, ...extra, v.cipher], { env: { ...process.env, SEALFS_FAULT: fault } })
      expect(faulty.signal).toBe('SIGKILL')
    }
    expect(backingTimes(v.cipher)).not.toEqual(times)  // what the journal is for
    const t0 = Date.now()
    expect(sealfs(['key', 'rotate', '--passfile', v.passfile, ...extra, v.cipher]).status).toBe(0)
    const whole = Date.now() - t0
    expect(backingTimes(v.cipher)).toEqual(times)
    for (let round = 0; round < rounds; round++) {
      const child = spawn(process.execPath, [CLI, 'key', 'rotate', '--passfile', v.passfile, ...extra, v.cipher], { stdio: 'ignore' })
      // The last round is not cut, so the rotation always ends.
      const delay = round === rounds - 1 ? 600_000 : Math.floor(random() * whole * 1.1)
      const timer = setTimeout(() => child.kill('SIGKILL'), delay)
      const code = await new Promise<number | null>(resolve => child.once('exit', c => resolve(c)))
      clearTimeout(timer)
      const config = readConfig(v.cipher)
      outcomes.push(`${delay}ms:${code === null ? 'killed' : code}:v${config.masterKeyVersion}${config.rotation !== undefined ? '+' : ''}`)
      expect(code === null || code === 0, outcomes.join(' ')).toBe(true)
      // The passphrase opens the config at every point.
      const { masterKey } = await unlockSlot(config, { kind: 'passphrase', secret: Buffer.from('test passphrase') })
      masterKey.dispose()
      if (config.rotation !== undefined && !refusedMount) {
        const r = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
        expect(r.status).toBe(18)
        expect(r.stderr).toMatch(/key rotation of .* was interrupted; run 'sealfs key rotate .*' to finish it before mounting\n$/)
        expect(sealfs(['info', v.cipher]).stdout).toMatch(/key rotation: +unfinished \(from version \d+\)/)
        refusedMount = true
      }
    }
    expect(fs.readdirSync(v.cipher).filter(n => n.startsWith('sealfs.tmp'))).toEqual([])  // no staging copy left
    process.stdout.write(`${_name} of ${files} files (${whole} ms whole), then killed at: ${outcomes.join(' ')}\n`)
    expect(outcomes.some(o => o.includes('killed') && o.endsWith('+')), outcomes.join(' ')).toBe(true)
    expect(outcomes[outcomes.length - 1]).toMatch(/:0:v\d+$/)
    const version = readConfig(v.cipher).masterKeyVersion
    expect(version, outcomes.join(' ')).toBeGreaterThan(1)
    // Nothing needs a key that is gone: every header and index row is under the current key.
    expect([...headerVersions(v.cipher)], outcomes.join(' ')).toEqual([[version, files + 5]])
    const rows = py(`
import sqlite3, json
db = sqlite3.connect(${JSON.stringify(path.join(v.cipher, 'sealfs.index'))})
print(json.dumps(db.execute('SELECT key_version, count(*) FROM deks GROUP BY key_version').fetchall()))`)
    expect(rows).toEqual([[version, files + 4]])
    expect(backingTimes(v.cipher), outcomes.join(' ')).toEqual(times)
    expect(await mountedSnapshot(v)).toEqual(seen)
  }, 300_000)

  it('tells a mount and a second rotation that a rotation is running (exit 18); an ephemeral volume has nothing to rotate', async () => {
    const v = volume()
    mount(v)
    try {
      populate(v.mnt, 4000)
    } finally {
      await umount(v)
    }
    let caught = false
    for (let attempt = 0; attempt < 5 && !caught; attempt++) {
      const child = spawn(process.execPath, [CLI, 'key', 'rotate', '--passfile', v.passfile, v.cipher], { stdio: 'ignore' })
      // Stopped as soon as the new config is in place, while it rewraps the files.
      const conf = path.join(v.cipher, CONFIG_FILE)
      const before = fs.readFileSync(conf, 'utf8')
      for (let i = 0; i < 2000 && fs.readFileSync(conf, 'utf8') === before && child.exitCode === null; i++) await sleep(2)
      child.kill('SIGSTOP')
      try {
        if (readConfig(v.cipher).rotation !== undefined) {
          caught = true
          let r = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
          expect(r.status).toBe(18)
          expect(r.stderr).toMatch(new RegExp(`key rotation of .* is running \\(pid ${child.pid}\\); wait for it to end`))
          r = sealfs(['key', 'rotate', '--passfile', v.passfile, v.cipher])
          expect(r.status).toBe(18)
          r = sealfs(['mount', '-o', 'ro', '--passfile', v.passfile, v.cipher, v.mnt])
          expect(r.status).toBe(18)
        }
      } finally {
        child.kill('SIGCONT')
      }
      expect(await new Promise<number | null>(resolve => child.once('exit', c => resolve(c)))).toBe(0)
    }
    expect(caught).toBe(true)

    const e = volume()
    fs.rmSync(e.cipher, { recursive: true })
    fs.mkdirSync(e.cipher)
    expect(sealfs(['mount', '--ephemeral', e.cipher, e.mnt]).status).toBe(0)
    await umount(e)
    const r = sealfs(['key', 'rotate', '--passfile', e.passfile, e.cipher])
    expect(r.status).toBe(17)
  }, 120_000)

  it('after key rotate an old header still opens the file as it is now; after --reencrypt it opens nothing (new data keys, contents rewritten, holes kept)', async () => {
    const v = volume()
    const seen = await populated(v, 10)
    const before = path.join(v.base, 'before')  // a backup of the cipher dir, with its sealfs.conf
    fs.cpSync(v.cipher, before, { recursive: true, preserveTimestamps: true })
    const blocks = (f: string): number => fs.lstatSync(f).blocks
    const sparseBacking = walk(v.cipher).find(f => fs.lstatSync(f).size > 10_000_000) as string
    const sparseBlocks = blocks(sparseBacking)

    /** The backup's config and headers over the current chunks: what the old master key opens of the volume now. */
    const spliced = async (): Promise<{ readable: number, unreadable: number }> => {
      const franken = path.join(v.base, `franken-${Date.now()}`)
      fs.cpSync(v.cipher, franken, { recursive: true })
      fs.copyFileSync(path.join(before, CONFIG_FILE), path.join(franken, CONFIG_FILE))
      fs.copyFileSync(path.join(before, 'sealfs.index'), path.join(franken, 'sealfs.index'))
      for (const f of walk(franken).filter(f => !path.basename(f).includes('.') && fs.lstatSync(f).isFile() && fs.lstatSync(f).size > 0)) {
        const old = fs.readFileSync(path.join(before, path.relative(franken, f))).subarray(0, HEADER_BYTES)
        const fd = fs.openSync(f, 'r+')
        fs.writeSync(fd, old, 0, HEADER_BYTES, 0)
        fs.closeSync(fd)
      }
      let readable = 0
      let unreadable = 0
      expect(sealfs(['mount', '--passfile', v.passfile, franken, v.mnt]).status).toBe(0)
      try {
        for (const f of walk(v.mnt).filter(f => fs.lstatSync(f).isFile() && fs.statSync(f).size > 0)) {
          try { fs.readFileSync(f); readable++ } catch { unreadable++ }
        }
      } finally {
        await umount({ ...v, cipher: franken })
      }
      return { readable, unreadable }
    }

    expect(sealfs(['key', 'rotate', '--passfile', v.passfile, v.cipher]).status).toBe(0)
    expect(await spliced()).toEqual({ readable: 15, unreadable: 0 })  // the DEKs are the same (docs/SECURITY.md)
    // One file with a flipped byte in a chunk: re-encryption leaves it (and says so), the rest goes on.
    const hurt = walk(v.cipher).filter(f => !path.basename(f).includes('.') && fs.lstatSync(f).isFile() && fs.lstatSync(f).size >= 160 && fs.lstatSync(f).size < 100_000)[0]
    /** Flips the byte at 150, keeping the backing file's times (they are the file's). */
    const flip = (): unknown => py(`
import os
p = ${JSON.stringify(hurt)}
st = os.lstat(p)
with open(p, 'r+b') as f:
    f.seek(150)
    b = f.read(1)[0]
    f.seek(150)
    f.write(bytes([b ^ 1]))
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
print('null')`)
    flip()
    const r = sealfs(['key', 'rotate', '--passfile', v.passfile, '--reencrypt', '--json', v.cipher])
    expect(r.status, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout.trim().split('\n').pop() as string)).toMatchObject({ masterKeyVersion: 3, reencrypted: true, rewrapped: 13, damaged: [path.relative(v.cipher, hurt)], unwritable: [] })
    expect(r.stderr).toContain(`warning: ${path.relative(v.cipher, hurt)}: damaged`)
    expect(await spliced()).toEqual({ readable: 0, unreadable: 15 })
    // Mended (the byte flipped back, its times kept): it opens through its rewrapped index row.
    flip()
    expect(blocks(sparseBacking)).toBeLessThan(sparseBlocks + 64)  // its holes are still holes
    expect(await mountedSnapshot(v)).toEqual(seen)
  }, 120_000)

  it('rebuilds a lost index from the headers, and ignores a planted journal', async () => {
    const v = volume()
    const seen = await populated(v, 10)
    fs.rmSync(path.join(v.cipher, 'sealfs.index'))
    // A journal someone planted, naming a file with a set-ID mode and old times: never applied.
    const victim = walk(v.cipher).find(f => fs.lstatSync(f).isFile() && fs.lstatSync(f).size > 0 && !path.basename(f).includes('.')) as string
    const header = fs.readFileSync(victim).subarray(0, HEADER_BYTES)
    const body = JSON.stringify({ files: [{ fileId: header.subarray(8, 24).toString('hex'), path: path.relative(v.cipher, victim), atime: [1, 0], mtime: [1, 0], mode: 0o6777 }] })
    fs.writeFileSync(path.join(v.cipher, 'sealfs.rotation-journal'), `${body}\n${'0'.repeat(64)}\n`)
    const times = backingTimes(v.cipher)
    const r = sealfs(['key', 'rotate', '--passfile', v.passfile, v.cipher])
    expect(r.status, r.stderr).toBe(0)
    expect(backingTimes(v.cipher)).toEqual(times)
    const rows = py(`
import sqlite3, json
db = sqlite3.connect(${JSON.stringify(path.join(v.cipher, 'sealfs.index'))})
print(json.dumps(db.execute('SELECT key_version, count(*) FROM deks GROUP BY key_version').fetchall()))`)
    expect(rows).toEqual([[2, 14]])
    expect(await mountedSnapshot(v)).toEqual(seen)
  }, 120_000)

  it('lets a user rotate a volume of their own with read-only files (as git keeps its objects): modes and times stay', async () => {
    const v = volume()
    const seen = await populated(v, 10, mnt => { for (const f of ['d/f3', 'd/f4']) fs.chmodSync(path.join(mnt, f), 0o400) })
    spawnSync('chown', ['-R', 'nobody', v.cipher, v.passfile])
    fs.chmodSync(v.base, 0o755)
    // One file root keeps to itself: the user's rotation cannot read it, so it does not end.
    const secret = walk(v.cipher).find(f => path.dirname(f) !== v.cipher && fs.lstatSync(f).isFile() && fs.lstatSync(f).nlink === 1 && !path.basename(f).includes('.')) as string
    const was = fs.lstatSync(secret)
    fs.chownSync(secret, 0, 0)
    fs.chmodSync(secret, 0o600)
    const asNobody = (): ReturnType<typeof spawnSync> => spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, CLI, 'key', 'rotate', '--passfile', v.passfile, '--json', v.cipher], { encoding: 'utf8' })
    let r = asNobody()
    expect(r.status, String(r.stderr)).toBe(18)
    expect(String(r.stderr)).toMatch(/^sealfs: key rotation not finished: 1 file or directory this user cannot read \(.+\) may still need the old key; run 'sealfs key rotate' as root \(or their owner\) to finish it\n$/)
    expect(sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt]).status).toBe(18)
    fs.chownSync(secret, was.uid, was.gid)
    fs.chmodSync(secret, was.mode & 0o7777)
    const times = backingTimes(v.cipher)
    r = asNobody()
    expect(r.status, String(r.stderr)).toBe(0)
    expect(JSON.parse(String(r.stdout).trim().split('\n').pop() as string)).toMatchObject({ resumed: true, unwritable: [], damaged: [] })
    expect(backingTimes(v.cipher)).toEqual(times)
    expect([...headerVersions(v.cipher)]).toEqual([[2, 15]])
    expect(fs.lstatSync(path.join(v.cipher, CONFIG_FILE)).uid).toBe(fs.lstatSync(v.cipher).uid)  // still the user's
    expect(await mountedSnapshot(v)).toEqual(seen)
  }, 120_000)
})
