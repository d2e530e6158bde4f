import { execFileSync, spawn } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { wrapKey } from '../src/crypto/key-wrap'
import { deriveFromPassphrase } from '../src/crypto/passphrase-kdf'
import { randomBytes } from '../src/crypto/secret-key'
import { CONFIG_FILE, KeySlot, VolumeConfig, readConfig, slotAad, slotName } from '../src/volume/config'
import { Credential, unlockSlot } from '../src/volume/key-slot'
import { CLI, FAST_KDF, cleanup, isMounted, makeVolume, rng, sealfs, takeDown, umount, Vol } from './helpers'

const RECOVERY_KEY = /^([2-9A-HJKMNP-TV-Z]{4}-){6}[2-9A-HJKMNP-TV-Z]{4}\n$/

function config (v: Vol): VolumeConfig {
  return JSON.parse(fs.readFileSync(path.join(v.cipher, CONFIG_FILE), 'utf8')) as VolumeConfig
}

function writeConfig (v: Vol, c: VolumeConfig): void {
  fs.writeFileSync(path.join(v.cipher, CONFIG_FILE), JSON.stringify(c, null, 2))
}

function file (v: Vol, name: string, content: string): string {
  const f = path.join(v.base, name)
  fs.writeFileSync(f, content, { mode: 0o600 })
  return f
}

/** Mounts with `creds`, writes and reads back a file, unmounts: the credential opens the volume. */
async function opensWith (v: Vol, creds: string[]): Promise<{ status: number, stderr: string }> {
  const r = sealfs(['mount', ...creds, '--log', path.join(v.base, 'daemon.log'), v.cipher, v.mnt])
  if (r.status !== 0) return r
  try {
    fs.writeFileSync(path.join(v.mnt, 'probe'), 'hello')
    expect(fs.readFileSync(path.join(v.mnt, 'probe'), 'utf8')).toBe('hello')
  } finally {
    await umount(v)
  }
  return r
}

/** Whether the slot set of the volume opens with a credential (in-process, without mounting). */
async function unlocks (v: Vol, credential: Credential, slot?: string): Promise<boolean> {
  try {
    const { masterKey } = await unlockSlot(readConfig(v.cipher), credential, slot)
    masterKey.dispose()
    return true
  } catch {
    return false
  }
}

describe('key slots', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume() })
  afterEach(async () => { await takeDown(v.base) })
  afterAll(async () => { await cleanup(v) })

  it('opens with each named slot: passphrases, a key file, a recovery key; --slot tries only that one', async () => {
    const p2 = file(v, 'p2', 'second passphrase\n')
    const kf = path.join(v.base, 'usb.key')
    expect(sealfs(['key', 'add', '--passfile', v.passfile, '--name', 'laptop', '--new-passfile', p2, ...FAST_KDF, v.cipher]).status).toBe(0)
    const addKey = sealfs(['key', 'add', '--passfile', p2, '--name', 'usb', '--new-keyfile', kf, v.cipher])
    expect(addKey.status, addKey.stderr).toBe(0)
    const st = fs.statSync(kf)
    expect(st.mode & 0o777).toBe(0o400)
    expect(st.size).toBe(32)
    const rec = sealfs(['key', 'add', '--keyfile', kf, '--name', 'rescue', '--recovery', ...FAST_KDF, v.cipher])
    expect(rec.status, rec.stderr).toBe(0)
    expect(rec.stdout).toMatch(RECOVERY_KEY)

    const list = sealfs(['key', 'list', '--json', v.cipher])
    expect(list.status).toBe(0)
    const listed = JSON.parse(list.stdout) as { masterKeyVersion: number, slots: Array<Record<string, unknown>> }
    expect(listed.masterKeyVersion).toBe(1)
    expect(listed.slots.map(s => [s.name, s.kind, s.recovery ?? false])).toEqual([
      ['passphrase', 'passphrase', false], ['laptop', 'passphrase', false], ['usb', 'keyfile', false], ['rescue', 'passphrase', true]])
    for (const s of listed.slots) expect(String(s.created)).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/)
    expect(list.stdout).not.toMatch(/salt|wrapped/i)
    expect(sealfs(['key', 'list', v.cipher]).stdout).toMatch(/rescue\s+recovery key/)

    // Each credential mounts; the recovery key however a person types it.
    expect((await opensWith(v, ['--passfile', v.passfile])).status).toBe(0)
    expect((await opensWith(v, ['--passfile', p2])).status).toBe(0)
    expect((await opensWith(v, ['--keyfile', kf])).status).toBe(0)
    expect((await opensWith(v, ['-o', `keyfile=${kf},slot=usb`])).status).toBe(0)
    const typed = file(v, 'typed', rec.stdout.trim().toLowerCase().replace(/-/g, ' ') + '\n')
    expect((await opensWith(v, ['--passfile', typed])).status).toBe(0)

    // --slot: only that slot is tried; a credential of another kind never opens a slot.
    const wrongSlot = sealfs(['mount', '--passfile', v.passfile, '--slot', 'laptop', v.cipher, v.mnt])
    expect([wrongSlot.status, wrongSlot.stderr]).toEqual([7, 'sealfs: wrong passphrase (or the volume config was modified)\n'])
    const noSlot = sealfs(['mount', '--passfile', v.passfile, '--slot', 'nosuch', v.cipher, v.mnt])
    expect([noSlot.status, noSlot.stderr]).toEqual([12, 'sealfs: the volume has no key slot named \'nosuch\'\n'])
    const kindMismatch = sealfs(['mount', '--keyfile', kf, '--slot', 'laptop', v.cipher, v.mnt])
    expect([kindMismatch.status, kindMismatch.stderr]).toEqual([7, 'sealfs: the volume has no key-file slot named \'laptop\'\n'])
    const keyAsPassphrase = file(v, 'kfpass', fs.readFileSync(kf).toString('latin1'))
    expect([7, 8]).toContain(sealfs(['mount', '--passfile', keyAsPassphrase, v.cipher, v.mnt]).status)  // 8: a newline byte first
    const wrongRecovery = file(v, 'wrongrec', 'ABCD-EFGH-JKMN-PQRS-TVWX-YZ23-4567\n')
    const wr = sealfs(['mount', '--passfile', wrongRecovery, v.cipher, v.mnt])
    expect([wr.status, wr.stderr]).toEqual([7, 'sealfs: wrong recovery key (or the volume config was modified)\n'])
    expect(isMounted(v.mnt)).toBe(false)

    // Names and key files are never taken twice.
    expect(sealfs(['key', 'add', '--keyfile', kf, '--name', 'laptop', '--new-passfile', p2, ...FAST_KDF, v.cipher]).status).toBe(14)
    const again = sealfs(['key', 'add', '--keyfile', kf, '--name', 'usb2', '--new-keyfile', kf, v.cipher])
    expect(again.status).toBe(14)
    expect(again.stderr).toMatch(/exists already/)
    expect(fs.readdirSync(v.cipher).filter(n => n.includes('.tmp-'))).toEqual([])
  })

  it('removes and changes slots: a removed or replaced credential opens nothing, the last slot stays', async () => {
    const w = makeVolume()
    try {
      const p2 = file(w, 'p2', 'second passphrase\n')
      const p3 = file(w, 'p3', 'third passphrase\n')
      const kf = path.join(w.base, 'k')
      expect(sealfs(['key', 'add', '--passfile', w.passfile, '--name', 'second', '--new-passfile', p2, ...FAST_KDF, w.cipher]).status).toBe(0)
      expect(sealfs(['key', 'add', '--passfile', w.passfile, '--name', 'stick', '--new-keyfile', kf, w.cipher]).status).toBe(0)

      const rm = sealfs(['key', 'remove', '--keyfile', kf, w.cipher, 'second'])
      expect(rm.status, rm.stderr).toBe(0)
      expect(await unlocks(w, { kind: 'passphrase', secret: Buffer.from('second passphrase') })).toBe(false)
      expect(sealfs(['key', 'remove', '--keyfile', kf, w.cipher, 'second']).status).toBe(12)

      // passwd without a name changes the slot the credential opened; with one, that slot.
      const before = config(w).slots.find(s => s.name === 'passphrase') as KeySlot
      const pw = sealfs(['key', 'passwd', '--passfile', w.passfile, '--new-passfile', p3, w.cipher])
      expect(pw.status, pw.stderr).toBe(0)
      expect(pw.stderr).toMatch(/key slot 'passphrase'/)
      const after = config(w).slots.find(s => s.name === 'passphrase') as KeySlot
      expect([after.id, after.created]).toEqual([before.id, before.created])
      expect(after.salt).not.toBe(before.salt)
      expect(await unlocks(w, { kind: 'passphrase', secret: Buffer.from('test passphrase') })).toBe(false)
      expect((await opensWith(w, ['--passfile', p3])).status).toBe(0)
      expect(sealfs(['key', 'passwd', '--passfile', p3, '--new-passfile', p2, w.cipher, 'stick']).status).toBe(2)

      // The last slot is never removed.
      expect(sealfs(['key', 'remove', '--passfile', p3, w.cipher, 'stick']).status).toBe(0)
      const last = sealfs(['key', 'remove', '--passfile', p3, w.cipher, 'passphrase'])
      expect([last.status, last.stderr]).toEqual([13, 'sealfs: \'passphrase\' is the volume\'s only key slot; add another before removing it\n'])
      expect(config(w).slots.map(slotName)).toEqual(['passphrase'])
      expect((await opensWith(w, ['--passfile', p3])).status).toBe(0)
    } finally {
      await cleanup(w)
    }
  })

  it('authenticates every field of a slot: an edited field makes that slot fail, and only that one', async () => {
    const w = makeVolume()
    try {
      const p2 = file(w, 'p2', 'second passphrase\n')
      expect(sealfs(['key', 'add', '--passfile', w.passfile, '--name', 'second', '--new-passfile', p2, ...FAST_KDF, w.cipher]).status).toBe(0)
      const good = config(w)
      const second = { kind: 'passphrase', secret: Buffer.from('second passphrase') } as const
      const first = { kind: 'passphrase', secret: Buffer.from('test passphrase') } as const
      const edits: Array<(s: Record<string, unknown>) => void> = [
        s => { s.created = '2020-01-01T00:00:00.000Z' },
        s => { s.name = 'renamed' },
        s => { s.opslimit = 3 },
        s => { s.id = 7 },
        s => { s.salt = '00'.repeat(16) },
        s => { s.memlimit = 128 * 1024 * 1024 }
      ]
      for (const edit of edits) {
        const c = structuredClone(good)
        edit(c.slots[1] as unknown as Record<string, unknown>)
        writeConfig(w, c)
        expect(await unlocks(w, second)).toBe(false)
        expect(await unlocks(w, first)).toBe(true)
      }
      // Fields a slot of its kind does not have make the config invalid (nothing opens), not ignored.
      for (const extra of [{ note: 'added' }, { recovery: false }, { unwrapCmd: 'true' }]) {
        writeConfig(w, { ...good, slots: [good.slots[0], { ...good.slots[1], ...extra } as KeySlot] })
        expect(sealfs(['key', 'list', w.cipher]).status).toBe(6)
      }
      // A key-file slot binds its fields the same way.
      const kf = path.join(w.base, 'k')
      writeConfig(w, good)
      expect(sealfs(['key', 'add', '--passfile', w.passfile, '--name', 'stick', '--new-keyfile', kf, w.cipher]).status).toBe(0)
      const withKey = config(w)
      const key = { kind: 'keyfile', secret: fs.readFileSync(kf) } as const
      expect(await unlocks(w, key)).toBe(true)
      writeConfig(w, { ...withKey, slots: withKey.slots.map(s => s.name === 'stick' ? { ...s, created: '2020-01-01T00:00:00Z' } : s) })
      expect(await unlocks(w, key)).toBe(false)
      // A volume-wide field is bound into every slot.
      const c = structuredClone(good)
      c.masterKeyVersion = 2
      writeConfig(w, c)
      expect(await unlocks(w, first)).toBe(false)
      writeConfig(w, good)
      expect(await unlocks(w, second)).toBe(true)
    } finally {
      await cleanup(w)
    }
  })

  it('still opens a volume whose slot was made before slots had names (known by its id)', async () => {
    const w = makeVolume()
    try {
      const c = config(w)
      const { masterKey } = await unlockSlot(c, { kind: 'passphrase', secret: Buffer.from('test passphrase') })
      const salt = randomBytes(16)
      const legacy = { id: 1, kind: 'passphrase', kdf: 'argon2id', opslimit: 2, memlimit: 64 * 1024 * 1024, salt: salt.toString('hex'), wrappedKey: '' } as KeySlot
      const kek = await deriveFromPassphrase(Buffer.from('test passphrase'), { opslimit: 2, memlimit: 64 * 1024 * 1024, salt })
      legacy.wrappedKey = wrapKey(kek, masterKey, slotAad(c, legacy)).toString('hex')
      kek.dispose()
      masterKey.dispose()
      writeConfig(w, { ...c, slots: [legacy] })
      expect((await opensWith(w, ['--passfile', w.passfile])).status).toBe(0)
      expect(JSON.parse(sealfs(['key', 'list', '--json', w.cipher]).stdout).slots[0]).toMatchObject({ name: '1', id: 1, kind: 'passphrase' })
      const p2 = file(w, 'p2', 'second passphrase\n')
      expect(sealfs(['key', 'add', '--passfile', w.passfile, '--slot', '1', '--name', 'second', '--new-passfile', p2, ...FAST_KDF, w.cipher]).status).toBe(0)
      // passwd makes it a named slot; only the memory given changes, the passes stay.
      const p3 = file(w, 'p3', 'third passphrase\n')
      expect(sealfs(['key', 'passwd', '--passfile', w.passfile, '--new-passfile', p3, '--kdf-memlimit', String(128 * 1024 * 1024), w.cipher, '1']).status).toBe(0)
      expect(config(w).slots[0]).toMatchObject({ id: 1, name: '1', slotVersion: 2, opslimit: 2, memlimit: 128 * 1024 * 1024 })
      expect((await opensWith(w, ['--passfile', p3, '--slot', '1'])).status).toBe(0)
      expect(sealfs(['key', 'remove', '--passfile', p2, w.cipher, '1']).status).toBe(0)
      expect((await opensWith(w, ['--passfile', p2])).status).toBe(0)
    } finally {
      await cleanup(w)
    }
  })

  it('refuses a config whose unlock would cost absurd Argon2id work, before running any', async () => {
    const w = makeVolume()
    try {
      const c = config(w)
      // 20 slots of 16 passes over 1 GiB: each is allowed, together they are 320 GiB-passes,
      // minutes of Argon2id each if it ever started (the test's 60 s limit would catch that).
      const heavy = { ...c.slots[0], opslimit: 16, memlimit: 1024 ** 3 }
      writeConfig(w, { ...c, slots: Array.from({ length: 20 }, (_, i) => ({ ...heavy, id: i + 1, name: `s${i}` })) })
      const r = sealfs(['mount', '--passfile', w.passfile, w.cipher, w.mnt])
      expect(r.status).toBe(10)
      expect(r.stderr).toMatch(/more Argon2id work than an unlock may cost \(320\.0 GiB-passes, at most 256\)/)
      expect(sealfs(['key', 'remove', '--passfile', w.passfile, w.cipher, 's1']).status).toBe(10)
      // Listing needs no KDF: it still works, so the owner can see what is wrong.
      expect(sealfs(['key', 'list', w.cipher]).status).toBe(0)
      writeConfig(w, c)
      // New slots are checked before any KDF runs: out of range, or over the budget together.
      const p2 = file(w, 'p2', 'x\n')
      const low = sealfs(['key', 'add', '--passfile', w.passfile, '--name', 'weak', '--new-passfile', p2, '--kdf-opslimit', '1', w.cipher])
      expect([low.status, low.stderr]).toEqual([10, 'sealfs: Argon2id opslimit 1 is below the floor of 2\n'])
      writeConfig(w, { ...c, slots: [c.slots[0], ...Array.from({ length: 15 }, (_, i) => ({ ...heavy, id: i + 2, name: `h${i}` }))] })
      const over = sealfs(['key', 'add', '--passfile', w.passfile, '--slot', 'passphrase', '--name', 'more', '--new-passfile', p2,
        '--kdf-opslimit', '16', '--kdf-memlimit', String(1024 ** 3), w.cipher])
      expect(over.status).toBe(10)
      expect(over.stderr).toMatch(/more Argon2id work than an unlock may cost \(256\.1 GiB-passes/)
      expect(config(w).slots.length).toBe(16)
      // 33 cheap slots: more than a config may hold.
      writeConfig(w, { ...c, slots: Array.from({ length: 33 }, (_, i) => ({ ...c.slots[0], id: i + 1, name: `s${i}` })) })
      expect(sealfs(['mount', '--passfile', w.passfile, w.cipher, w.mnt]).status).toBe(6)
    } finally {
      await cleanup(w)
    }
  })

  it('refuses a substituted volume that opens with the same passphrase when the volume ID is pinned', async () => {
    const w = makeVolume()
    const other = makeVolume()
    try {
      const id = JSON.parse(sealfs(['info', '--json', w.cipher]).stdout).volumeId as string
      expect((await opensWith(w, ['--passfile', w.passfile, '--volume-id', id.toUpperCase()])).status).toBe(0)
      // Someone who can write the cipher dir puts another volume there, made with the same passphrase.
      fs.renameSync(w.cipher, path.join(w.base, 'original'))
      execFileSync('cp', ['-a', other.cipher, w.cipher])
      const otherId = JSON.parse(sealfs(['info', '--json', w.cipher]).stdout).volumeId as string
      for (const pin of [['--volume-id', id], ['-o', `volume_id=${id}`]]) {
        const r = sealfs(['mount', '--passfile', w.passfile, ...pin, w.cipher, w.mnt])
        expect([r.status, r.stderr]).toEqual([16, `sealfs: ${w.cipher} holds volume ${otherId}, not the pinned volume ${id}\n`])
        expect(isMounted(w.mnt)).toBe(false)
      }
      expect(sealfs(['mount', '--passfile', w.passfile, '--volume-id', 'xyz', w.cipher, w.mnt]).status).toBe(2)
      // Checked before any credential is read: an extpass program never runs for the wrong volume.
      const marker = path.join(w.base, 'asked')
      expect(sealfs(['mount', '--extpass', `touch '${marker}'; echo 'test passphrase'`, '--volume-id', id, w.cipher, w.mnt]).status).toBe(16)
      expect(fs.existsSync(marker)).toBe(false)
      // Unpinned, the substitute mounts: the pin is what tells them apart.
      expect((await opensWith(w, ['--passfile', w.passfile])).status).toBe(0)
    } finally {
      await cleanup(other)
      await cleanup(w)
    }
  })

  it('reads sealfs.conf only as a regular file of bounded size: a planted symlink, FIFO or endless file is refused', async () => {
    const w = makeVolume()
    try {
      const conf = path.join(w.cipher, CONFIG_FILE)
      const real = path.join(w.base, 'real.conf')
      fs.renameSync(conf, real)
      const cases: Array<[() => void, RegExp]> = [
        [() => fs.symlinkSync(real, conf), /it is a symlink/],
        [() => execFileSync('mkfifo', [conf]), /is not a regular file/],
        [() => fs.writeFileSync(conf, Buffer.alloc(4 * 1024 * 1024 + 1, 0x20)), /is too large to be a sealfs config/]
      ]
      for (const [plant, msg] of cases) {
        plant()
        for (const args of [['mount', '--passfile', w.passfile, w.cipher, w.mnt], ['key', 'list', w.cipher], ['info', w.cipher]]) {
          const r = sealfs(args)  // a FIFO would hang here (the helper's 60 s limit) if it were opened blocking
          expect([r.status, r.stderr.split('\n').length], args.join(' ')).toEqual([6, 2])
          expect(r.stderr).toMatch(msg)
        }
        fs.rmSync(conf)
      }
      expect(isMounted(w.mnt)).toBe(false)
    } finally {
      await cleanup(w)
    }
  })

  it('pins the bytes each slot kind authenticates (FORMAT.md section 3)', () => {
    const c = {
      format: 'sealfs', formatVersion: 1, volumeId: '00112233445566778899aabbccddeeff', contentCipher: 'AES-256-GCM', chunkSize: 4096,
      nameCipher: 'HMAC-SHA256-SIV+AES-256-CTR', keyWrap: 'XChaCha20-Poly1305', masterKeyVersion: 3, slots: []
    } as unknown as VolumeConfig
    const volume = 'formatVersion=1\nvolumeId=00112233445566778899aabbccddeeff\ncontentCipher=AES-256-GCM\nchunkSize=4096\n' +
      'nameCipher=HMAC-SHA256-SIV+AES-256-CTR\nkeyWrap=XChaCha20-Poly1305\nmasterKeyVersion=3\n'
    const salt = 'ab'.repeat(16)
    const legacy = { id: 1, kind: 'passphrase', kdf: 'argon2id', opslimit: 2, memlimit: 67108864, salt, wrappedKey: 'ff' } as KeySlot
    expect(slotAad(c, legacy).toString('latin1')).toBe(`sealfs-slot-v1\n${volume}slotId=1\nkind=passphrase\nkdf=argon2id\nopslimit=2\nmemlimit=67108864\nsalt=${salt}\n`)
    const recovery = { id: 4, slotVersion: 2, name: 'rescue', created: '2026-11-30T09:10:11.123Z', kind: 'passphrase', kdf: 'argon2id', opslimit: 3, memlimit: 268435456, salt, recovery: true, wrappedKey: 'ff' } as KeySlot
    expect(slotAad(c, recovery).toString('latin1')).toBe(`sealfs-slot-v2\n${volume}slot.created="2026-11-30T09:10:11.123Z"\nslot.id=4\nslot.kdf="argon2id"\n` +
      `slot.kind="passphrase"\nslot.memlimit=268435456\nslot.name="rescue"\nslot.opslimit=3\nslot.recovery=true\nslot.salt="${salt}"\nslot.slotVersion=2\n`)
    const service = { id: 5, slotVersion: 2, name: 'tang', created: '2026-11-30T09:10:11Z', kind: 'command', kdf: 'blake2b', salt, unwrapCmd: 'clevis decrypt "a\\b"', blob: 'QUJD', wrappedKey: 'ff' } as KeySlot
    expect(slotAad(c, service).toString('latin1')).toBe(`sealfs-slot-v2\n${volume}slot.blob="QUJD"\nslot.created="2026-11-30T09:10:11Z"\nslot.id=5\nslot.kdf="blake2b"\n` +
      `slot.kind="command"\nslot.name="tang"\nslot.salt="${salt}"\nslot.slotVersion=2\nslot.unwrapCmd="clevis decrypt \\"a\\\\b\\""\n`)
  })

  it('keeps a config that opens with every credential after a kill -9 at any point of a key command', async () => {
    const w = makeVolume()
    const random = rng(Number(process.env.SEALFS_KEY_KILL_SEED ?? 1))
    const rounds = Number(process.env.SEALFS_KEY_KILL_ROUNDS ?? 16)
    try {
      const kf = path.join(w.base, 'k')
      expect(sealfs(['key', 'add', '--passfile', w.passfile, '--name', 'stick', '--new-keyfile', kf, w.cipher]).status).toBe(0)
      const key: Credential = { kind: 'keyfile', secret: fs.readFileSync(kf) }
      // Credentials that must keep opening the volume, by slot name.
      const held = new Map<string, Credential>([['passphrase', { kind: 'passphrase', secret: Buffer.from('test passphrase') }], ['stick', key]])
      const killedAt: string[] = []
      for (let round = 0; round < rounds; round++) {
        const names = [...held.keys()].filter(n => n !== 'stick')
        const op = Math.floor(random() * 3)
        const secret = `passphrase ${round}`
        const pf = file(w, `p${round}`, secret + '\n')
        let args: string[]
        let effect: { removed?: string, added?: string, changed?: string }
        if (op === 0 || names.length < 2) {
          args = ['add', '--keyfile', kf, '--name', `s${round}`, '--new-passfile', pf, ...FAST_KDF, w.cipher]
          effect = { added: `s${round}` }
        } else if (op === 1) {
          const victim = names[Math.floor(random() * names.length)]
          args = ['remove', '--keyfile', kf, w.cipher, victim]
          effect = { removed: victim }
        } else {
          const target = names[Math.floor(random() * names.length)]
          args = ['passwd', '--keyfile', kf, '--new-passfile', pf, w.cipher, target]
          effect = { changed: target }
        }
        const child = spawn(process.execPath, [CLI, 'key', ...args], { stdio: 'ignore' })
        // The first round is cut at once and the last is not cut at all, so both ends are
        // always there however fast the machine; the others land anywhere in between.
        const delay = round === 0 ? 30 : round === rounds - 1 ? 600_000 : 30 + Math.floor(random() * 400)
        const timer = setTimeout(() => child.kill('SIGKILL'), delay)
        const code = await new Promise<number | null>(resolve => child.once('exit', c => resolve(c)))
        clearTimeout(timer)
        killedAt.push(`${args[0]}@${delay}ms:${code === null ? 'killed' : code}`)

        const slots = readConfig(w.cipher).slots.map(slotName)
        for (const [name, cred] of held) {
          if (name === effect.removed && !slots.includes(name)) continue
          if (name === effect.changed && !(await unlocks(w, cred, name))) {
            // Replaced: then the new passphrase opens it, and the old one never again.
            expect(await unlocks(w, { kind: 'passphrase', secret: Buffer.from(secret) }, name), `${killedAt.join(' ')}`).toBe(true)
            continue
          }
          expect(await unlocks(w, cred, name), `${name} after ${killedAt.join(' ')}`).toBe(true)
        }
        if (effect.removed !== undefined && !slots.includes(effect.removed)) held.delete(effect.removed)
        if (effect.changed !== undefined && !(await unlocks(w, held.get(effect.changed) as Credential, effect.changed))) {
          held.set(effect.changed, { kind: 'passphrase', secret: Buffer.from(secret) })
        }
        if (effect.added !== undefined && slots.includes(effect.added)) {
          expect(await unlocks(w, { kind: 'passphrase', secret: Buffer.from(secret) }, effect.added)).toBe(true)
          held.set(effect.added, { kind: 'passphrase', secret: Buffer.from(secret) })
        }
      }
      // Some rounds were cut short and some finished: both ends of the window were hit.
      expect(killedAt.some(k => k.endsWith('killed'))).toBe(true)
      expect(killedAt.some(k => k.endsWith(':0'))).toBe(true)
      expect(sealfs(['key', 'list', w.cipher]).status).toBe(0)
    } finally {
      await cleanup(w)
    }
  }, 120_000)
})
