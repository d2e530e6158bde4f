import { execFileSync, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PY_ERR, Vol, cleanup, makeVolume, mount, plainBeside, py as runPy, removeTree, sealfs, tempDir, umount, walk } from './helpers'

const ERR = PY_ERR

function py (code: string, asUser?: string): unknown {
  return runPy(code, { asUser })
}

describe('POSIX behaviour beyond read and write', () => {
  let v: Vol
  let plain: string
  beforeAll(() => {
    v = makeVolume()
    plain = plainBeside(v, 0o777)
    fs.chmodSync(v.base, 0o755)
    mount(v, ['-o', 'allow_other'])
    fs.chmodSync(v.mnt, 0o777)
  })
  afterAll(async () => { await cleanup(v) })

  function both (code: (root: string) => string, asUser?: string): unknown {
    const a = py(ERR + code(plain), asUser)
    const b = py(ERR + code(v.mnt), asUser)
    expect(b).toEqual(a)
    return b
  }

  it('xattrs: set, get, list, remove, replace/create flags, missing names; encrypted in the cipher dir', () => {
    both(r => `
p = '${r}/x'; open(p, 'w').write('data')
out = [e(lambda: os.setxattr(p, 'user.colour', b'SECRET-XATTR-VALUE')), e(lambda: os.setxattr(p, 'user.SECRET-XATTR-NAME', b''))]
out.append(e(lambda: os.getxattr(p, 'user.colour').decode()))
out.append(sorted(os.listxattr(p)))
out.append(e(lambda: os.setxattr(p, 'user.colour', b'x', os.XATTR_CREATE)))
out.append(e(lambda: os.setxattr(p, 'user.none', b'x', os.XATTR_REPLACE)))
out.append(e(lambda: os.getxattr(p, 'user.none')))
out.append(e(lambda: os.removexattr(p, 'user.SECRET-XATTR-NAME')))
out.append(sorted(os.listxattr(p)))
os.mkdir('${r}/xd'); os.setxattr('${r}/xd', 'user.on-dir', b'1'); out.append(os.listxattr('${r}/xd'))
print(json.dumps(out))`)
    const dump = execFileSync('getfattr', ['-R', '-d', '-m', '-', '--absolute-names', v.cipher], { encoding: 'utf8' })
    expect(dump).toMatch(/user\.sealfs\./)
    expect(dump).not.toMatch(/SECRET|colour/)
  })

  it('listxattr: a size probe gives the exact size, a buffer too small is ERANGE, and neither stops the daemon', () => {
    both(r => `
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def lx(p, n):
    buf = ctypes.create_string_buffer(max(n, 1))
    rc = libc.listxattr(p.encode(), buf if n else None, ctypes.c_size_t(n))
    return rc if rc >= 0 else errno.errorcode[ctypes.get_errno()]
p = '${r}/lx'; open(p, 'w').write('x')
os.setxattr(p, 'user.one', b'1'); os.setxattr(p, 'user.' + 'n' * 120, b'2')
total = lx(p, 0)
print(json.dumps([total, lx(p, 10), lx(p, total - 1), lx(p, total), sorted(os.listxattr(p))[0], open(p).read()]))`)
  })

  it('times before 1970 and fractions of a second before it round-trip exactly, both ways', () => {
    both(r => `
G = 10 ** 9
p = '${r}/old'; open(p, 'w').write('x'); os.mkdir('${r}/olddir')
out = []
for ns in (-315619200 * G, -315619200 * G + 123456789, -500000000, -1, 1, 1500000000 * G + 987654321, -(2 ** 40) * G):
    for q in (p, '${r}/olddir'):
        os.utime(q, ns=(ns, ns + 7)); st = os.stat(q); out.append([st.st_atime_ns, st.st_mtime_ns])
print(json.dumps(out))`)
  })

  it('xattrs on a backing filesystem without them fail cleanly with ENOTSUP', async () => {
    const base = tempDir('ramfs')
    try {
      execFileSync('mount', ['-t', 'ramfs', 'ramfs', base])
      const rv: Vol = { base, cipher: path.join(base, 'c'), mnt: path.join(base, 'm'), passfile: v.passfile }
      fs.mkdirSync(rv.cipher); fs.mkdirSync(rv.mnt)
      expect(sealfs(['init', '--passfile', v.passfile, '--kdf-opslimit', '2', '--kdf-memlimit', '67108864', rv.cipher]).status).toBe(0)
      mount(rv)
      const res = py(ERR + `
p = '${rv.mnt}/f'; open(p, 'w').write('x')
print(json.dumps([e(lambda: os.setxattr(p, 'user.a', b'1')), e(lambda: os.getxattr(p, 'user.a')), e(lambda: os.listxattr(p)), open(p).read()]))`)
      await umount(rv)
      expect(res).toEqual(['ENOTSUP', 'ENOTSUP', [], 'x'])
    } finally {
      await removeTree(base)  // the sealfs mount, then the ramfs (once the daemon lets go of it)
    }
  })

  it('mkfifo and mknod, O_CREAT modes under a umask, O_EXCL, O_TRUNC', () => {
    both(r => `
os.umask(0o027)
os.mkfifo('${r}/fifo', 0o666)
out = [oct(os.lstat('${r}/fifo').st_mode)]
os.mknod('${r}/null', 0o666 | stat.S_IFCHR, os.makedev(1, 3)); st = os.lstat('${r}/null'); out += [oct(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)]
for m in (0o777, 0o644, 0o600, 0o4755):
    fd = os.open('${r}/m%o' % m, os.O_CREAT | os.O_WRONLY, m); os.close(fd); out.append(oct(os.stat('${r}/m%o' % m).st_mode))
os.mkdir('${r}/dmode', 0o775); out.append(oct(os.stat('${r}/dmode').st_mode))
out.append(e(lambda: os.open('${r}/m644', os.O_CREAT | os.O_EXCL | os.O_WRONLY)))
open('${r}/tr', 'w').write('some content')
fd = os.open('${r}/tr', os.O_WRONLY | os.O_TRUNC); os.write(fd, b'x'); os.close(fd); out.append(open('${r}/tr').read())
print(json.dumps(out))`)
  })

  it('fallocate is EOPNOTSUPP (and posix_fallocate still works through glibc)', () => {
    const r = spawnSync('fallocate', ['-l', '1M', path.join(v.mnt, 'fa')], { encoding: 'utf8' })
    expect(r.status).not.toBe(0)
    expect(r.stderr).toMatch(/Operation not supported/)
    both(r => `
fd = os.open('${r}/pfa', os.O_CREAT | os.O_RDWR, 0o644); os.write(fd, b'abc'); os.posix_fallocate(fd, 0, 100000); os.close(fd)
print(json.dumps([os.stat('${r}/pfa').st_size, open('${r}/pfa', 'rb').read()[:4].hex()]))`)
  })

  it('a write or truncate by another user clears the set-user-ID and set-group-ID bits, as on a plain directory', () => {
    both(r => `
for n in ('su1', 'su2'):
    open('${r}/' + n, 'w').write('x'); os.chmod('${r}/' + n, 0o6777)
print(json.dumps('ok'))`)
    const modes = both(r => `
fd = os.open('${r}/su1', os.O_WRONLY); os.write(fd, b'y'); os.close(fd)
os.truncate('${r}/su2', 0)
print(json.dumps([oct(os.stat('${r}/su1').st_mode), oct(os.stat('${r}/su2').st_mode)]))`, 'nobody')
    expect(modes).toEqual(['0o100777', '0o100777'])
  })

  it('permission checks under allow_other,default_permissions for root and an unprivileged user; new entries belong to their creator', () => {
    both(r => `
open('${r}/rootonly', 'w').write('secret'); os.chmod('${r}/rootonly', 0o600)
open('${r}/readable', 'w').write('public'); os.chmod('${r}/readable', 0o644)
os.mkdir('${r}/shared', 0o777); os.chmod('${r}/shared', 0o1777)
print(json.dumps('ok'))`)
    both(r => `
out = [e(lambda: open('${r}/rootonly').read()), e(lambda: open('${r}/readable').read()), e(lambda: open('${r}/readable', 'a').write('x'))]
out.append(e(lambda: os.access('${r}/rootonly', os.R_OK)))
out.append(os.access('${r}/readable', os.R_OK))
open('${r}/shared/mine', 'w').write('n'); os.mkdir('${r}/shared/mydir'); os.symlink('t', '${r}/shared/mylink')
out += [os.lstat('${r}/shared/' + n).st_uid for n in ('mine', 'mydir', 'mylink')]
out.append(e(lambda: os.unlink('${r}/readable')))
print(json.dumps(out))`, 'nobody')
    both(r => `print(json.dumps([open('${r}/rootonly').read(), os.stat('${r}/shared/mine').st_gid]))`)
  })

  it('open descriptors survive unlink and rename; several processes see each other’s writes; shared writable mmap', () => {
    both(r => `
out = []
fd = os.open('${r}/gone', os.O_CREAT | os.O_RDWR, 0o644); os.write(fd, b'still here'); os.unlink('${r}/gone')
os.write(fd, b'!'); out += [os.pread(fd, 100, 0).decode(), os.fstat(fd).st_size, os.fstat(fd).st_nlink, 'gone' in os.listdir('${r}')]; os.close(fd)
fd = os.open('${r}/ln1', os.O_CREAT | os.O_RDWR, 0o644); os.link('${r}/ln1', '${r}/ln2'); os.unlink('${r}/ln1')
out += [os.fstat(fd).st_nlink, os.stat('${r}/ln2').st_nlink]; os.chmod('${r}/ln2', 0o600); out.append(oct(os.fstat(fd).st_mode)); os.close(fd)
fd = os.open('${r}/r1', os.O_CREAT | os.O_RDWR, 0o644); os.write(fd, b'data'); os.rename('${r}/r1', '${r}/r2'); os.write(fd, b'more'); os.close(fd)
out.append(open('${r}/r2').read())
a = os.open('${r}/shared2', os.O_CREAT | os.O_RDWR, 0o644); b = os.open('${r}/shared2', os.O_RDWR)
os.pwrite(a, b'from a', 0); out.append(os.pread(b, 100, 0).decode()); os.pwrite(b, b'B', 100000); out.append(os.fstat(a).st_size)
pid = os.fork()
if pid == 0:
    os.pwrite(b, b'child', 10); os._exit(0)
os.waitpid(pid, 0); out.append(os.pread(a, 15, 0).decode('latin1'))
os.close(a); os.close(b)
with open('${r}/mm', 'wb') as f: f.write(b'\\0' * 100000)
with open('${r}/mm', 'r+b') as f:
    m = mmap.mmap(f.fileno(), 100000); m[50000:50005] = b'hello'; m[99990:100000] = b'0123456789'; m.flush(); m.close()
with open('${r}/mm', 'rb') as f: d = f.read(); out += [d[50000:50005].decode(), d[99990:].decode(), len(d)]
os.mkdir('${r}/od'); fd = os.open('${r}/od/f', os.O_CREAT | os.O_RDWR, 0o644); os.write(fd, b'x' * 10); os.unlink('${r}/od/f')
os.fchmod(fd, 0o600); os.ftruncate(fd, 4); os.utime(fd, ns=(1000000123, 2000000456))
st = os.fstat(fd); out += [oct(st.st_mode), st.st_mtime_ns, st.st_size, os.listdir('${r}/od')]
out += [e(lambda: os.rmdir('${r}/od')), os.path.exists('${r}/od'), os.pwrite(fd, b'yz', 4), os.pread(fd, 10, 0).decode()]; os.close(fd)
print(json.dumps(out))`)
    // A file unlinked while open lives on through its descriptors only: nothing is left in the cipher dir.
    expect(fs.readdirSync(v.cipher).filter(n => n.startsWith('sealfs.orphan.') || n.startsWith('sealfs.tmp.'))).toEqual([])
  })

  it('a descriptor or mapping open on another hard link sees writes and truncation at once; links share st_ino', () => {
    both(r => `
a = '${r}/hl1'; b = '${r}/hl2'
open(a, 'w').write('0123456789' * 1000); os.link(a, b)
fb = os.open(b, os.O_RDONLY); fa = os.open(a, os.O_RDWR)
out = [os.pread(fb, 10, 0).decode()]
os.pwrite(fa, b'ABCDE', 0); out.append(os.pread(fb, 10, 0).decode())
m = mmap.mmap(fb, 0, prot=mmap.PROT_READ); out.append(m[5000:5005].decode())
os.pwrite(fa, b'WXYZ!', 5000); out.append(m[5000:5005].decode()); m.close()
os.ftruncate(fa, 3); os.ftruncate(fa, 10); out.append(os.pread(fb, 10, 0).decode('latin1'))
os.rename(b, '${r}/hl3'); os.pwrite(fa, b'ren', 0); out.append(os.pread(fb, 10, 0).decode('latin1'))
os.truncate(a, 2); out.append(os.pread(fb, 10, 0).decode('latin1'))
out.append(os.stat(a).st_ino == os.stat('${r}/hl3').st_ino)
os.close(fa); os.close(fb)
print(json.dumps(out))`)
  })

  it('pages cached from a closed hard link never outlive a write, truncate or rename through another name', () => {
    both(r => `
a = '${r}/pc1'; b = '${r}/pc2'
open(a, 'w').write('0123456789' * 2000); os.link(a, b)
def rd(p): return open(p, 'rb').read()
out = [len(rd(a))]
fb = os.open(b, os.O_RDWR); os.pwrite(fb, b'ABCDE', 0); os.pwrite(fb, b'VWXYZ', 15000); os.close(fb)
x = rd(a); out += [x[:5].decode(), x[15000:15005].decode()]
os.truncate(b, 7); out.append(rd(a).decode())
with open(b, 'ab') as f: f.write(b'tail' * 3000)
x = rd(a); out += [len(x), x[:12].decode()]
open('${r}/pc3', 'w').write('replacement'); rd(a); os.rename('${r}/pc3', a); out.append(rd(a).decode()); out.append(len(rd(b)))
print(json.dumps(out))`)
  })

  it('renameat2: RENAME_NOREPLACE and RENAME_EXCHANGE (files and directories), bad flags', () => {
    both(r => `
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def rn2(x, y, fl):
    rc = libc.renameat2(-100, x.encode(), -100, y.encode(), fl)
    return 'ok' if rc == 0 else errno.errorcode[ctypes.get_errno()]
d = '${r}/rn'; os.mkdir(d); os.mkdir(d + '/sub'); open(d + '/sub/inner', 'w').write('in')
open(d + '/x1', 'w').write('one'); open(d + '/x2', 'w').write('two')
out = [rn2(d + '/x1', d + '/x2', 1), rn2(d + '/x1', d + '/x3', 1), sorted(os.listdir(d))]
out += [rn2(d + '/x3', d + '/x2', 2), open(d + '/x3').read(), open(d + '/x2').read()]
out += [rn2(d + '/sub', d + '/x2', 2), sorted(os.listdir(d + '/x2')), open(d + '/x2/inner').read(), open(d + '/sub').read()]
out += [rn2(d + '/x3', d + '/nope', 2), rn2(d + '/x3', d + '/x2', 3)]
print(json.dumps(out))`)
  })

  it('four processes writing and reading one file concurrently end with the same bytes as a plain directory', () => {
    both(r => `
p = '${r}/conc'; open(p, 'wb').write(b'')
pids = []
for k in range(4):
    pid = os.fork()
    if pid == 0:
        fd = os.open(p, os.O_RDWR)
        for i in range(300):
            off = i * 4 * 3000 + k * 3000
            os.pwrite(fd, bytes([65 + k]) * 3000, off)
            os.pread(fd, 5000, max(0, off - 2000))
        os.close(fd); os._exit(0)
    pids.append(pid)
for pid in pids: os.waitpid(pid, 0)
import hashlib
print(json.dumps([os.stat(p).st_size, hashlib.sha256(open(p, 'rb').read()).hexdigest()]))`)
  })

  it('a new empty file written first by several processes at once gets one identity: every byte survives', () => {
    // Files are created without a header; the first write gives one. Racing first writes,
    // and opens that read the header while it is being written, must all share it.
    both(r => `
out = []
for t in range(24):
    p = '${r}/first%02d' % t; open(p, 'wb').close()
    pids = []
    for k in range(4):
        pid = os.fork()
        if pid == 0:
            fd = os.open(p, os.O_RDWR)
            os.pwrite(fd, bytes([65 + k]) * 5000, k * 5000)
            os.pread(fd, 100, 0)
            os.close(fd); os._exit(0)
        pids.append(pid)
    for pid in pids: os.waitpid(pid, 0)
    d = open(p, 'rb').read()
    out.append([len(d)] + [d.count(bytes([65 + k])) for k in range(4)])
print(json.dumps(out))`)
  })

  it('large writes and reads from several processes at once keep every byte (payloads over 64 KiB arrive as a view of the receive buffer; buffers are reused)', () => {
    // Each WRITE above 64 KiB is handed over as the session's receive buffer, valid only while
    // its handler runs; the next request overwrites it. Writers in parallel make one overwrite
    // another's payload unless it is copied first.
    both(r => `
import hashlib
pids = []
for k in range(4):
    pid = os.fork()
    if pid == 0:
        fd = os.open('${r}/big%d' % k, os.O_RDWR | os.O_CREAT, 0o644)
        for i in range(24):
            block = hashlib.sha256(b'%d-%d' % (k, i)).digest() * 8192
            os.pwrite(fd, block[:(i % 3 + 1) * 100000], i * 300000)
        os.close(fd); os._exit(0)
    pids.append(pid)
for pid in pids: os.waitpid(pid, 0)
# Then read back by four processes at once, each through its own descriptor and order.
rfd, wfd = os.pipe()
for k in range(4):
    if os.fork() == 0:
        got = []
        for j in range(4):
            fd = os.open('${r}/big%d' % ((k + j) % 4), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache: each read reaches the daemon
            h = hashlib.sha256(); off = 0
            while True:
                b = os.pread(fd, 200000, off)
                if not b: break
                h.update(b); off += len(b)
            os.close(fd); got.append(h.hexdigest())
        os.write(wfd, (json.dumps([k, got]) + '\\n').encode()); os._exit(0)
os.close(wfd)
reads = sorted(json.loads(l) for l in os.fdopen(rfd).read().splitlines())
for _ in range(4): os.wait()
print(json.dumps([[hashlib.sha256(open('${r}/big%d' % k, 'rb').read()).hexdigest() for k in range(4)], reads]))`)
  })

  it('hard links: stat and read through every name at once, link counts, data kept until the last name goes', async () => {
    both(r => `
open('${r}/h1', 'w').write('abc'); os.link('${r}/h1', '${r}/h2'); os.link('${r}/h1', '${r}/h3')
os.stat('${r}/h2'); open('${r}/h2').read()
with open('${r}/h1', 'a') as f: f.write('defgh')
out = [os.stat('${r}/h2').st_size, open('${r}/h3').read(), os.stat('${r}/h3').st_nlink]
os.truncate('${r}/h3', 2); out += [os.stat('${r}/h1').st_size, open('${r}/h2').read()]
os.unlink('${r}/h1'); out += [os.stat('${r}/h2').st_nlink, open('${r}/h3').read()]
print(json.dumps(out))`)
    await umount(v)
    const rows = (): number => Number(execFileSync('python3', ['-c', `import sqlite3; print(sqlite3.connect('${v.cipher}/sealfs.index').execute('select count(*) from deks').fetchone()[0])`], { encoding: 'utf8' }).trim())
    const before = rows()
    mount(v, ['-o', 'allow_other'])
    fs.unlinkSync(path.join(v.mnt, 'h2'))
    await umount(v)
    expect(rows()).toBe(before)
    mount(v, ['-o', 'allow_other'])
    fs.unlinkSync(path.join(v.mnt, 'h3'))
    await umount(v)
    expect(rows()).toBe(before - 1)
    mount(v, ['-o', 'allow_other'])
  })

  it('names of 255 bytes work, 256 give ENAMETOOLONG, and paths of 4095 bytes work', () => {
    both(r => `
out = [e(lambda: open('${r}/' + 'a' * 255, 'w').write('x')), e(lambda: open('${r}/' + 'b' * 256, 'w'))]
d = '${r}'
while len(d) + 1 + 200 < 4000: d = d + '/' + 'd' * 200; os.mkdir(d)
f = d + '/' + 'f' * (4095 - len(d) - 1)
out.append(len(f)); out.append(e(lambda: open(f, 'w').write('deep'))); out.append(open(f).read())
print(json.dumps(out[:2] + out[3:]))`)
    expect(walk(v.cipher).every(f => path.basename(f).length <= 255)).toBe(true)
  })
})

describe('sparse files and files over 4 GiB', () => {
  let v: Vol
  beforeAll(() => { v = makeVolume(); mount(v) })
  afterAll(async () => { await cleanup(v) })

  it('truncate -s 10G writes no 10 GB of ciphertext; holes read as zeros; data past 4 GiB round-trips, also after a remount', async () => {
    const f = path.join(v.mnt, 'big-sparse')
    execFileSync('truncate', ['-s', '10G', f])
    expect(fs.statSync(f).size).toBe(10 * 1024 ** 3)
    const fd = fs.openSync(f, 'r+')
    const buf = Buffer.alloc(100_000, 1)
    expect(fs.readSync(fd, buf, 0, buf.length, 7 * 1024 ** 3 + 12345)).toBe(buf.length)
    expect(buf.every(b => b === 0)).toBe(true)
    const data = Buffer.from('beyond four gibibytes '.repeat(5000))
    const at = 5 * 1024 ** 3 + 777
    fs.writeSync(fd, data, 0, data.length, at)
    fs.closeSync(fd)
    await umount(v)
    const used = walk(v.cipher).reduce((n, p) => n + fs.statSync(p).blocks * 512, 0)
    expect(used).toBeLessThan(16 * 1024 * 1024)
    mount(v)
    const fd2 = fs.openSync(f, 'r')
    const back = Buffer.alloc(data.length + 200)
    fs.readSync(fd2, back, 0, back.length, at - 100)
    fs.closeSync(fd2)
    expect(back.subarray(100, 100 + data.length).equals(data)).toBe(true)
    expect(back.subarray(0, 100).every(b => b === 0) && back.subarray(100 + data.length).every(b => b === 0)).toBe(true)
    expect(fs.statSync(f).size).toBe(10 * 1024 ** 3)
  })

  it('writing past the end leaves holes that read as zeros, like a plain file', () => {
    const f = path.join(v.mnt, 'gap')
    const p = path.join(v.base, 'gap-plain')
    for (const target of [f, p]) {
      const fd = fs.openSync(target, 'w+')
      fs.writeSync(fd, Buffer.from('head'), 0, 4, 0)
      fs.writeSync(fd, Buffer.from('tail'), 0, 4, 3 * 1024 * 1024 + 5)
      fs.closeSync(fd)
    }
    expect(fs.readFileSync(f).equals(fs.readFileSync(p))).toBe(true)
  })
})
