import { spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, makeVolume, mount, sleep, umount, Vol } from './helpers'

// Whoever can write the cipher dir may plant symlinks and FIFOs in it. The daemon (root
// here) must never write through them or block on them. Every victim file sits in the
// test's own directory, outside the cipher dir.

function victim (v: Vol, name: string): { file: string, unchanged: () => boolean } {
  const file = path.join(v.base, name)
  fs.writeFileSync(file, 'must not change\n', { mode: 0o644 })
  const before = fs.statSync(file)
  return {
    file,
    unchanged: () => {
      const now = fs.statSync(file)
      return fs.readFileSync(file, 'utf8') === 'must not change\n' && now.mode === before.mode && now.size === before.size
    }
  }
}

const LONG = 'l'.repeat(200)  // encrypts to more than 255 bytes: a hashed entry plus a .name sidecar

function sidecars (v: Vol): string[] {
  return fs.readdirSync(v.cipher).filter(n => n.startsWith('sealfs.long.') && n.endsWith('.name'))
}

describe('a hostile cipher dir', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume(); mount(v) })
  afterAll(async () => { await cleanup(v) })

  it('a long name\'s sidecar replaced by a symlink is replaced, not written through, by a rename onto that name', async () => {
    const target = victim(v, 'victim-sidecar')
    fs.writeFileSync(path.join(v.mnt, LONG), 'first')
    const [sidecar] = sidecars(v)
    fs.unlinkSync(path.join(v.cipher, sidecar))
    fs.symlinkSync(target.file, path.join(v.cipher, sidecar))
    fs.writeFileSync(path.join(v.mnt, 'other'), 'second')
    fs.renameSync(path.join(v.mnt, 'other'), path.join(v.mnt, LONG))
    expect(target.unchanged()).toBe(true)
    expect(fs.lstatSync(path.join(v.cipher, sidecar)).isFile()).toBe(true)
    expect(fs.readFileSync(path.join(v.mnt, LONG), 'utf8')).toBe('second')
    fs.unlinkSync(path.join(v.mnt, LONG))
  })

  it('a FIFO in place of a sidecar never blocks a listing; the entry is left out and a new name replaces the FIFO', async () => {
    fs.mkdirSync(path.join(v.mnt, 'fifo-dir'))
    fs.writeFileSync(path.join(v.mnt, 'fifo-dir', LONG), 'x')
    fs.writeFileSync(path.join(v.mnt, 'fifo-dir', 'short'), 'y')
    const ino = fs.statSync(path.join(v.mnt, 'fifo-dir')).ino  // the mount shows the backing entry's inode number
    const dir = fs.readdirSync(v.cipher).find(n => fs.lstatSync(path.join(v.cipher, n)).ino === ino)!
    const sidecar = fs.readdirSync(path.join(v.cipher, dir)).find(n => n.endsWith('.name'))!
    fs.unlinkSync(path.join(v.cipher, dir, sidecar))
    expect(spawnSync('mkfifo', [path.join(v.cipher, dir, sidecar)]).status).toBe(0)
    await umount(v)  // no cached names
    mount(v)
    const ls = spawnSync('ls', [path.join(v.mnt, 'fifo-dir')], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' })
    expect(ls.error).toBeUndefined()  // not timed out
    expect(ls.stdout.split('\n').filter(n => n !== '')).toEqual(['short'])
    fs.writeFileSync(path.join(v.mnt, 'fifo-dir', 'short2'), 'z')
    fs.renameSync(path.join(v.mnt, 'fifo-dir', 'short2'), path.join(v.mnt, 'fifo-dir', LONG))
    expect(fs.lstatSync(path.join(v.cipher, dir, sidecar)).isFile()).toBe(true)
    expect(fs.readFileSync(path.join(v.mnt, 'fifo-dir', LONG), 'utf8')).toBe('z')
  })

  it('chmod never reaches the target of a symlink swapped in for the backing file while it runs', async () => {
    const target = victim(v, 'victim-chmod')
    const mntFile = path.join(v.mnt, 'swapped')
    fs.writeFileSync(mntFile, 'data')
    // The mount shows the backing file's inode number.
    const ino = fs.statSync(mntFile).ino
    const backing = fs.readdirSync(v.cipher).filter(n => fs.lstatSync(path.join(v.cipher, n)).ino === ino)
    expect(backing.length).toBe(1)
    const b = path.join(v.cipher, backing[0])
    const link = path.join(v.cipher, 'swap-link')
    fs.symlinkSync(target.file, link)
    // Swaps the backing file and the symlink (renameat2 RENAME_EXCHANGE) as fast as it can
    // until SIGTERM (or 20 s), and leaves them as they were. At normal priority the swapper
    // loses the CPU to the daemon and the race seldom opens; reniced, the old
    // lstat-then-chmod-by-path handed the mode to the victim in every run.
    const racer = spawn('nice', ['-n', '-15', 'python3', '-c', `
import ctypes, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
b, l = sys.argv[1].encode(), sys.argv[2].encode()
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
n = 0
end = time.time() + 20
while not stop and time.time() < end:
    libc.renameat2(-100, b, -100, l, 2); n += 1
if n % 2: libc.renameat2(-100, b, -100, l, 2)
`, b, link], { stdio: 'ignore' })
    const exited = new Promise(resolve => racer.on('exit', resolve))
    let tries = 0
    const outcomes: Record<string, number> = {}
    const started = Date.now()
    // For 3 s, and on until the daemon has seen the swapped-in symlink a few times
    // (EOPNOTSUPP: the race was open) and made 50 changes; 15 s at most.
    const more = (): boolean => Date.now() - started < 3000 || (outcomes.ENOTSUP ?? 0) < 3 || (outcomes.ok ?? 0) < 50
    while (more() && Date.now() - started < 15_000) {
      try { fs.chmodSync(mntFile, tries % 2 === 0 ? 0o4777 : 0o600); outcomes.ok = (outcomes.ok ?? 0) + 1 } catch (e) { const c = (e as NodeJS.ErrnoException).code ?? '?'; outcomes[c] = (outcomes[c] ?? 0) + 1 }
      tries++
      if (tries % 50 === 0) await sleep(0)
    }
    racer.kill('SIGTERM')
    await exited
    // Most chmods stop in the kernel (it follows the symlink it last saw); enough reach the daemon.
    expect(outcomes.ENOTSUP ?? 0, JSON.stringify(outcomes)).toBeGreaterThanOrEqual(3)
    expect(outcomes.ok ?? 0, JSON.stringify(outcomes)).toBeGreaterThanOrEqual(50)
    expect(fs.lstatSync(b).isFile()).toBe(true)
    expect(target.unchanged()).toBe(true)
  })
})
