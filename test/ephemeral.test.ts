import { execFileSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, isMounted, makeVolume, sealfs, takeDown, umount, Vol, walk } from './helpers'

describe('ephemeral volumes', () => {
  let v: Vol
  let cipher: string
  beforeAll(() => {
    v = makeVolume()
    cipher = path.join(v.base, 'scratch')
    fs.mkdirSync(cipher)
  })
  afterEach(async () => { await takeDown(v.base) })
  afterAll(async () => { await cleanup(v) })

  const log = (): string[] => ['--log', path.join(v.base, 'daemon.log')]

  it('mounts a new key every time, keeps nothing that opens it, and wipes the last one at the next mount', async () => {
    const r = sealfs(['mount', '--ephemeral', ...log(), cipher, v.mnt])
    expect(r.status, r.stderr).toBe(0)
    try {
      fs.mkdirSync(path.join(v.mnt, 'build'))
      fs.writeFileSync(path.join(v.mnt, 'build', 'out.o'), 'scratch data '.repeat(1000))
      expect(fs.readFileSync(path.join(v.mnt, 'build', 'out.o'), 'utf8')).toBe('scratch data '.repeat(1000))
    } finally {
      await umount(v)
    }
    const config = JSON.parse(fs.readFileSync(path.join(cipher, 'sealfs.conf'), 'utf8'))
    expect(config).toMatchObject({ ephemeral: true, slots: [] })
    expect(JSON.stringify(config)).not.toMatch(/wrapped|salt/)
    const backing = walk(cipher).filter(p => !path.basename(p).startsWith('sealfs.'))
    expect(backing.length).toBeGreaterThan(0)  // ciphertext stays until the next ephemeral mount...
    // ...and nothing opens it.
    const again = sealfs(['mount', '--passfile', v.passfile, cipher, v.mnt])
    expect(again.status).toBe(17)
    expect(again.stderr).toMatch(/^sealfs: this is an ephemeral volume: its key existed only in the daemon that made it, and nothing can open it \(if you did not make it with mount --ephemeral, restore sealfs.conf from a backup/)
    const saved = path.join(v.base, 'saved-entry')
    const entry = fs.readdirSync(cipher).find(n => !n.startsWith('sealfs.')) as string
    execFileSync('cp', ['-a', path.join(cipher, entry), saved])
    expect(sealfs(['info', cipher]).stdout).toMatch(/ephemeral:\s+yes/)
    expect(JSON.parse(sealfs(['key', 'list', '--json', cipher]).stdout)).toMatchObject({ ephemeral: true, slots: [] })

    // fstab's spelling: -o ephemeral. The earlier volume is wiped; the mount starts empty.
    const second = sealfs(['mount', '-o', 'ephemeral', ...log(), cipher, v.mnt])
    expect(second.status, second.stderr).toBe(0)
    try {
      expect(fs.readdirSync(v.mnt)).toEqual([])
      for (const p of backing) expect(fs.existsSync(p)).toBe(false)
      // A new key: an entry of the last volume put back in the cipher dir is nothing here.
      execFileSync('cp', ['-a', saved, path.join(cipher, entry)])
      expect(fs.readdirSync(v.mnt)).toEqual([])
      // The mounted one is never wiped by another ephemeral mount.
      const other = path.join(v.base, 'mnt2')
      fs.mkdirSync(other)
      fs.writeFileSync(path.join(v.mnt, 'live'), 'x')
      const liveBacking = walk(cipher)
      expect(sealfs(['mount', '--ephemeral', ...log(), cipher, other]).status).toBe(11)
      expect(fs.readFileSync(path.join(v.mnt, 'live'), 'utf8')).toBe('x')
      expect(walk(cipher)).toEqual(liveBacking)
    } finally {
      await umount(v)
    }
  })

  it('refuses a directory that holds anything else, and takes no credential', () => {
    const before = walk(v.cipher)
    const r = sealfs(['mount', '--ephemeral', ...log(), v.cipher, v.mnt])
    expect([r.status, r.stderr]).toEqual([4, `sealfs: ${v.cipher} holds a volume that is not ephemeral, and an ephemeral mount would wipe it\n`])
    expect(walk(v.cipher)).toEqual(before)
    const stray = path.join(v.base, 'stray')
    fs.mkdirSync(stray)
    fs.writeFileSync(path.join(stray, 'thesis.tex'), 'mine')
    expect(sealfs(['mount', '--ephemeral', ...log(), stray, v.mnt]).status).toBe(4)
    expect(fs.readFileSync(path.join(stray, 'thesis.tex'), 'utf8')).toBe('mine')
    expect(sealfs(['mount', '--ephemeral', '--passfile', v.passfile, cipher, v.mnt]).status).toBe(2)
    expect(isMounted(v.mnt)).toBe(false)

    // A config is public JSON: one planted in somebody's directory does not make it wipeable.
    const config = fs.readFileSync(path.join(cipher, 'sealfs.conf'))
    const data = path.join(v.base, 'data')
    fs.mkdirSync(data)
    fs.writeFileSync(path.join(data, 'notes.txt'), 'mine')
    fs.writeFileSync(path.join(data, 'sealfs.conf'), config, { mode: 0o600 })
    const named = sealfs(['mount', '--ephemeral', ...log(), data, v.mnt])
    expect([named.status, named.stderr]).toEqual([4, 'sealfs: not wiping the earlier ephemeral volume: it holds \'notes.txt\', which is not a volume\'s entry\n'])
    fs.renameSync(path.join(data, 'notes.txt'), path.join(data, 'Makefile'))  // a name an encrypted one could be
    fs.chownSync(path.join(data, 'sealfs.conf'), 65534, 65534)
    const owned = sealfs(['mount', '--ephemeral', ...log(), data, v.mnt])
    expect([owned.status, owned.stderr]).toEqual([4, `sealfs: ${data} holds an ephemeral volume that someone else owns or may write, and an ephemeral mount would wipe it\n`])
    expect(fs.readFileSync(path.join(data, 'Makefile'), 'utf8')).toBe('mine')
    expect(isMounted(v.mnt)).toBe(false)
  })

  it('never wipes into a filesystem mounted inside the cipher dir', async () => {
    expect(sealfs(['mount', '--ephemeral', ...log(), cipher, v.mnt]).status).toBe(0)
    await umount(v)
    const elsewhere = path.join(v.base, 'elsewhere')
    fs.mkdirSync(elsewhere)
    fs.writeFileSync(path.join(elsewhere, 'precious'), 'keep me')
    const inside = path.join(cipher, 'AAAAmnt')
    fs.mkdirSync(inside)
    execFileSync('mount', ['--bind', elsewhere, inside])
    try {
      const r = sealfs(['mount', '--ephemeral', ...log(), cipher, v.mnt])
      expect([r.status, r.stderr]).toEqual([4, 'sealfs: not wiping the earlier ephemeral volume: a filesystem is mounted inside it\n'])
      expect(fs.readFileSync(path.join(elsewhere, 'precious'), 'utf8')).toBe('keep me')
    } finally {
      execFileSync('umount', [inside])
    }
    expect(fs.readFileSync(path.join(elsewhere, 'precious'), 'utf8')).toBe('keep me')
  })

  it('wipes through descriptors: a symlink planted in the earlier volume is removed, never followed', async () => {
    const outside = path.join(v.base, 'outside')
    fs.mkdirSync(outside)
    fs.writeFileSync(path.join(outside, 'keep'), 'not the volume\'s')
    // An earlier ephemeral volume, then planted links: to a directory outside, and one inside a subdirectory.
    expect(sealfs(['mount', '--ephemeral', ...log(), cipher, v.mnt]).status).toBe(0)
    await umount(v)
    fs.symlinkSync(outside, path.join(cipher, 'AAAAlink'))
    fs.mkdirSync(path.join(cipher, 'AAAAdir'))
    fs.symlinkSync(outside, path.join(cipher, 'AAAAdir', 'deeper'))
    fs.symlinkSync(path.join(outside, 'keep'), path.join(cipher, 'AAAAdir', 'file'))
    execFileSync('mkfifo', [path.join(cipher, 'AAAAfifo')])
    const r = sealfs(['mount', '--ephemeral', ...log(), cipher, v.mnt])
    expect(r.status, r.stderr).toBe(0)
    await umount(v)
    expect(fs.readFileSync(path.join(outside, 'keep'), 'utf8')).toBe('not the volume\'s')
    expect(fs.readdirSync(outside)).toEqual(['keep'])
    expect(fs.readdirSync(cipher).filter(n => n.startsWith('AAAA'))).toEqual([])
  })
})
