import { ChildProcess, spawn, spawnSync } from 'child_process'
import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, CLI, isMounted, makeVolume, mount, mountForeground, py, PY_ERR, saidBesidesNoLog, sealfs, sleep, takeDown, umount, Vol, walk } from './helpers'

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
  afterAll(async () => { await cleanup(v) })

  it('refuses a second mount of a volume that is mounted read-write, at any mount point', async () => {
    mount(v)
    try {
      fs.writeFileSync(path.join(v.mnt, 'f'), 'data')
      for (const opts of [[], ['-o', 'ro']]) {
        const r = sealfs(['mount', '--passfile', v.passfile, ...opts, v.cipher, other])
        expect(r.status).toBe(11)
        expect(r.stderr).toMatch(/is already mounted \(daemon pid \d+\); a volume has one read-write mount at a time/)
        expect(isMounted(other)).toBe(false)
      }
    } finally {
      await umount(v)
    }
  })

  it('mounts read-only: reads work, writes fail with EROFS, and the cipher dir is not changed at all', async () => {
    const before = cipherState(v.cipher)
    mount(v, ['-o', 'ro'])
    try {
      // Two read-only mounts may share a volume.
      expect(sealfs(['mount', '--passfile', v.passfile, '-o', 'ro', v.cipher, other]).status).toBe(0)
      expect(fs.readFileSync(path.join(v.mnt, 'f'), 'utf8')).toBe('data')
      expect(fs.readFileSync(path.join(other, 'f'), 'utf8')).toBe('data')
      expect(fs.readdirSync(v.mnt)).toEqual(['f'])
      expect(() => fs.writeFileSync(path.join(v.mnt, 'g'), 'x')).toThrow(/EROFS/)
      expect(() => fs.appendFileSync(path.join(v.mnt, 'f'), 'x')).toThrow(/EROFS/)
      // A read-write mount must wait for the read-only ones.
      expect(sealfs(['mount', '--passfile', v.passfile, v.cipher, third]).status).toBe(11)
    } finally {
      for (const m of [third, other]) await umount({ ...v, mnt: m })
      await umount(v)
    }
    expect(cipherState(v.cipher)).toEqual(before)
  })

  it('info shows format, ciphers, KDF parameters, slots and file count without a passphrase', () => {
    const r = sealfs(['info', v.cipher], '')
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/format version:\s+1/)
    expect(r.stdout).toMatch(/AES-256-GCM, 4096-byte chunks/)
    expect(r.stdout).toMatch(/key slot passphrase: passphrase, argon2id opslimit=2 memlimit=64 MiB/)
    expect(r.stdout).toMatch(/files:\s+1/)
    const j = JSON.parse(sealfs(['info', '--json', v.cipher]).stdout)
    expect(j).toMatchObject({ formatVersion: 1, chunkSize: 4096, files: 1, keySlots: [{ name: 'passphrase', id: 1, kind: 'passphrase', kdf: 'argon2id', opslimit: 2, memlimit: 67108864 }] })
    expect(sealfs(['info', path.join(v.base, 'nope')]).status).toBe(3)
    expect(sealfs(['info', v.mnt]).status).toBe(5)
  })
})

describe('mounting from fstab through mount(8)', () => {
  // mount(8) runs mount.fuse, which runs `sealfs` from the standard PATH, as after `npm link`.
  // Rather than put a link into the host's /usr/local/bin, the test works in a mount namespace
  // of its own in which a directory of the test's, holding the link, is mounted over
  // /usr/local/bin. A process (`holder`) keeps the namespace; commands run in it with nsenter,
  // and the test reaches the namespace's mount point through /proc/PID/root. libmount keeps
  // its record of fstab-only options (_netdev, x-*) in the test's directory (LIBMOUNT_UTAB), not
  // in the host's /run/mount/utab (test/host-guard.ts does the same for every other test).
  let v: Vol
  let holder: ChildProcess
  let ns: { mountinfo: string, mnt: string }
  const run = (args: string[]): { status: number | null, stderr: string } => {
    const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LIBMOUNT_UTAB: path.join(v.base, 'utab') }
    const r = spawnSync('nsenter', ['-t', String(holder.pid), '-m', '--', ...args], { encoding: 'utf8', env })
    return { status: r.status, stderr: r.stderr }
  }
  beforeAll(async () => {
    v = makeVolume()
    const bin = path.join(v.base, 'bin')
    fs.mkdirSync(bin)
    fs.symlinkSync(path.join(__dirname, '..', 'bin', 'sealfs.js'), path.join(bin, 'sealfs'))
    // The holder's command line names the test's directory, so takeDown() and the host guard see it.
    holder = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c',
      'mount --bind "$0" /usr/local/bin && echo ready && exec python3 -c "import time; time.sleep(600)" "$0"', bin], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.once('data', () => resolve())
      holder.once('exit', code => reject(new Error(`unshare exited (${code})`)))
    })
    ns = { mountinfo: `/proc/${holder.pid}/mountinfo`, mnt: `/proc/${holder.pid}/root${v.mnt}` }
  })
  afterAll(async () => {
    try {
      if (holder?.pid !== undefined && isMounted(v.mnt, ns.mountinfo)) run(['umount', '-l', v.mnt])
      await umount(v)  // waits for the daemon to go
    } finally {
      holder?.kill()
      await cleanup(v)
    }
  })

  it('mounts a fuse.sealfs line with mount -T and mount -a, and unmounts with umount', async () => {
    const fstab = path.join(v.base, 'fstab')
    fs.writeFileSync(fstab, `# test fstab\n${v.cipher} ${v.mnt} fuse.sealfs passfile=${v.passfile},allow_other,nofail,_netdev,x-systemd.automount,noatime 0 0\n`)
    const r = run(['mount', '-T', fstab, v.mnt])
    expect({ ...r, stderr: saidBesidesNoLog(r.stderr) }).toEqual({ status: 0, stderr: '' })
    expect(isMounted(v.mnt, ns.mountinfo)).toBe(true)
    expect(isMounted(v.mnt)).toBe(false)  // only in the test's namespace
    const line = fs.readFileSync(ns.mountinfo, 'utf8').split('\n').find(l => l.split(' ')[4] === v.mnt)!
    expect(line).toMatch(/fuse\.sealfs/)
    expect(line).toMatch(/allow_other/)
    expect(line).not.toMatch(/passfile/)  // ours: consumed, never passed to the kernel
    fs.writeFileSync(path.join(ns.mnt, 'from-fstab'), 'yes')
    expect(run(['umount', v.mnt]).status).toBe(0)
    expect(isMounted(v.mnt, ns.mountinfo)).toBe(false)
    await umount(v)  // waits for the daemon to finish
    expect(run(['mount', '-a', '-T', fstab]).status).toBe(0)
    expect(fs.readFileSync(path.join(ns.mnt, 'from-fstab'), 'utf8')).toBe('yes')
    expect(run(['umount', v.mnt]).status).toBe(0)
    // An option we do not know is a clear error, and nothing is mounted.
    fs.writeFileSync(fstab, `${v.cipher} ${v.mnt} fuse.sealfs passfile=${v.passfile},frobnicate 0 0\n`)
    await umount(v)
    const bad = run(['mount', '-T', fstab, v.mnt])
    expect(bad.status).not.toBe(0)
    expect(bad.stderr).toMatch(/unknown mount option 'frobnicate'/)
    expect(isMounted(v.mnt, ns.mountinfo)).toBe(false)
  })

  it('unlocks a fuse.sealfs line with keyfile=, slot= and volume_id=', async () => {
    const key = path.join(v.base, 'usb.key')
    expect(sealfs(['key', 'add', '--passfile', v.passfile, '--name', 'usb', '--new-keyfile', key, v.cipher]).status).toBe(0)
    const id = JSON.parse(sealfs(['info', '--json', v.cipher]).stdout).volumeId as string
    const fstab = path.join(v.base, 'fstab-key')
    fs.writeFileSync(fstab, `${v.cipher} ${v.mnt} fuse.sealfs keyfile=${key},slot=usb,volume_id=${id},nofail 0 0\n`)
    const r = run(['mount', '-T', fstab, v.mnt])
    expect({ ...r, stderr: saidBesidesNoLog(r.stderr) }).toEqual({ status: 0, stderr: '' })
    fs.writeFileSync(path.join(ns.mnt, 'by-key'), 'yes')
    expect(run(['umount', v.mnt]).status).toBe(0)
    await umount(v)
    const wrongId = id.replace(/^./, c => c === '0' ? '1' : '0')
    fs.writeFileSync(fstab, `${v.cipher} ${v.mnt} fuse.sealfs keyfile=${key},volume_id=${wrongId} 0 0\n`)
    const bad = run(['mount', '-T', fstab, v.mnt])
    expect(bad.status).not.toBe(0)
    expect(bad.stderr).toMatch(/holds volume .*, not the pinned volume/)
    expect(isMounted(v.mnt, ns.mountinfo)).toBe(false)
  })
})

describe('the daemon: systemd notification, signals, kill -9, idle, log file', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume() })
  afterEach(async () => { await takeDown(v.base) })  // each test's finally: no mount or process outlives it
  afterAll(async () => { await cleanup(v) })

  it('sends READY=1 once the mount answers and STOPPING=1 on SIGTERM, which unmounts cleanly', async () => {
    const sock = path.join(v.base, 'notify.sock')
    const listener = spawn('python3', ['-c', `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); print('listening', flush=True)
for _ in range(2): print(s.recv(4096).decode().split(chr(10))[0], flush=True)`, sock], { stdio: ['ignore', 'pipe', 'inherit'] })
    let heard = ''
    listener.stdout!.on('data', d => { heard += d.toString() })
    while (!heard.includes('listening')) await sleep(20)
    const daemon = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'sealfs.js'), 'mount', '-f', '--passfile', v.passfile, v.cipher, v.mnt], { env: { ...process.env, NOTIFY_SOCKET: sock }, stdio: 'ignore' })
    for (let i = 0; i < 100 && !heard.includes('READY=1'); i++) await sleep(50)
    expect(heard).toContain('READY=1')
    expect(isMounted(v.mnt)).toBe(true)  // ready means mounted
    fs.writeFileSync(path.join(v.mnt, 'kept'), 'written before SIGTERM')
    daemon.kill('SIGTERM')
    const code = await new Promise(resolve => daemon.on('exit', resolve))
    expect(code).toBe(0)
    for (let i = 0; i < 50 && !heard.includes('STOPPING=1'); i++) await sleep(20)
    expect(heard).toContain('STOPPING=1')
    expect(isMounted(v.mnt)).toBe(false)
    listener.kill()
    mount(v)
    expect(fs.readFileSync(path.join(v.mnt, 'kept'), 'utf8')).toBe('written before SIGTERM')
    await umount(v)
  })

  it('unmounts a mount point whose name holds shell syntax as it is, running nothing', async () => {
    // The daemon runs in the test's directory, so an injected `touch` would leave files there.
    const mnt = path.join(v.base, 'm$(touch pwned)`touch pwned2`;touch pwned3')
    fs.mkdirSync(mnt)
    const daemon = spawn(process.execPath, [path.join(__dirname, '..', 'bin', 'sealfs.js'), 'mount', '-f', '--passfile', v.passfile, v.cipher, mnt], { cwd: v.base, stdio: 'ignore' })
    for (let i = 0; i < 100 && !isMounted(mnt); i++) await sleep(50)
    expect(isMounted(mnt)).toBe(true)
    fs.writeFileSync(path.join(mnt, 'f'), 'x')
    daemon.kill('SIGTERM')
    expect(await new Promise(resolve => daemon.on('exit', resolve))).toBe(0)
    expect(isMounted(mnt)).toBe(false)
    expect(fs.readdirSync(v.base).filter(n => n.startsWith('pwned'))).toEqual([])
  })

  it('stays mounted on a mount point reached through a symlink and named with a space, tab, newline and backslash', async () => {
    const real = path.join(v.base, 'real dir\t\n\\x')
    fs.mkdirSync(real)
    const link = path.join(v.base, 'via-link')
    fs.symlinkSync(real, link)
    mount({ ...v, mnt: link })
    await sleep(1500)  // the daemon reads the mount table every 500 ms and stops when its mount is gone
    expect(isMounted(real)).toBe(true)
    fs.writeFileSync(path.join(link, 'f'), 'through the link')
    expect(fs.readFileSync(path.join(real, 'f'), 'utf8')).toBe('through the link')
    // sealfs umount names the mount through the symlink too (fusermount alone would not find it).
    const r = sealfs(['umount', link])
    expect(r.status, r.stderr).toBe(0)
    expect(isMounted(real)).toBe(false)
  })

  it('serves a tree of more files than its descriptor limit (it holds one per entry the kernel caches)', async () => {
    // Started under a low limit (a shell's ulimit, a unit's LimitNOFILE): a root daemon raises
    // it where it may; past it, the kernel is asked to drop the least recently used entries.
    const daemon = spawn('prlimit', ['--nofile=256:256', '--', process.execPath, CLI, 'mount', '-f', '--passfile', v.passfile, v.cipher, v.mnt], { stdio: 'ignore' })
    try {
      for (let i = 0; i < 100 && !isMounted(v.mnt); i++) await sleep(50)
      expect(isMounted(v.mnt)).toBe(true)
      const dir = path.join(v.mnt, 'many')
      const r = py(PY_ERR + `
d = sys.argv[1]; os.mkdir(d)
first = None
for i in range(1500):
    sub = os.path.join(d, 'd%02d' % (i // 100))
    if i % 100 == 0: os.mkdir(sub)
    r = e(lambda: os.close(os.open(os.path.join(sub, 'f%04d' % i), os.O_CREAT | os.O_WRONLY, 0o644)))
    if r != 'ok' and first is None: first = '%d: %s' % (i, r)
for i in range(1500):
    p = os.path.join(d, 'd%02d' % (i // 100), 'f%04d' % i)
    r = e(lambda: os.stat(p).st_size)
    if r != 0 and first is None: first = 'stat %d: %s' % (i, r)
print(json.dumps([first, sum(len(os.listdir(os.path.join(d, s))) for s in os.listdir(d))]))`, { args: [dir] })
      expect(r).toEqual([null, 1500])
      fs.rmSync(dir, { recursive: true })
    } finally {
      daemon.kill('SIGTERM')
      await new Promise(resolve => daemon.exitCode !== null ? resolve(null) : daemon.on('exit', resolve))
    }
  })

  it.each(['SIGINT', 'SIGHUP'] as const)('%s unmounts cleanly too (no dead mount left), and the daemon cannot dump core', async (signal) => {
    const fg = await mountForeground(v)
    fs.writeFileSync(path.join(v.mnt, 'int'), `before ${signal}`)
    // Keys must never reach a core file: the daemon's core limit is 0 (and it is not dumpable:
    // the same call, checked in posix.test.ts).
    expect(fs.readFileSync(`/proc/${fg.child.pid as number}/limits`, 'utf8')).toMatch(/^Max core file size\s+0\s+0\s+bytes/m)
    fg.child.kill(signal)
    expect(await new Promise(resolve => fg.child.on('exit', resolve))).toBe(0)
    expect(isMounted(v.mnt)).toBe(false)
    mount(v)
    try {
      expect(fs.readFileSync(path.join(v.mnt, 'int'), 'utf8')).toBe(`before ${signal}`)
    } finally {
      await umount(v)
    }
  })

  it('after kill -9, mount says what to do and sealfs umount clears the dead mount', async () => {
    mount(v)
    const pid = Number(fs.readFileSync(path.join(v.cipher, 'sealfs.lock'), 'utf8').trim())
    expect(pid).toBeGreaterThan(1)  // never kill(0) or kill(-1)
    process.kill(pid, 'SIGKILL')
    await sleep(300)
    const again = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
    expect(again.status).toBe(4)
    expect(again.stderr).toMatch(/holds a dead mount \(its daemon is gone\); run 'sealfs umount .*' first/)
    expect(sealfs(['umount', v.mnt]).status).toBe(0)
    expect(isMounted(v.mnt)).toBe(false)
    mount(v)  // the lock died with the daemon
    expect(fs.readFileSync(path.join(v.mnt, 'kept'), 'utf8')).toBe('written before SIGTERM')
    await umount(v)
  })

  it('unmounts itself after --idle without use, and a detached daemon logs to --log', async () => {
    const log = path.join(v.base, 'daemon.log')
    mount(v, ['--idle', '2s', '--log', log])
    expect(isMounted(v.mnt)).toBe(true)
    for (let i = 0; i < 100 && isMounted(v.mnt); i++) await sleep(100)
    expect(isMounted(v.mnt)).toBe(false)
    await umount(v)
    expect(fs.readFileSync(log, 'utf8')).toMatch(/notice sealfs\[\d+\]: unmounting .*: idle for 2s\n/)
    expect(sealfs(['mount', '--passfile', v.passfile, '--idle', 'soon', v.cipher, v.mnt]).status).toBe(2)
  })
})
