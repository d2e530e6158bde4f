import { execFileSync, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Vol, cleanup, makeVolume, mount, mountForeground, plainBeside, sleep, takeDown, umount } from './helpers'

function statNs (p: string): { atime: bigint, mtime: bigint } {
  const s = fs.lstatSync(p, { bigint: true })
  return { atime: s.atimeNs, mtime: s.mtimeNs }
}

describe('filesystem operations, side by side with a plain directory', () => {
  let v: Vol
  let plain: string
  beforeAll(() => {
    v = makeVolume()
    plain = plainBeside(v)
    mount(v)
  })
  afterAll(async () => { await cleanup(v) })

  /** Runs `fn` on both roots; results must match. */
  function both<T> (fn: (root: string) => T): T {
    const a = fn(plain)
    const b = fn(v.mnt)
    expect(b).toEqual(a)
    return b
  }

  it('mkdir, readdir, rmdir, create, unlink, rename (also over an existing file and directory)', () => {
    both(r => { fs.mkdirSync(path.join(r, 'd1/d2'), { recursive: true }); return fs.readdirSync(r).sort() })
    both(r => { fs.writeFileSync(path.join(r, 'd1/f'), 'one'); fs.writeFileSync(path.join(r, 'g'), 'two'); return fs.readdirSync(path.join(r, 'd1')).sort() })
    both(r => { fs.renameSync(path.join(r, 'g'), path.join(r, 'd1/f')); return [fs.readFileSync(path.join(r, 'd1/f'), 'utf8'), fs.readdirSync(r).sort()] })
    both(r => { fs.mkdirSync(path.join(r, 'empty')); fs.renameSync(path.join(r, 'd1'), path.join(r, 'empty')); return [fs.readdirSync(r).sort(), fs.readdirSync(path.join(r, 'empty/d2'))] })
    both(r => { try { fs.rmdirSync(path.join(r, 'empty')); return 'ok' } catch (e) { return (e as NodeJS.ErrnoException).code } })
    both(r => { fs.unlinkSync(path.join(r, 'empty/f')); fs.rmdirSync(path.join(r, 'empty/d2')); fs.rmdirSync(path.join(r, 'empty')); return fs.readdirSync(r) })
    both(r => { try { fs.mkdirSync(r + '/x'); fs.mkdirSync(r + '/x'); return 'ok' } catch (e) { return (e as NodeJS.ErrnoException).code } })
    both(r => { try { fs.readFileSync(r + '/missing'); return 'ok' } catch (e) { return (e as NodeJS.ErrnoException).code } })
    both(r => { try { fs.writeFileSync(r + '/' + 'n'.repeat(256), ''); return 'ok' } catch (e) { return (e as NodeJS.ErrnoException).code } })
    both(r => { fs.writeFileSync(r + '/' + 'n'.repeat(255), 'long'); return fs.readFileSync(r + '/' + 'n'.repeat(255), 'utf8') })
    both(r => { fs.renameSync(r + '/' + 'n'.repeat(255), r + '/x/' + 'm'.repeat(200)); return fs.readdirSync(r + '/x') })
  })

  it('truncate and ftruncate grow and shrink mid-chunk; fstat sees writes through the descriptor', () => {
    both(r => {
      const f = path.join(r, 't')
      fs.writeFileSync(f, Buffer.alloc(100_000, 7))
      fs.truncateSync(f, 40_000)
      fs.truncateSync(f, 70_001)
      const fd = fs.openSync(f, 'r+')
      fs.ftruncateSync(fd, 33_333)
      fs.writeSync(fd, Buffer.from('end'), 0, 3, 50_000)
      const size = fs.fstatSync(fd).size
      fs.ftruncateSync(fd, 65_537)
      const size2 = fs.fstatSync(fd).size
      fs.closeSync(fd)
      return [size, size2, fs.readFileSync(f).toString('base64')]
    })
  })

  it('O_APPEND writes land at the end, also with another descriptor extending the file', () => {
    both(r => {
      const f = path.join(r, 'ap')
      const a = fs.openSync(f, 'a')
      fs.writeSync(a, 'abc')
      const w = fs.openSync(f, 'r+')
      fs.writeSync(w, 'XXXXXXXX', 10)
      fs.writeSync(a, 'Z')
      fs.closeSync(a); fs.closeSync(w)
      return fs.readFileSync(f).toString('hex')
    })
  })

  it('symlink, readlink, chmod, chown, statfs, fsync', () => {
    both(r => { fs.symlinkSync('../some/target with spaces', path.join(r, 'l')); return [fs.readlinkSync(path.join(r, 'l')), fs.lstatSync(path.join(r, 'l')).size] })
    both(r => { fs.writeFileSync(path.join(r, 'm'), 'x'); fs.chmodSync(path.join(r, 'm'), 0o640); return fs.statSync(path.join(r, 'm')).mode })
    both(r => { fs.chownSync(path.join(r, 'm'), 1234, 5678); const s = fs.statSync(path.join(r, 'm')); return [s.uid, s.gid] })
    both(r => { const fd = fs.openSync(path.join(r, 'm'), 'r+'); fs.writeSync(fd, 'yz', 1); fs.fsyncSync(fd); fs.fdatasyncSync(fd); fs.closeSync(fd); return fs.readFileSync(path.join(r, 'm'), 'utf8') })
    const s = fs.statfsSync(v.mnt)
    expect(s.bsize).toBeGreaterThan(0)
    expect(s.blocks).toBeGreaterThan(0)
  })

  it('access(2) and chdir answer as on a plain directory (a mount without allow_other answers them itself)', () => {
    const modes = [['R', fs.constants.R_OK], ['W', fs.constants.W_OK], ['X', fs.constants.X_OK], ['F', fs.constants.F_OK]] as const
    both(r => {
      fs.writeFileSync(path.join(r, 'plainfile'), 'x'); fs.chmodSync(path.join(r, 'plainfile'), 0o444)
      fs.writeFileSync(path.join(r, 'script'), 'x'); fs.chmodSync(path.join(r, 'script'), 0o100)
      fs.mkdirSync(path.join(r, 'closed')); fs.chmodSync(path.join(r, 'closed'), 0o000)
      return ['plainfile', 'script', 'closed', 'missing'].map(n => modes.map(([m, bit]) => {
        try { fs.accessSync(path.join(r, n), bit); return `${n} ${m} ok` } catch (e) { return `${n} ${m} ${(e as NodeJS.ErrnoException).code}` }
      }))
    })
    both(r => spawnSync('sh', ['-c', 'cd "$1" && pwd >/dev/null && echo in', 'sh', path.join(r, 'closed')], { encoding: 'utf8' }).stdout)
  })

  it('sets atime and mtime with nanosecond precision, UTIME_OMIT and UTIME_NOW', () => {
    const times = both(r => {
      const f = path.join(r, 'times')
      fs.writeFileSync(f, 'x')
      execFileSync('touch', ['-d', '2001-02-03 04:05:06.123456789', f])
      const t1 = statNs(f)
      execFileSync('touch', ['-m', '-d', '2011-12-13 14:15:16.987654321', f])  // atime omitted
      const t2 = statNs(f)
      execFileSync('touch', ['-a', '-d', '1999-01-01 00:00:00.000000001', f])  // mtime omitted
      const t3 = statNs(f)
      return [t1, t2, t3].map(t => [String(t.atime), String(t.mtime)])
    })
    expect(times[0]).toEqual(['981173106123456789', '981173106123456789'])
    expect(times[1]).toEqual(['981173106123456789', '1323785716987654321'])
    expect(times[2]).toEqual(['915148800000000001', '1323785716987654321'])
    const f = path.join(v.mnt, 'times')
    const before = BigInt(Date.now() - 5000) * 1_000_000n
    execFileSync('touch', [f])  // UTIME_NOW in both slots
    const now = statNs(f)
    expect(now.atime > before && now.mtime > before).toBe(true)
  })

  it('hard links share contents and size at once through every name', () => {
    both(r => {
      fs.writeFileSync(path.join(r, 'h1'), 'first')
      fs.linkSync(path.join(r, 'h1'), path.join(r, 'h2'))
      fs.appendFileSync(path.join(r, 'h2'), ' and more')
      const res = [fs.statSync(path.join(r, 'h1')).size, fs.statSync(path.join(r, 'h1')).nlink, fs.readFileSync(path.join(r, 'h1'), 'utf8')]
      fs.unlinkSync(path.join(r, 'h1'))
      return [...res, fs.readFileSync(path.join(r, 'h2'), 'utf8'), fs.statSync(path.join(r, 'h2')).nlink]
    })
  })
})

describe('the FUSE binding', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume() })
  afterEach(async () => { await takeDown(v.base) })  // the test's finally: no mount or daemon outlives it
  afterAll(async () => { await cleanup(v) })

  it('carries write and read requests of 1 MiB; a re-read comes from the page cache', async () => {
    const fg = await mountForeground(v, ['-o', 'debug'])
    const data = Buffer.alloc(4 * 1024 * 1024, 3)
    const fd = fs.openSync(path.join(v.mnt, 'big'), 'w')
    fs.writeSync(fd, data)
    fs.closeSync(fd)
    await umount(v)
    const fg2 = await mountForeground(v, ['-o', 'debug'])
    expect(fs.readFileSync(path.join(v.mnt, 'big')).equals(data)).toBe(true)
    // keep_cache: a second open and read is served from the page cache, with no READ request.
    fs.statfsSync(v.mnt)  // a marker in the request log
    expect(fs.readFileSync(path.join(v.mnt, 'big')).equals(data)).toBe(true)
    // Read requests follow the kernel's readahead window, which the daemon (root here) widens to 1 MiB.
    const dev = execFileSync('mountpoint', ['-d', v.mnt], { encoding: 'utf8' }).trim()
    expect(fs.readFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, 'utf8').trim()).toBe('1024')
    await umount(v)
    // libfuse's request log: a WRITE of 1 MiB is 80 bytes of headers plus the data; a READ's
    // reply is 16 bytes of header plus 1 MiB.
    expect(fg.log()).toMatch(/opcode: WRITE \(16\), nodeid: \d+, insize: 1048656/)
    expect(fg2.log()).toMatch(/success, outsize: 1048592/)
    const [first, second] = fg2.log().split(/opcode: STATFS/)
    expect(first).toMatch(/opcode: READ /)
    expect(second).toMatch(/opcode: (OPEN|GETATTR|LOOKUP)/)
    expect(second).not.toMatch(/opcode: READ /)
  })
})

/**
 * strace -f -y of the volume's daemon (its pid from sealfs.lock) for the given syscalls, once
 * it has attached; stop() ends it and gives what it wrote, a line per call led by the thread id.
 */
async function traceDaemon (v: Vol, calls: string): Promise<{ pid: number, stop: () => Promise<string> }> {
  const pid = Number(fs.readFileSync(path.join(v.cipher, 'sealfs.lock'), 'utf8').trim())
  const out = path.join(v.base, `strace-${calls.split(',')[0]}.out`)
  const tracer = spawn('strace', ['-f', '-y', '-e', `trace=${calls}`, '-o', out, '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] })
  const exited = new Promise(resolve => { tracer.on('exit', resolve); tracer.on('error', resolve) })
  let attached = ''
  tracer.stderr!.on('data', d => { attached += d.toString() })
  for (let i = 0; i < 100 && !/attached/.test(attached) && tracer.exitCode === null; i++) await sleep(50)
  expect(attached, 'strace did not attach to the daemon').toMatch(/attached/)
  return {
    pid,
    stop: async () => {
      tracer.kill('SIGINT')
      await exited
      return fs.readFileSync(out, 'utf8')
    }
  }
}

describe('fsync on a directory', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume() })
  afterEach(async () => { await takeDown(v.base) })  // the test's finally
  afterAll(async () => { await cleanup(v) })

  it('fsyncs the backing directory (seen with strace on the daemon)', async () => {
    mount(v)
    fs.mkdirSync(path.join(v.mnt, 'd'))
    fs.writeFileSync(path.join(v.mnt, 'd', 'f'), 'new entry')
    const trace = await traceDaemon(v, 'fsync,fdatasync')
    const fd = fs.openSync(path.join(v.mnt, 'd'), 'r')
    try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
    const traced = await trace.stop()
    const backingDir = fs.readdirSync(v.cipher).find(n => !n.includes('.') && fs.statSync(path.join(v.cipher, n)).isDirectory())!
    const escaped = `${v.cipher}/${backingDir}`.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    expect(traced).toMatch(new RegExp(`fsync\\(\\d+<${escaped}>\\) += 0`))
  })
})

describe('the daemon\'s JS thread and the disk', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume() })
  afterEach(async () => { await takeDown(v.base) })  // the test's finally
  afterAll(async () => { await cleanup(v) })

  it('never waits for a flush itself: the index\'s commits, directory IDs, sidecars and fsync run on other threads (strace)', async () => {
    mount(v)
    const trace = await traceDaemon(v, 'fsync,fdatasync,sync_file_range')
    for (let i = 0; i < 5; i++) {
      fs.mkdirSync(path.join(v.mnt, `d${i}`))
      fs.writeFileSync(path.join(v.mnt, `d${i}`, 'l'.repeat(200)), 'a file with a long name')
      const fd = fs.openSync(path.join(v.mnt, `d${i}`, 'f'), 'w')
      fs.writeSync(fd, Buffer.alloc(100_000, i))
      fs.fsyncSync(fd)
      fs.closeSync(fd)
    }
    await sleep(1500)  // the index is flushed once a second
    const calls = (await trace.stop()).split('\n').filter(l => /^\d+ +(fsync|fdatasync|sync_file_range)\(/.test(l))
    expect(calls.some(l => /sealfs\.index/.test(l)), calls.join('\n')).toBe(true)
    expect(calls.some(l => /sealfs\.diriv/.test(l)), calls.join('\n')).toBe(true)
    expect(calls.filter(l => Number(l.split(' ')[0]) === trace.pid), 'syncs on the JS thread').toEqual([])
  })
})

describe('renaming a directory', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume(); mount(v) })
  afterAll(async () => { await cleanup(v) })

  it('moves a directory with many entries without touching their ciphertext', () => {
    fs.mkdirSync(path.join(v.mnt, 'big'))
    for (let i = 0; i < 500; i++) fs.writeFileSync(path.join(v.mnt, 'big', `f${i}`), `file ${i}`)
    const before = fs.readdirSync(v.cipher).filter(n => !n.includes('.'))
    const backingDir = before.find(n => fs.statSync(path.join(v.cipher, n)).isDirectory())!
    const inner = new Map(fs.readdirSync(path.join(v.cipher, backingDir)).map(n => [n, fs.statSync(path.join(v.cipher, backingDir, n)).mtimeMs]))
    fs.mkdirSync(path.join(v.mnt, 'elsewhere'))
    fs.renameSync(path.join(v.mnt, 'big'), path.join(v.mnt, 'elsewhere', 'renamed'))
    const movedDir = fs.readdirSync(v.cipher).filter(n => !n.includes('.') && fs.statSync(path.join(v.cipher, n)).isDirectory())
    expect(movedDir.length).toBe(1)
    const sub = fs.readdirSync(path.join(v.cipher, movedDir[0])).filter(n => !n.includes('.'))
    expect(sub.length).toBe(1)
    const after = path.join(v.cipher, movedDir[0], sub[0])
    // Same backing names (the directory's ID moved with it) and untouched files.
    expect(new Map(fs.readdirSync(after).map(n => [n, fs.statSync(path.join(after, n)).mtimeMs]))).toEqual(inner)
    expect(fs.readFileSync(path.join(v.mnt, 'elsewhere', 'renamed', 'f321'), 'utf8')).toBe('file 321')
  })
})
