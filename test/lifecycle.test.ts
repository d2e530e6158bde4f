import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, isMounted, makeVolume, mount, sealfs, umount, Vol, walk } from './helpers'

function cipherState (dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const f of walk(dir)) {
    const st = fs.lstatSync(f)
    const body = st.isSymbolicLink() ? fs.readlinkSync(f) : fs.readFileSync(f)
    out[path.relative(dir, f)] = `${st.size} ${st.mtimeMs} ${st.mode} ${crypto.createHash('sha256').update(body).digest('hex')}`
  }
  return out
}

describe('one writer, read-only mounts, info', () => {
  let v: Vol
  let other: string
  let third: string
  beforeAll(() => {
    v = makeVolume()
    other = path.join(v.base, 'other')
    third = path.join(v.base, 'third')
    fs.mkdirSync(other)
    fs.mkdirSync(third)
  })
  afterAll(async () => {
    for (const m of [other, third]) if (isMounted(m)) await umount({ ...v, mnt: m })
    await cleanup(v)
  })

  it('refuses a second mount of a volume that is mounted read-write, at any mount point', async () => {
    mount(v)
    fs.writeFileSync(path.join(v.mnt, 'f'), 'data')
    for (const opts of [[], ['-o', 'ro']]) {
      const r = sealfs(['mount', '--passfile', v.passfile, ...opts, v.cipher, other])
      expect(r.status).toBe(11)
      expect(r.stderr).toMatch(/is already mounted \(daemon pid \d+\); a volume has one read-write mount at a time/)
      expect(isMounted(other)).toBe(false)
    }
    await umount(v)
  })

  it('mounts read-only: reads work, writes fail with EROFS, and the cipher dir is not changed at all', async () => {
    const before = cipherState(v.cipher)
    mount(v, ['-o', 'ro'])
    // Two read-only mounts may share a volume.
    expect(sealfs(['mount', '--passfile', v.passfile, '-o', 'ro', v.cipher, other]).status).toBe(0)
    expect(fs.readFileSync(path.join(v.mnt, 'f'), 'utf8')).toBe('data')
    expect(fs.readFileSync(path.join(other, 'f'), 'utf8')).toBe('data')
    expect(fs.readdirSync(v.mnt)).toEqual(['f'])
    expect(() => fs.writeFileSync(path.join(v.mnt, 'g'), 'x')).toThrow(/EROFS/)
    expect(() => fs.appendFileSync(path.join(v.mnt, 'f'), 'x')).toThrow(/EROFS/)
    // A read-write mount must wait for the read-only ones.
    expect(sealfs(['mount', '--passfile', v.passfile, v.cipher, third]).status).toBe(11)
    await umount({ ...v, mnt: other })
    await umount(v)
    expect(cipherState(v.cipher)).toEqual(before)
  })

  it('info shows format, ciphers, KDF parameters, slots and file count without a passphrase', () => {
    const r = sealfs(['info', v.cipher], '')
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/format version:\s+1/)
    expect(r.stdout).toMatch(/AES-256-GCM, 32768-byte chunks/)
    expect(r.stdout).toMatch(/key slot 1:\s+passphrase, argon2id opslimit=2 memlimit=64 MiB/)
    expect(r.stdout).toMatch(/files:\s+1/)
    const j = JSON.parse(sealfs(['info', '--json', v.cipher]).stdout)
    expect(j).toMatchObject({ formatVersion: 1, chunkSize: 32768, files: 1, keySlots: [{ id: 1, kind: 'passphrase', kdf: 'argon2id', opslimit: 2, memlimit: 67108864 }] })
    expect(sealfs(['info', path.join(v.base, 'nope')]).status).toBe(3)
    expect(sealfs(['info', v.mnt]).status).toBe(5)
  })
})
