import { execFileSync, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { CLI, cleanup, FAST_KDF, isMounted, makeVolume, mount, ROOT, sealfs, sleep, takeDown, umount, Vol } from './helpers'

describe('sealfs command line', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume() })
  afterEach(async () => { await takeDown(v.base) })  // each test's finally: no mount or process outlives it
  afterAll(async () => { await cleanup(v) })

  it('runs from the project root with npx --no-install', () => {
    const r = spawnSync('npx', ['--no-install', 'sealfs', '--help'], { cwd: ROOT, encoding: 'utf8' })
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/init \[options\] <CIPHER>/)
    expect(r.stdout).toMatch(/mount \[options\] <CIPHER> <MNT>/)
  })

  it('takes sizes and durations as people and systemd write them: --kdf-memlimit 64M, --idle 10min, -o idle=1h30min', async () => {
    const fresh = path.join(v.base, 'sized')
    fs.mkdirSync(fresh)
    const made = sealfs(['init', '--passfile', v.passfile, '--kdf-opslimit', '2', '--kdf-memlimit', '64M', fresh])
    expect(made.status, made.stderr).toBe(0)
    expect(JSON.parse(sealfs(['info', '--json', fresh]).stdout).keySlots[0].memlimit).toBe(64 * 1024 * 1024)
    for (const idle of [['--idle', '10min'], ['-o', 'idle=1h30min']]) {
      const m = sealfs(['mount', '--passfile', v.passfile, ...idle, v.cipher, v.mnt])
      expect(m.status, m.stderr).toBe(0)
      await umount(v)
    }
  })

  it('prints its version', () => {
    const r = sealfs(['--version'])
    expect(r.status).toBe(0)
    expect(r.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version)
  })

  it('refuses a wrong passphrase: exit 7, one line, nothing mounted', () => {
    const wrong = path.join(v.base, 'wrong')
    fs.writeFileSync(wrong, 'not the passphrase\n', { mode: 0o600 })
    const r = sealfs(['mount', '--passfile', wrong, v.cipher, v.mnt])
    expect(r.status).toBe(7)
    expect(r.stderr).toBe('sealfs: wrong passphrase (or the volume config was modified)\n')
    expect(isMounted(v.mnt)).toBe(false)
    const f = sealfs(['mount', '-f', '--passfile', wrong, v.cipher, v.mnt])
    expect(f.status).toBe(7)
    expect(isMounted(v.mnt)).toBe(false)
  })

  it('gives distinct exit codes and one-line errors for bad input', () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['mount', '--passfile', v.passfile, path.join(v.base, 'nope'), v.mnt], 3, /does not exist/],
      [['mount', '--passfile', v.passfile, v.cipher, path.join(v.base, 'nope')], 3, /does not exist/],
      [['init', '--passfile', v.passfile, ...FAST_KDF, v.cipher], 4, /is not empty/],
      [['mount', '--passfile', v.passfile, v.mnt, v.base], 2, /must not contain each other/],
      [['mount', '--passfile', path.join(v.base, 'nopass'), v.cipher, v.mnt], 8, /cannot read passfile/],
      [['mount', '--passfile', v.passfile, '-o', 'bogus_opt', v.cipher, v.mnt], 2, /unknown mount option 'bogus_opt'/],
      [['init', '--passfile', v.passfile, '--kdf-memlimit', '1024', path.join(v.base, 'nope')], 3, /does not exist/],
      [['frobnicate'], 2, /unknown command/],
      [['init', '--passfile', v.passfile, '--kdf-memlimit', '12X', path.join(v.base, 'nope')], 2, /--kdf-memlimit takes a size in bytes/],
      [['mount', '--passfile', v.passfile, '--idle', '10 fortnights', v.cipher, v.mnt], 2, /idle/],
      // Mistyped commands are not taken for mount(8)'s `sealfs CIPHER MNT` (their first word is no path).
      [['unmount', v.mnt], 2, /unknown command 'unmount'[\s\S]*umount/],
      [['status', v.mnt], 2, /unknown command 'status'/],
      [['mount', '--extpass', 'exit 3', v.cipher, v.mnt], 8, /extpass program failed/]
    ]
    for (const [args, code, msg] of cases) {
      const r = sealfs(args)
      expect(r.status, args.join(' ') + ': ' + r.stderr).toBe(code)
      expect(r.stderr).toMatch(msg)
      expect(r.stderr).not.toMatch(/\n\s+at /)  // no stack trace
      expect(isMounted(v.mnt)).toBe(false)
    }
  })

  it('refuses a directory that is not a volume, a weak KDF and a damaged config', () => {
    const empty = path.join(v.base, 'empty')
    fs.mkdirSync(empty)
    const notVol = sealfs(['mount', '--passfile', v.passfile, empty, v.mnt])
    expect(notVol.status).toBe(5)
    expect(notVol.stderr).toMatch(/is not a sealfs volume/)
    const weak = sealfs(['init', '--passfile', v.passfile, '--kdf-memlimit', '1048576', empty])
    expect(weak.status).toBe(10)
    const conf = path.join(v.cipher, 'sealfs.conf')
    const saved = fs.readFileSync(conf)
    fs.writeFileSync(conf, saved.toString().replace('"memlimit": 67108864', '"memlimit": 1048576'))
    expect(sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt]).status).toBe(10)
    // A change that passes the floor still fails: all parameters are authenticated.
    fs.writeFileSync(conf, saved.toString().replace('"opslimit": 2', '"opslimit": 3'))
    expect(sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt]).status).toBe(7)
    fs.writeFileSync(conf, '{ not json')
    expect(sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt]).status).toBe(6)
    fs.writeFileSync(conf, saved)
    // Without the root directory's ID no name can be read: an error, not an empty volume.
    const diriv = path.join(v.cipher, 'sealfs.diriv')
    const id = fs.readFileSync(diriv)
    fs.rmSync(diriv)
    try {
      for (const ro of [[], ['-o', 'ro']]) {
        const r = sealfs(['mount', '--passfile', v.passfile, ...ro, v.cipher, v.mnt])
        expect(r.status).toBe(6)
        expect(r.stderr).toMatch(/sealfs\.diriv is missing or damaged: it holds the root directory's ID/)
      }
    } finally {
      fs.writeFileSync(diriv, id, { mode: 0o400 })
    }
    expect(isMounted(v.mnt)).toBe(false)
  })

  it('init is all or nothing: a cipher dir whose path is too long for the index is left empty (exit 2, said)', () => {
    const deep = path.join(v.base, ...Array.from({ length: 9 }, () => 'x'.repeat(60)))
    fs.mkdirSync(deep, { recursive: true })
    const r = sealfs(['init', '--passfile', v.passfile, ...FAST_KDF, deep])
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/: the path is too long for the SQLite index \(at most 512 bytes with its file name\); use a shorter one\n$/)
    expect(fs.readdirSync(deep)).toEqual([])
  })

  it('never dumps core: every sealfs process runs with a core limit of 0, which its children inherit', async () => {
    // The extpass command is a child of the sealfs process: its limits are what sealfs set.
    const seen = path.join(v.base, 'limits')
    const r = sealfs(['key', 'list', v.cipher])
    expect(r.status).toBe(0)
    const m = sealfs(['mount', '--extpass', `grep 'Max core' /proc/self/limits > ${seen}; echo 'test passphrase'`, v.cipher, v.mnt])
    try {
      expect(m.status, m.stderr).toBe(0)
      expect(fs.readFileSync(seen, 'utf8')).toMatch(/^Max core file size\s+0\s+0\s+bytes/)
    } finally {
      await umount(v)
    }
    // And not dumpable: what the call reports in a process of its own.
    const c = spawnSync(process.execPath, ['-e', `const p = require(${JSON.stringify(path.join(ROOT, 'native-deps', 'build', 'Release', 'posix.node'))}); console.log(p.disableCoreDumps())`], { encoding: 'utf8' })
    expect(c.stdout.trim()).toBe('0')
  })

  it('mounts (detached, ready on return), takes extpass, and unmounts with sealfs umount', async () => {
    const r = sealfs(['mount', '--extpass', `cat ${v.passfile}`, v.cipher, v.mnt])
    expect(r.status).toBe(0)
    expect(isMounted(v.mnt)).toBe(true)
    fs.writeFileSync(path.join(v.mnt, 'x'), 'y')
    await umount(v)
    expect(isMounted(v.mnt)).toBe(false)
    mount(v)
    expect(fs.readFileSync(path.join(v.mnt, 'x'), 'utf8')).toBe('y')
    // A second mount on a mounted mount point is refused.
    expect(sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt]).status).toBe(4)
    await umount(v)
  })

  it('reads the passphrase from the terminal without echo, twice at init', async () => {
    const dir = path.join(v.base, 'tty')
    fs.mkdirSync(dir)
    const typed = (answers: string[]): { status: number | null, out: string } => {
      const feed = answers.map(a => `sleep 1; printf '${a}\\r'`).join('; ')
      const r = spawnSync('sh', ['-c', `(${feed}; sleep 2) | script -qfec "${process.execPath} ${path.join(ROOT, 'bin/sealfs.js')} init ${FAST_KDF.join(' ')} ${dir}" /dev/null`], { encoding: 'utf8', timeout: 30_000 })
      return { status: r.status, out: r.stdout }
    }
    const mismatch = typed(['secret-one', 'secret-two'])
    expect(mismatch.status).toBe(8)
    expect(mismatch.out).toMatch(/do not match/)
    const ok = typed(['secret-one', 'secret-one'])
    expect(ok.status).toBe(0)
    expect(ok.out).not.toMatch(/secret-one/)
    const pass = path.join(v.base, 'tty-pass')
    fs.writeFileSync(pass, 'secret-one\n')
    const mnt = path.join(v.base, 'tty-mnt')
    fs.mkdirSync(mnt)
    expect(sealfs(['mount', '--passfile', pass, dir, mnt]).status).toBe(0)
    await umount({ ...v, cipher: dir, mnt })
  })

  it('exit 9 when the FUSE mount itself fails (no /dev/fuse); a damaged or missing index never stops a mount, is said, and fsck --repair rebuilds it; extpass= in -o', async () => {
    const r = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs tmpfs /dev && exec ${process.execPath} ${path.join(ROOT, 'bin/sealfs.js')} mount -f --passfile ${v.passfile} ${v.cipher} ${v.mnt}`], { encoding: 'utf8' })
    expect(r.status).toBe(9)
    expect(r.stderr).toMatch(/sealfs: cannot mount .*: fuse failed/)
    expect(isMounted(v.mnt)).toBe(false)
    // A file to read back through every mount below.
    mount(v)
    fs.writeFileSync(path.join(v.mnt, 'kept'), 'read without the index')
    await umount(v)
    const index = path.join(v.cipher, 'sealfs.index')
    const saved = fs.readFileSync(index)
    const garbage = 'this is not a database at all, not even close to one'.repeat(100)
    // Read-only, damaged: mounted without it, and said.
    fs.writeFileSync(index, garbage)
    let m = sealfs(['mount', '--passfile', v.passfile, '-o', 'ro', v.cipher, v.mnt])
    expect(m.status, m.stderr).toBe(0)
    expect(m.stderr).toMatch(/^sealfs: warning: .*sealfs\.index cannot be opened \(.*\): mounted without it; .*run 'sealfs fsck --repair .*' when it is not mounted/m)
    try {
      expect(fs.readFileSync(path.join(v.mnt, 'kept'), 'utf8')).toBe('read without the index')
    } finally {
      await umount(v)
    }
    expect(fs.readFileSync(index, 'utf8')).toBe(garbage)  // a read-only mount changes nothing
    // Read-write, damaged: moved aside (kept), a new one made, and said.
    m = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
    expect(m.status, m.stderr).toBe(0)
    expect(m.stderr).toMatch(/^sealfs: warning: .*sealfs\.index could not be opened \(.*\): it was moved to sealfs\.index\.damaged-[0-9a-f]{8} and a new one made/m)
    try {
      expect(fs.readFileSync(path.join(v.mnt, 'kept'), 'utf8')).toBe('read without the index')
    } finally {
      await umount(v)
    }
    const aside = fs.readdirSync(v.cipher).filter(n => /^sealfs\.index\.damaged-[0-9a-f]{8}$/.test(n))
    expect(aside).toHaveLength(1)  // (and its journal beside it)
    expect(fs.readFileSync(path.join(v.cipher, aside[0]), 'utf8')).toBe(garbage)
    // The new index lacks the rows of existing files: fsck --repair puts them back.
    m = sealfs(['fsck', '--passfile', v.passfile, '--repair', v.cipher])
    expect(m.status, m.stderr).toBe(21)
    expect(m.stderr).toMatch(/^\/kept: has no index row \(repaired\)$/m)
    expect(sealfs(['fsck', '--passfile', v.passfile, v.cipher]).status).toBe(0)
    // Read-write, missing: made, and said.
    fs.rmSync(index)
    m = sealfs(['mount', '--passfile', v.passfile, v.cipher, v.mnt])
    expect(m.status, m.stderr).toBe(0)
    expect(m.stderr).toMatch(/^sealfs: warning: .*sealfs\.index was missing: a new, empty one was made/m)
    await umount(v)
    for (const n of fs.readdirSync(v.cipher).filter(n => n.startsWith('sealfs.index.damaged-'))) fs.rmSync(path.join(v.cipher, n))
    fs.writeFileSync(index, saved)
    expect(sealfs([v.cipher, v.mnt, '-o', `extpass=cat ${v.passfile}`]).status).toBe(0)
    expect(isMounted(v.mnt)).toBe(true)
    await umount(v)
  })

  it('reads --passfile - from standard input, and a pipe (<(...)); warns of a passfile other users can read', async () => {
    const viaStdin = sealfs(['mount', '--passfile', '-', v.cipher, v.mnt], 'test passphrase\n')
    expect(viaStdin.status, viaStdin.stderr).toBe(0)
    expect(viaStdin.stderr).toBe('')
    await umount(v)
    const viaPipe = spawnSync('bash', ['-c', 'exec "$0" "$1" mount --passfile <(cat "$2") "$3" "$4"', process.execPath, CLI, v.passfile, v.cipher, v.mnt], { encoding: 'utf8' })
    expect(viaPipe.status, viaPipe.stderr).toBe(0)
    await umount(v)
    const readable = path.join(v.base, 'readable-pass')
    fs.writeFileSync(readable, 'test passphrase\n')
    fs.chmodSync(readable, 0o644)
    const warned = sealfs(['mount', '--passfile', readable, v.cipher, v.mnt])
    expect(warned.status, warned.stderr).toBe(0)
    expect(warned.stderr).toBe(`sealfs: warning: passfile ${readable} can be read by other users (mode 644); chmod 600 it\n`)
    await umount(v)
    const wrong = sealfs(['mount', '--passfile', '-', v.cipher, v.mnt], 'not it\n')
    expect(wrong.status).toBe(7)
  })

  it('sealfs umount refuses a busy mount (exit 11) unless --lazy, says "not mounted" (exit 24), and returns once the daemon has exited', async () => {
    const elsewhere = path.join(v.base, 'not-a-mount')
    fs.mkdirSync(elsewhere)
    const none = sealfs(['umount', elsewhere])
    expect(none.status).toBe(24)
    expect(none.stderr).toBe(`sealfs: ${elsewhere} is not mounted\n`)
    execFileSync('mount', ['--bind', elsewhere, elsewhere])
    try {
      const other = sealfs(['umount', elsewhere])
      expect(other.status).toBe(24)
      expect(other.stderr).toMatch(/is not a sealfs mount \(it is \S+\); use umount\(8\)/)
    } finally {
      execFileSync('umount', [elsewhere])
    }
    mount(v)
    const daemon = Number(fs.readFileSync(path.join(v.cipher, 'sealfs.lock'), 'utf8').trim())
    const fd = fs.openSync(path.join(v.mnt, 'open-file'), 'w')
    try {
      const busy = sealfs(['umount', v.mnt])
      expect(busy.status).toBe(11)
      expect(busy.stderr).toMatch(/is busy: a process has a file or directory open there/)
      expect(isMounted(v.mnt)).toBe(true)
      fs.writeSync(fd, 'still written')  // the writer did not lose its mount
    } finally {
      fs.closeSync(fd)
    }
    // The daemon's exit is held back a second (strace delays its exit_group): umount waits for it.
    const tracer = spawn('strace', ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=exit_group', '-e', 'inject=exit_group:delay_enter=1000000', '-p', String(daemon)], { stdio: 'ignore' })
    let done
    try {
      await sleep(500)  // attached
      done = sealfs(['umount', v.mnt])
    } finally {
      if (tracer.exitCode === null) tracer.kill()
    }
    expect(done.status, done.stderr).toBe(0)
    expect(isMounted(v.mnt)).toBe(false)
    // The daemon is gone when umount returns: the lock is free, its last index writes done.
    expect(fs.existsSync(`/proc/${daemon}`) && !/^\d+ \(.*\) Z/s.test(fs.readFileSync(`/proc/${daemon}/stat`, 'utf8'))).toBe(false)
    mount(v)
    expect(fs.readFileSync(path.join(v.mnt, 'open-file'), 'utf8')).toBe('still written')
    const held = fs.openSync(path.join(v.mnt, 'open-file'), 'r')
    try {
      const lazy = sealfs(['umount', '--lazy', v.mnt])
      expect(lazy.status, lazy.stderr).toBe(0)
      expect(isMounted(v.mnt)).toBe(false)
    } finally {
      fs.closeSync(held)
    }
    await umount(v)  // waits for the daemon, which ends once the last file has closed
  })

  it('exit 1 for an unexpected I/O failure, in one line (init on a read-only filesystem)', () => {
    const ro = path.join(v.base, 'ro')
    fs.mkdirSync(ro)
    execFileSync('mount', ['--bind', '-o', 'ro', ro, ro])
    try {
      const r = sealfs(['init', '--passfile', v.passfile, ...FAST_KDF, ro])
      expect(r.status).toBe(1)
      expect(r.stderr).toMatch(/^sealfs: unexpected I\/O error: EROFS in open on .*\n$/)
    } finally {
      execFileSync('umount', [ro])
    }
  })

  it('writes the config and index with owner-only permissions', () => {
    expect(fs.statSync(path.join(v.cipher, 'sealfs.conf')).mode & 0o077).toBe(0)
    expect(fs.statSync(path.join(v.cipher, 'sealfs.index')).mode & 0o777).toBe(0o600)
  })
})
