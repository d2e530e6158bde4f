import { ChildProcess, execFileSync, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cleanup, isMounted, makeVolume, mount, mountForeground, removeTree, sealfs, sleep, tempDir, umount, Vol } from './helpers'
import { CHUNK, modelSeeds, modelSteps, modelTimeoutMs, runModel } from './model'

/** Every process descending from `pid` (from /proc: the parent pid in each process's stat). */
function descendantsOf (pid: number): number[] {
  const parent = new Map<number, number>()
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8')
      parent.set(Number(p), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch { /* gone */ }
  }
  const out: number[] = []
  const visit = (pp: number): void => {
    for (const [c, par] of parent) if (par === pp) { out.push(c); visit(c) }
  }
  visit(pid)
  return out
}

// The cipher dir on a real network filesystem: sshfs over an sshd that this test starts on
// loopback (Debian's openssh-server and sshfs, installed by .ci/run).
describe('a cipher dir on sshfs', () => {
  const base = tempDir('net')
  const remote = path.join(base, 'remote')
  const sshfsMnt = path.join(base, 'sshfs')
  const port = 20000 + Math.floor(Math.random() * 20000)
  let sshd: ChildProcess
  let v: Vol

  beforeAll(async () => {
    fs.mkdirSync(remote)
    fs.mkdirSync(sshfsMnt)
    const key = path.join(base, 'client_key')
    const hostKey = path.join(base, 'host_key')
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key])
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey])
    fs.copyFileSync(key + '.pub', path.join(base, 'authorized_keys'))
    const config = path.join(base, 'sshd_config')
    fs.writeFileSync(config, [
      `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `PidFile ${base}/sshd.pid`,
      `AuthorizedKeysFile ${base}/authorized_keys`, 'PermitRootLogin prohibit-password', 'StrictModes no',
      'UsePAM no', 'PasswordAuthentication no', 'Subsystem sftp internal-sftp'
    ].join('\n') + '\n')
    // sshd insists on its privilege-separation directory /run/sshd. Rather than create it on
    // the host, sshd runs in a mount namespace of its own with a private tmpfs on /run.
    sshd = spawn('unshare', ['-m', '--propagation', 'private', 'sh', '-c',
      'mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -D -e -f "$0"', config], { stdio: 'ignore' })
    let ok = false
    for (let i = 0; i < 50 && !ok; i++) {
      await sleep(100)
      try {
        execFileSync('sshfs', [`root@127.0.0.1:${remote}`, sshfsMnt, '-p', String(port), '-o',
          `IdentityFile=${key},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR,dir_cache=no,attr_timeout=0`], { stdio: 'ignore' })
        ok = true
      } catch { /* sshd not listening yet */ }
    }
    expect(ok).toBe(true)
    v = makeVolume({ chunkSize: CHUNK, cipherParent: sshfsMnt })
    mount(v)
  })

  afterAll(async () => {
    try {
      if (v !== undefined) await cleanup(v)
    } finally {
      sshd?.kill()
      await removeTree(base)  // unmounts the sshfs
    }
  })

  it('the cipher dir really is on sshfs', () => {
    const line = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find(l => l.split(' ')[4] === sshfsMnt)
    expect(line).toMatch(/fuse\.sshfs/)
    expect(fs.readdirSync(remote).length).toBe(1)
  })

  it('renaming a directory onto a non-empty one fails with ENOTEMPTY, as on a local directory (SFTP itself says EPERM)', () => {
    const plain = path.join(base, 'rename-plain')
    fs.mkdirSync(plain)
    const attempt = (root: string): string => {
      fs.mkdirSync(path.join(root, 'src'))
      fs.mkdirSync(path.join(root, 'full'))
      fs.writeFileSync(path.join(root, 'full', 'x'), 'x')
      try { fs.renameSync(path.join(root, 'src'), path.join(root, 'full')); return 'ok' } catch (e) { return (e as NodeJS.ErrnoException).code ?? '?' }
    }
    expect(attempt(plain)).toBe('ENOTEMPTY')
    expect(attempt(v.mnt)).toBe('ENOTEMPTY')
    expect(fs.readdirSync(path.join(v.mnt, 'full'))).toEqual(['x'])
  })

  it('a non-root user\'s symlink, FIFO and file under allow_other are made and theirs, or refused with nothing left behind', async () => {
    await umount(v)
    fs.chmodSync(v.base, 0o755)
    mount(v, ['-o', 'allow_other'])
    try {
      fs.chmodSync(v.mnt, 0o755)
      fs.mkdirSync(path.join(v.mnt, 'shared'), 0o777)
      fs.chmodSync(path.join(v.mnt, 'shared'), 0o1777)
      const names = ['s'.repeat(200), 'f'.repeat(200), 'r'.repeat(200), 'short-link']  // long names have sidecars
      const r = spawnSync('runuser', ['-u', 'nobody', '--', 'python3', '-c', `
import os, sys, json, errno
def e(f):
    try:
        f(); return 'ok'
    except OSError as x:
        return errno.errorcode[x.errno]
d = sys.argv[1]
print(json.dumps([e(lambda: os.symlink('t', d + '/${names[0]}')), e(lambda: os.mkfifo(d + '/${names[1]}')),
                  e(lambda: open(d + '/${names[2]}', 'w').close()), e(lambda: os.symlink('t', d + '/${names[3]}'))]))`, path.join(v.mnt, 'shared')], { encoding: 'utf8' })
      expect(r.status, r.stderr).toBe(0)
      const results = JSON.parse(r.stdout) as string[]
      // SFTP can chown a file but not a symlink (it follows it) and cannot mknod: those are refused.
      expect(results).toEqual(['EPERM', 'EPERM', 'ok', 'EPERM'])
      const listed = fs.readdirSync(path.join(v.mnt, 'shared'))
      names.forEach((n, i) => {
        if (results[i] === 'ok') expect(fs.lstatSync(path.join(v.mnt, 'shared', n)).uid, n).toBe(65534)
        else expect(listed, `${n}: ${results[i]}`).not.toContain(n)
      })
      // In the backing directory: one entry (and one sidecar for a long name) per entry made; nothing else.
      const ino = fs.statSync(path.join(v.mnt, 'shared')).ino  // the mount shows the backing entry's inode number
      const backingDir = fs.readdirSync(v.cipher).find(n => fs.lstatSync(path.join(v.cipher, n)).ino === ino)!
      const backing = fs.readdirSync(path.join(v.cipher, backingDir)).filter(n => n !== 'sealfs.diriv')
      const made = names.filter((_n, i) => results[i] === 'ok')
      expect(backing.length, JSON.stringify(results)).toBe(made.length + made.filter(n => n.length > 100).length)
    } finally {
      await umount(v)
      mount(v)
    }
  })

  // One seed unless SEALFS_MODEL_SEEDS names them.
  for (const seed of process.env.SEALFS_MODEL_SEEDS !== undefined ? modelSeeds : modelSeeds.slice(0, 1)) {
    it(`passes the model test (seed ${seed}, ${modelSteps} steps)`, async () => {
      const plainSide = path.join(base, `plain-${seed}`)
      const mntSide = path.join(v.mnt, `seed-${seed}`)
      fs.mkdirSync(plainSide)
      fs.mkdirSync(mntSide)
      try {
        await runModel(mntSide, plainSide, seed, modelSteps, async () => { await umount(v); mount(v) }, { timeResolutionNs: 1_000_000_000n, linkCounts: false, symlinkTimes: false })
      } catch (e) {
        console.error(`network model test failed: SEALFS_MODEL_SEED=${seed} SEALFS_MODEL_STEPS=${modelSteps}`)
        throw e
      }
    }, modelTimeoutMs)
  }

  it('leaves entries it cannot decrypt out of listings, logs each once, and never fails the directory', async () => {
    await umount(v)
    const fg = await mountForeground(v)
    fs.writeFileSync(path.join(v.mnt, 'real'), 'ok')
    fs.writeFileSync(path.join(v.cipher, 'strayfile'), 'dropped in by someone')
    fs.writeFileSync(path.join(v.cipher, '.nfs000000000123'), 'silly rename')
    fs.writeFileSync(path.join(v.cipher, '.fuse_hidden0000000a00000001'), 'hidden')
    for (let i = 0; i < 3; i++) {
      const names = fs.readdirSync(v.mnt)
      expect(names).toContain('real')
      expect(names.some(n => n.includes('stray') || n.startsWith('.'))).toBe(false)
    }
    await umount(v)
    const log = fg.log()
    expect(log.match(/does not decrypt/g)?.length).toBe(1)  // strayfile, once; dotted names are never ours
    expect(log).not.toMatch(/real|silly/)
  })

  it('while a request waits on a stopped sshd, the mount still answers: a stat of a cached directory, the rest of an open listing (a slow backing never stalls the mount)', async () => {
    const a = path.join(v.mnt, 'stall-a')
    const b = path.join(v.mnt, 'stall-b')
    await umount(v)  // the test before may have left it unmounted
    mount(v)
    fs.mkdirSync(a)
    const listed = path.join(v.mnt, 'stall-list')
    fs.mkdirSync(listed)
    for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(listed, `entry-${String(i).padStart(4, '0')}-${'n'.repeat(60)}`), '')
    fs.writeFileSync(b, 'b'.repeat(100_000))
    await umount(v)  // nothing of B cached anywhere above sshfs
    mount(v)
    const exitOf = (child: ChildProcess): Promise<number> => new Promise(resolve => child.on('exit', () => resolve(Date.now())))
    fs.statSync(a)  // A warm
    // A reader that has the first page of a listing (the daemon read the directory from sshd
    // then) and reads the rest, which the daemon serves from that listing, when told to.
    const lister = spawn('python3', ['-c', `
import os, sys
it = os.scandir(sys.argv[1]); first = next(it).name
sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.readline()
print(1 + sum(1 for _ in it)); sys.stdout.flush()`, listed], { stdio: ['pipe', 'pipe', 'ignore'] })
    let listOut = ''
    lister.stdout!.on('data', d => { listOut += d.toString() })
    const listDone = exitOf(lister)
    for (let i = 0; i < 100 && !listOut.includes('ready'); i++) await sleep(50)
    expect(listOut).toContain('ready')
    let listMs = -1
    // The sshd this test started and its per-connection children (which serve the SFTP
    // session), by pid: stopped, the backing answers nothing until SIGCONT.
    const tree = [sshd.pid!, ...descendantsOf(sshd.pid!)]
    let readB: ChildProcess | undefined
    let bDone: Promise<number> | undefined
    let bOut = ''
    let aMs = -1
    let aOk = false
    const stopped = Date.now()
    for (const pid of tree) process.kill(pid, 'SIGSTOP')
    try {
      readB = spawn('cat', [b], { stdio: ['ignore', 'pipe', 'ignore'] })
      readB.stdout!.on('data', d => { bOut += d.toString() })
      bDone = exitOf(readB)
      await sleep(500)  // B's read is waiting on sshd now
      const t0 = Date.now()
      const statA = spawn('stat', ['-c', '%F', a], { stdio: ['ignore', 'pipe', 'ignore'] })
      let aOut = ''
      statA.stdout!.on('data', d => { aOut += d.toString() })
      const aDone = exitOf(statA)
      const done = await Promise.race([aDone, sleep(5000).then(() => -1)])
      if (done === -1) statA.kill('SIGKILL')
      else { aMs = done - t0; aOk = statA.exitCode === 0 && aOut.trim() === 'directory' }
      const t1 = Date.now()
      lister.stdin!.write('go\n')
      const listed = await Promise.race([listDone, sleep(5000).then(() => -1)])
      if (listed === -1) lister.kill('SIGKILL')
      else listMs = listed - t1
      await sleep(Math.max(0, 4000 - (Date.now() - stopped)))  // sshd stopped for at least 4 s
    } finally {
      for (const pid of tree) { try { process.kill(pid, 'SIGCONT') } catch { /* gone */ } }
    }
    const resumed = Date.now()
    const bEnd = await Promise.race([bDone!, sleep(30_000).then(() => -1)])
    if (bEnd === -1) readB!.kill('SIGKILL')
    console.log(`sshd stopped for ${resumed - stopped} ms; stat of A took ${aMs < 0 ? 'more than 5000 (killed)' : aMs} ms; ` +
      `the rest of the listing ${listMs < 0 ? 'more than 5000 (killed)' : listMs} ms; ` +
      `B's read ${bEnd < 0 ? 'did not finish within 30 s of SIGCONT' : `finished ${bEnd - resumed} ms after SIGCONT`}`)
    expect(aMs, 'stat of A did not complete within 5 s while sshd was stopped').toBeGreaterThanOrEqual(0)
    expect(aMs).toBeLessThan(3000)
    expect(aOk).toBe(true)
    expect(listMs, 'the rest of the open listing did not come within 5 s while sshd was stopped').toBeGreaterThanOrEqual(0)
    expect(listOut.trim().split('\n').pop()).toBe('300')
    expect(bEnd, 'B\'s read did not complete after SIGCONT').toBeGreaterThan(0)
    expect(bEnd).toBeGreaterThanOrEqual(resumed)  // it really waited on sshd
    expect(bOut).toBe('b'.repeat(100_000))
  }, 90_000)

  it('one read-write mount across clients: a second sshfs client is refused while the lease is renewed; a dead writer\'s lease is taken over at once, another host\'s once it stops being renewed', async () => {
    // A second sshfs mount of the same directory is a client of its own, with its own flock
    // table: flock(2) alone let both mount the volume read-write.
    const sshfs2 = path.join(base, 'sshfs2')
    const mnt2 = path.join(base, 'mnt2')
    fs.mkdirSync(sshfs2)
    fs.mkdirSync(mnt2)
    execFileSync('sshfs', [`root@127.0.0.1:${remote}`, sshfs2, '-p', String(port), '-o',
      `IdentityFile=${path.join(base, 'client_key')},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,LogLevel=ERROR,dir_cache=no,attr_timeout=0`], { stdio: 'ignore' })
    const v2: Vol = { ...v, cipher: path.join(sshfs2, path.relative(sshfsMnt, v.cipher)), mnt: mnt2 }
    const leaseFile = path.join(v.cipher, 'sealfs.lease')
    const lease = (): { pid: number, seq: number, host: string, token: string } => JSON.parse(fs.readFileSync(leaseFile, 'utf8'))
    const tryMount = (w: Vol): ReturnType<typeof sealfs> => sealfs(['mount', '--passfile', w.passfile, w.cipher, w.mnt])
    let renewing: ChildProcess | null = null
    try {
      if (!isMounted(v.mnt)) mount(v)
      const first = lease()
      let r = tryMount(v2)
      expect(r.status, r.stderr).toBe(11)
      expect(r.stderr).toMatch(/mounted read-write by another client \(host .*, pid \d+, per sealfs.lease\)/)
      expect(isMounted(mnt2)).toBe(false)
      expect(lease().token).toBe(first.token)  // still the first writer's (whose renewal may have come meanwhile)
      await sleep(5500)
      expect(lease().seq, 'renewed every 5 s').toBeGreaterThan(first.seq)
      // A clean unmount gives the lease back: the other client may write now, and this one not.
      await umount(v)
      expect(fs.existsSync(leaseFile)).toBe(false)
      mount(v2)
      r = tryMount(v)
      expect(r.status, r.stderr).toBe(11)
      fs.writeFileSync(path.join(mnt2, 'from-second-client'), 'hello')
      // The second client's daemon killed: its lease names a process of this host and boot that is gone.
      const dead = lease().pid
      expect(fs.readFileSync(`/proc/${dead}/cmdline`, 'latin1')).toMatch(/sealfs\.js\0mount\0/)  // our daemon, nothing else
      process.kill(dead, 'SIGKILL')
      for (let i = 0; i < 100 && fs.existsSync(`/proc/${dead}`); i++) await sleep(50)
      spawnSync('fusermount3', ['-uz', mnt2])
      mount(v)
      expect(fs.readFileSync(path.join(v.mnt, 'from-second-client'), 'utf8')).toBe('hello')
      await umount(v)
      // Another host's lease, renewed (by a process of its own: the mount below blocks this
      // one): refused. Not renewed: taken over after two periods.
      renewing = spawn('sh', ['-c', 'i=0; while :; do printf \'{"host":"elsewhere.example","boot":"b","pidns":"pid:[1]","pid":4242,"start":"7","token":"aa","seq":%d}\\n\' $i > "$0"; i=$((i+1)); sleep 1; done', leaseFile], { stdio: 'ignore' })
      await sleep(500)
      r = tryMount(v)
      expect(r.status, r.stderr).toBe(11)
      expect(r.stderr).toMatch(/host elsewhere\.example, pid 4242/)
      renewing.kill()
      await new Promise(resolve => renewing!.exitCode !== null || renewing!.signalCode !== null ? resolve(null) : renewing!.once('exit', resolve))
      renewing = null
      const t0 = Date.now()
      r = tryMount(v)
      expect(r.status, r.stderr).toBe(0)
      expect(Date.now() - t0).toBeGreaterThanOrEqual(10_000)
      expect(r.stderr).toMatch(/names a writer on host elsewhere\.example, pid 4242; waiting 11 s/)  // said by the detached daemon as it waits
      expect(lease().host).not.toBe('elsewhere.example')
      // A mount whose lease is gone (taken over, or removed) unmounts itself at its next renewal.
      fs.unlinkSync(leaseFile)
      for (let i = 0; i < 80 && isMounted(v.mnt); i++) await sleep(100)
      expect(isMounted(v.mnt), 'unmounted itself').toBe(false)
    } finally {
      renewing?.kill()
      await umount(v2).catch(() => undefined)
      spawnSync('fusermount3', ['-uz', mnt2])
      spawnSync('fusermount3', ['-u', sshfs2])
    }
  }, 90_000)
})
