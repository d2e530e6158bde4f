import { execFileSync, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { CLI, cleanup, FAST_KDF, isMounted, makeVolume, mount, mountForeground, ROOT, saidBesidesNoLog, sealfs, sleep, takeDown, umount, Vol } from './helpers'
import { HEADER_BYTES } from '../src/volume/file-header'

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
      [['passwd', v.cipher], 2, /unknown command 'passwd'/],
      [['status', v.mnt], 24, /is not a sealfs mount/],
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

  it('the terminal prompt edits as the system\'s do (Backspace over a UTF-8 character, Ctrl-U, Ctrl-W): the passphrase is what the user saw; Ctrl-C cancels it (exit 25) and puts the terminal back', async () => {
    const dir = path.join(v.base, 'tty-edit')
    fs.mkdirSync(dir)
    // Typed into a real terminal (script's pty), with its default keys: ^? erase, ^U kill, ^W
    // word erase. What runs in it is a script in the test's directory: script(1) is given no
    // other argument than its typescript, /dev/null.
    const inTerminal = (keys: string[], args: string[], after: string): { status: number | null, out: string } => {
      const commands = path.join(v.base, 'in-terminal.sh')
      fs.writeFileSync(commands, `${[process.execPath, CLI, ...args].map(a => JSON.stringify(a)).join(' ')}\necho exit=$?\n${after}\n`)
      const feed = keys.map(k => `sleep 1; printf '${k}'`).join('; ')
      const r = spawnSync('sh', ['-c', `(${feed}; sleep 2) | script -qfec "bash ${commands}" /dev/null`], { encoding: 'utf8', timeout: 30_000 })
      return { status: r.status, out: r.stdout }
    }
    const session = (keys: string[]): { status: number | null, out: string } => inTerminal(keys, ['init', ...FAST_KDF, dir], '')
    // "wrong", killed; "pä€x", x and € (three bytes) erased; "ss"; then a word erased. Twice.
    const edited = 'wrong\\025p\\303\\244\\342\\202\\254x\\177\\177ss extra\\027\\177\\r'
    const made = session([edited, 'p\\303\\244ss\\r'])
    expect(made.out).toMatch(/exit=0/)
    expect(made.out).not.toMatch(/wrong|extra/)  // no echo
    const pass = path.join(v.base, 'tty-edit-pass')
    fs.writeFileSync(pass, 'päss\n')
    const mnt = path.join(v.base, 'tty-edit-mnt')
    fs.mkdirSync(mnt)
    const m = sealfs(['mount', '--passfile', pass, dir, mnt])
    expect(m.status, m.stderr).toBe(0)
    await umount({ ...v, cipher: dir, mnt })
    // Ctrl-C at the prompt: cancelled, and the terminal echoes again afterwards.
    const other = path.join(v.base, 'tty-cancel')
    fs.mkdirSync(other)
    for (const args of [['init', other], ['mount', '-f', dir, mnt]]) {
      const c = inTerminal(['half\\003'], args, 'stty -a').out
      expect(c).toMatch(/cancelled at the passphrase prompt \(Ctrl-C\)/)
      expect(c).toMatch(/exit=25/)
      expect(c).toMatch(/(^|[ ;])echo( |;|$)/m)
      expect(c).not.toMatch(/-echo /)
    }
    expect(fs.readdirSync(other)).toEqual([])
    expect(isMounted(mnt)).toBe(false)
  })

  it('shows what a long step is doing on a terminal (the KDF at init, unlocking at mount), and nothing when not on one', async () => {
    const dir = path.join(v.base, 'slow-progress')
    fs.mkdirSync(dir)
    const commands = path.join(v.base, 'progress.sh')
    const cli = `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)}`
    fs.writeFileSync(commands, [
      `${cli} init --passfile ${JSON.stringify(v.passfile)} --kdf-opslimit 2 --kdf-memlimit 1G ${JSON.stringify(dir)}`,
      `${cli} mount --passfile ${JSON.stringify(v.passfile)} ${JSON.stringify(dir)} ${JSON.stringify(v.mnt)}`,
      `${cli} umount ${JSON.stringify(v.mnt)}`, ''].join('\n'))
    // script(1) gets no argument but its typescript, /dev/null; what runs is the script above.
    const r = spawnSync('script', ['-qfec', `bash ${commands}`, '/dev/null'], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] })
    expect(r.stdout).toMatch(/\r\x1b\[Ksealfs: deriving the key \(Argon2id, 2 passes over 1 GiB\)\.\.\. \d+ s/)
    expect(r.stdout).toMatch(/\r\x1b\[Ksealfs: unlocking and mounting\.\.\. \d+ s/)
    expect(r.stdout).toMatch(/Created a sealfs volume/)
    expect(isMounted(v.mnt)).toBe(false)
    const piped = sealfs(['mount', '--passfile', v.passfile, dir, v.mnt])
    expect(piped.status).toBe(0)
    expect(saidBesidesNoLog(piped.stderr)).toBe('')
    await umount(v)
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
    expect(saidBesidesNoLog(viaStdin.stderr)).toBe('')
    await umount(v)
    const viaPipe = spawnSync('bash', ['-c', 'exec "$0" "$1" mount --passfile <(cat "$2") "$3" "$4"', process.execPath, CLI, v.passfile, v.cipher, v.mnt], { encoding: 'utf8' })
    expect(viaPipe.status, viaPipe.stderr).toBe(0)
    await umount(v)
    const readable = path.join(v.base, 'readable-pass')
    fs.writeFileSync(readable, 'test passphrase\n')
    fs.chmodSync(readable, 0o644)
    const warned = sealfs(['mount', '--passfile', readable, v.cipher, v.mnt])
    expect(warned.status, warned.stderr).toBe(0)
    expect(saidBesidesNoLog(warned.stderr)).toBe(`sealfs: warning: passfile ${readable} can be read by other users (mode 644); chmod 600 it\n`)
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

  it('sealfs status lists the sealfs mounts (mount point, cipher dir, daemon, ro/rw, volume ID), and umount waits for a read-only daemon too', async () => {
    const other = path.join(v.base, 'other')
    const otherMnt = path.join(v.base, 'other-mnt')
    fs.mkdirSync(other)
    fs.mkdirSync(otherMnt)
    expect(sealfs(['init', '--passfile', v.passfile, ...FAST_KDF, other]).status).toBe(0)
    const none = sealfs(['status', '--json'])
    expect(JSON.parse(none.stdout).filter((m: { mountPoint: string }) => m.mountPoint.startsWith(v.base))).toEqual([])
    mount(v)
    const ro = sealfs(['mount', '--passfile', v.passfile, '-o', 'ro', other, otherMnt])
    expect(ro.status, ro.stderr).toBe(0)
    const idOf = (c: string): string => JSON.parse(sealfs(['info', '--json', c]).stdout).volumeId
    const listed = JSON.parse(sealfs(['status', '--json']).stdout).filter((m: { mountPoint: string }) => m.mountPoint.startsWith(v.base))
    const rwPid = Number(fs.readFileSync(path.join(v.cipher, 'sealfs.lock'), 'utf8').trim())
    expect(listed).toEqual([
      { mountPoint: v.mnt, cipherDir: v.cipher, pid: rwPid, mode: 'rw', volumeId: idOf(v.cipher) },
      { mountPoint: otherMnt, cipherDir: other, pid: expect.any(Number), mode: 'ro', volumeId: idOf(other) }
    ])
    const roPid = listed[1].pid as number
    expect(fs.readFileSync(`/proc/${roPid}/cmdline`, 'utf8')).toContain('sealfs')
    const table = sealfs(['status', otherMnt])
    expect(table.status).toBe(0)
    expect(table.stdout.split('\n')[0]).toMatch(/^MOUNT POINT +CIPHER DIR +PID +MODE +VOLUME ID$/)
    expect(table.stdout.split('\n')[1].split(/ +/)).toEqual([otherMnt, other, String(roPid), 'ro', idOf(other)])
    expect(sealfs(['status', v.base]).status).toBe(24)
    // The read-only daemon's exit is held back a second: umount waits for it as for a read-write one.
    const tracer = spawn('strace', ['-f', '-qq', '-o', '/dev/null', '-e', 'trace=exit_group', '-e', 'inject=exit_group:delay_enter=1000000', '-p', String(roPid)], { stdio: 'ignore' })
    let done
    try {
      await sleep(500)  // attached
      done = sealfs(['umount', otherMnt])
    } finally {
      if (tracer.exitCode === null) tracer.kill()
    }
    expect(done.status, done.stderr).toBe(0)
    expect(fs.existsSync(`/proc/${roPid}`) && !/^\d+ \(.*\) Z/s.test(fs.readFileSync(`/proc/${roPid}/stat`, 'utf8'))).toBe(false)
    await umount(v)
  })

  it('logs mount, unmount and tamper events with a level to the journal (native protocol), syslog or a file (with -f too); sealfs path maps the logged file ID back, while mounted', async () => {
    // Real datagram sockets a listener binds in the test's directory, as journald and syslogd do.
    const journal = path.join(v.base, 'journal.sock')
    const syslog = path.join(v.base, 'syslog.sock')
    const received = path.join(v.base, 'received')
    const listener = spawn('python3', ['-c', `
import socket, sys, select
socks = []
for p in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(p); socks.append(s)
out = open(sys.argv[1], 'ab', buffering=0)
print('ready', flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        out.write(s.recv(65536) + b'\\n\\0\\n')
`, received, journal, syslog], { stdio: ['ignore', 'pipe', 'inherit'] })
    try {
      await new Promise(resolve => listener.stdout!.once('data', resolve))
      const datagrams = (): string[] => fs.existsSync(received) ? fs.readFileSync(received, 'utf8').split('\n\0\n').filter(d => d !== '') : []
      const run = (args: string[], env: Record<string, string>): ReturnType<typeof spawnSync> => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env } })
      const toJournal = { SEALFS_JOURNAL_SOCKET: journal, SEALFS_SYSLOG_SOCKET: syslog }
      const m = run(['mount', '--passfile', v.passfile, v.cipher, v.mnt], toJournal)
      expect(m.status, String(m.stderr)).toBe(0)
      expect(m.stderr).toBe('')
      fs.mkdirSync(path.join(v.mnt, 'docs'))
      fs.writeFileSync(path.join(v.mnt, 'docs', 'a.txt'), 'the plaintext')
      const where = JSON.parse(sealfs(['path', '--passfile', v.passfile, '--plain', '/docs/a.txt', '--json', v.cipher]).stdout)[0]
      await umount(v)
      const journalLines = datagrams()
      expect(journalLines[0]).toBe(`MESSAGE=mounted ${v.cipher} on ${v.mnt} (read-write)\nPRIORITY=5\nSYSLOG_FACILITY=3\nSYSLOG_IDENTIFIER=sealfs\nSYSLOG_PID=${/SYSLOG_PID=(\d+)/.exec(journalLines[0])?.[1] ?? ''}\n`)
      expect(journalLines.some(d => d.startsWith(`MESSAGE=unmounting ${v.mnt}: it was unmounted`))).toBe(true)
      expect(journalLines.every(d => !d.includes('plaintext') && !d.includes('a.txt'))).toBe(true)
      // A chunk changed in the cipher dir: its read is EIO, logged as an error with the file ID.
      const backingFile = path.join(v.cipher, where.backing)
      const fd = fs.openSync(backingFile, 'r+')
      const b = Buffer.alloc(1)
      fs.readSync(fd, b, 0, 1, HEADER_BYTES + 14)
      fs.writeSync(fd, Buffer.from([b[0] ^ 1]), 0, 1, HEADER_BYTES + 14)
      fs.closeSync(fd)
      // Syslog (no journal here), warnings and worse only.
      const before = datagrams().length  // the listener keeps its file open: read past what came before
      const s = run(['mount', '--passfile', v.passfile, '--log-level', 'warning', v.cipher, v.mnt], { SEALFS_JOURNAL_SOCKET: path.join(v.base, 'none'), SEALFS_SYSLOG_SOCKET: syslog })
      expect(s.status, String(s.stderr)).toBe(0)
      expect(() => fs.readFileSync(path.join(v.mnt, 'docs', 'a.txt'))).toThrow(/EIO/)
      let tamper: string | undefined
      for (let i = 0; i < 100 && tamper === undefined; i++) {  // the listener writes what it got a moment later
        tamper = datagrams().slice(before).find(d => d.includes('failed authentication'))
        if (tamper === undefined) await sleep(50)
      }
      expect(tamper).toMatch(new RegExp(`^<27>sealfs\\[\\d+\\]: file ([0-9a-f]{32}): chunk 0 failed authentication; returning EIO$`))
      const fileId = /file ([0-9a-f]{32})/.exec(tamper!)![1]
      expect(fileId).toBe(where.fileId)
      // From the log line back to the path, while the volume is mounted read-write.
      const back = sealfs(['path', '--passfile', v.passfile, '--file-id', fileId, v.cipher])
      expect(back.status, back.stderr).toBe(0)
      expect(back.stdout).toBe('/docs/a.txt\n')
      expect(sealfs(['path', '--passfile', v.passfile, '--file-id', '0'.repeat(32), v.cipher]).status).toBe(26)
      expect(sealfs(['path', '--passfile', v.passfile, '--plain', '/docs/none', v.cipher]).status).toBe(26)
      await umount(v)
      expect(datagrams().slice(before).some(d => d.includes('mounted'))).toBe(false)  // notices were below the level
      // Neither here: one warning line, at mount.
      const none = run(['mount', '--passfile', v.passfile, v.cipher, v.mnt], { SEALFS_JOURNAL_SOCKET: path.join(v.base, 'none'), SEALFS_SYSLOG_SOCKET: path.join(v.base, 'none') })
      expect(none.status).toBe(0)
      expect(none.stderr).toMatch(/^sealfs: warning: no journal \(.*\) or syslog \(.*\) here: the daemon's log lines are lost once it detaches; use --log FILE to keep them\n$/)
      await umount(v)
    } finally {
      listener.kill()
    }
    // --log with -f: a file, one timestamped line with its level each.
    const logFile = path.join(v.base, 'fg.log')
    await mountForeground(v, ['--log', logFile])
    await umount(v)
    const lines = fs.readFileSync(logFile, 'utf8').trim().split('\n')
    expect(lines[0]).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z notice sealfs\\[\\d+\\]: mounted ${v.cipher} on ${v.mnt} \\(read-write\\)$`))
    expect(lines.at(-1)).toMatch(/ notice sealfs\[\d+\]: unmounted /)
  })

  /** Whether process `pid` holds a flock (the volume lock: taken after its signal handlers, before the KDF). */
  function locks (pid: number): boolean {
    return fs.readFileSync('/proc/locks', 'utf8').split('\n').some(l => / FLOCK /.test(l) && l.split(/\s+/)[4] === String(pid))
  }
  /** The detached daemon child of a mount of `cipher`, once it runs. */
  function daemonChildOf (cipher: string): number | null {
    for (const p of fs.readdirSync('/proc').filter(x => /^\d+$/.test(x))) {
      try {
        const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')
        if (argv.includes('--passphrase-fd') && argv.includes(cipher)) return Number(p)
      } catch { /* gone */ }
    }
    return null
  }
  function exited (child: ReturnType<typeof spawn>): Promise<number | null> {
    return new Promise(resolve => { if (child.exitCode !== null) resolve(child.exitCode); else child.once('exit', code => resolve(code)) })
  }

  it('Ctrl-C (to the terminal\'s process group) or SIGTERM while the volume unlocks cancels the mount: exit 25, nothing mounted, no daemon left', async () => {
    // A KDF that takes over a second, so that the signal comes while it runs.
    const slow = path.join(v.base, 'slow')
    fs.mkdirSync(slow)
    const made = sealfs(['init', '--passfile', v.passfile, '--kdf-opslimit', '2', '--kdf-memlimit', '1G', slow])
    expect(made.status, made.stderr).toBe(0)
    // Detached: the parent, a process-group leader like a shell's job, gets SIGINT as Ctrl-C sends it.
    const parent = spawn(process.execPath, [CLI, 'mount', '--passfile', v.passfile, slow, v.mnt], { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
    let err = ''
    parent.stderr!.on('data', d => { err += d.toString() })
    let child: number | null = null
    for (let i = 0; i < 500 && (child === null || !locks(child)); i++) {
      await sleep(10)
      child ??= daemonChildOf(slow)
    }
    expect(child).not.toBeNull()
    process.kill(-parent.pid!, 'SIGINT')
    expect(await exited(parent)).toBe(25)
    expect(err).toBe('sealfs: mount cancelled (SIGINT): nothing is mounted\n')
    expect(fs.existsSync(`/proc/${child!}`)).toBe(false)
    await sleep(300)
    expect(isMounted(v.mnt)).toBe(false)
    // In the foreground (-f, as systemd runs it): SIGTERM.
    const fg = spawn(process.execPath, [CLI, 'mount', '-f', '--passfile', v.passfile, slow, v.mnt], { stdio: ['ignore', 'ignore', 'pipe'] })
    let fgErr = ''
    fg.stderr!.on('data', d => { fgErr += d.toString() })
    for (let i = 0; i < 500 && !locks(fg.pid!); i++) await sleep(10)
    fg.kill('SIGTERM')
    expect(await exited(fg)).toBe(25)
    expect(fgErr).toBe('sealfs: mount cancelled (SIGTERM): nothing is mounted\n')
    await sleep(300)
    expect(isMounted(v.mnt)).toBe(false)
    const after = sealfs(['mount', '--passfile', v.passfile, slow, v.mnt])  // the lock was given back
    expect(after.status, after.stderr).toBe(0)
    await umount(v)
  })

  it('a detached daemon\'s reasons for failing reach the terminal (libfuse\'s own line, a bad --log, a daemon that cannot start), each said once', () => {
    // In a mount namespace of its own, /dev holds no fuse device: libfuse says what to do.
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && exec "$0" "$1" mount --passfile "$2" "$3" "$4"', process.execPath, CLI, v.passfile, v.cipher, v.mnt], { encoding: 'utf8' })
    expect(r.status, r.stderr).toBe(9)
    expect(r.stderr).toMatch(/^fuse: device not found, try 'modprobe fuse' first$/m)
    // Without /dev/null the daemon cannot even start: one line, no stack trace.
    const noNull = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs tmpfs /dev && exec "$0" "$1" mount --passfile "$2" "$3" "$4"', process.execPath, CLI, v.passfile, v.cipher, v.mnt], { encoding: 'utf8' })
    expect(noNull.status).toBe(9)
    expect(noNull.stderr).toBe('sealfs: cannot start the sealfs daemon: ENOENT\n')
    expect(r.stderr.match(/cannot mount/g)).toHaveLength(1)
    expect(isMounted(v.mnt)).toBe(false)
    const badLog = sealfs(['mount', '--passfile', v.passfile, '--log', path.join(v.base, 'no-such-dir', 'log'), v.cipher, v.mnt])
    expect(badLog.status).toBe(2)
    expect(badLog.stderr).toBe(`sealfs: cannot open the log file ${path.join(v.base, 'no-such-dir', 'log')}: ENOENT\n`)
    const debug = sealfs(['mount', '--passfile', v.passfile, '-o', 'debug', v.cipher, v.mnt])
    expect(debug.status).toBe(2)
    expect(debug.stderr).toMatch(/-o debug prints every request on standard error: use it with -f/)
    expect(isMounted(v.mnt)).toBe(false)
  })

  it('says "permission denied" (exit 27) for another user\'s volume, and which Argon2id bound a cost crosses', () => {
    // A volume root owns, in a directory only root may enter, and one whose config only root may read.
    const closed = path.join(v.base, 'closed')
    fs.mkdirSync(closed, { mode: 0o700 })
    const inner = path.join(closed, 'cipher')
    fs.mkdirSync(inner)
    const mnt = path.join(v.base, 'nobody-mnt')
    fs.mkdirSync(mnt)
    fs.chownSync(mnt, 65534, 65534)
    const baseMode = fs.statSync(v.base).mode & 0o7777
    fs.chmodSync(v.base, 0o755)  // nobody may reach into it, as far as the directories it checks
    try {
      const asNobody = (args: string[]): ReturnType<typeof spawnSync> => spawnSync('runuser', ['-u', 'nobody', '--', process.execPath, CLI, ...args], { encoding: 'utf8' })
      for (const args of [['mount', '--passfile', '/dev/null', inner, mnt], ['info', inner], ['init', inner]]) {
        const r = asNobody(args)
        expect(r.status, String(r.stderr)).toBe(27)
        expect(r.stderr).toBe(`sealfs: ${inner} cannot be reached: permission denied (it belongs to another user; run sealfs as that user, or as root)\n`)
      }
      const conf = path.join(v.cipher, 'sealfs.conf')
      expect(fs.statSync(conf).mode & 0o777).toBe(0o600)
      const info = asNobody(['info', v.cipher])
      expect(info.status).toBe(27)
      expect(info.stderr).toBe(`sealfs: cannot read ${conf}: permission denied (the volume belongs to another user; run sealfs as that user, or as root)\n`)
      const high = sealfs(['init', '--passfile', v.passfile, '--kdf-memlimit', '8G', inner])
      expect(high.status).toBe(10)
      expect(high.stderr).toBe('sealfs: Argon2id memlimit 8 GiB is above the ceiling of 4 GiB\n')
      const low = sealfs(['init', '--passfile', v.passfile, '--kdf-memlimit', '32M', inner])
      expect(low.stderr).toBe('sealfs: Argon2id memlimit 32 MiB is below the floor of 64 MiB\n')
      expect(fs.readdirSync(inner)).toEqual([])
    } finally {
      fs.chmodSync(v.base, baseMode)
    }
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
