import { spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { describe, expect, it } from 'vitest'
import { cleanup, makeVolume, mount, py, removeTree, sealfs, takeDown, tempDir, umount, Vol } from './helpers'

/**
 * A full cipher dir: a volume on a tmpfs of a few MiB is filled, then appended to,
 * overwritten, truncated and added to while space comes and goes. A write that fails with
 * ENOSPC must leave every file as it was (nothing readable before becomes unreadable or
 * changes), and every write that succeeded must be there, also after a remount.
 */
const SEED = Number(process.env.SEALFS_FULL_DISK_SEED ?? 1)
const OPS = Number(process.env.SEALFS_FULL_DISK_OPS ?? 1000)

/** Python: the model (what each file must hold) and the operations, each applied to the model only as far as it succeeded. */
const FULL_DISK = `
import os, sys, random, errno, json, hashlib
m = sys.argv[1]; r = random.Random(int(sys.argv[2])); ops = int(sys.argv[3])
FULL = (errno.ENOSPC, errno.EDQUOT)
model = {}
stats = {'failed': 0, 'ok': 0, 'refills': 0}

def check(where):
    for name, data in model.items():
        p = m + '/' + name
        try:
            with open(p, 'rb') as f: got = f.read()
        except OSError as e:
            sys.exit('%s: reading %s failed: %s' % (where, name, errno.errorcode[e.errno]))
        if got != data:
            n = min(len(got), len(data))
            i = next((k for k in range(n) if got[k] != data[k]), n)
            sys.exit('%s: %s differs from byte %d (size %d, expected %d)' % (where, name, i, len(got), len(data)))
        if os.stat(p).st_size != len(data):
            sys.exit('%s: %s has size %d, expected %d' % (where, name, os.stat(p).st_size, len(data)))

def failed(e):
    if e.errno not in FULL: raise e
    stats['failed'] += 1

def put(name, off, data):
    fd = os.open(m + '/' + name, os.O_WRONLY)
    try:
        n = os.pwrite(fd, data, off)
    except OSError as e:
        failed(e); n = 0
    finally:
        os.close(fd)
    if n > 0:
        cur = model[name]
        model[name] = cur[:off] + data[:n] + cur[off + n:]
        stats['ok'] += 1
    return n

def cut(name, size):
    try:
        os.truncate(m + '/' + name, size)
    except OSError as e:
        failed(e); return
    cur = model[name]
    model[name] = cur[:size] + bytes(max(0, size - len(cur)))
    stats['ok'] += 1

# Files written and fsynced while there is room; most end inside a chunk.
for i in range(24):
    name = 'f%d' % i
    data = os.urandom(r.randrange(1, 30000))
    with open(m + '/' + name, 'wb') as f:
        f.write(data); f.flush(); os.fsync(f.fileno())
    model[name] = data
model['filler'] = b''
open(m + '/filler', 'wb').close()
def refill():
    failed_before = stats['failed']
    while put('filler', len(model['filler']), os.urandom(16384)) == 16384: pass
    stats['failed'] = failed_before  # the filler's own ENOSPC is not one of the operations'
    stats['refills'] += 1
refill()
check('after filling')

made = 0
calm = 0
for op in range(ops):
    if calm >= 8:
        refill(); calm = 0                                                        # full again
    name = r.choice(sorted(model))
    size = len(model[name])
    k = r.randrange(10)
    before = stats['failed']
    if k < 3:
        put(name, size, os.urandom(r.randrange(1, 9000)))                        # append
    elif k < 6:
        put(name, r.randrange(size + 1), os.urandom(r.randrange(1, 9000)))       # overwrite, maybe past the end
    elif k < 8:
        cut(name, r.randrange(size + 20000))                                    # truncate down or up (holes)
    elif k == 8:
        made += 1                                                                 # a new file, then its first write
        new = 'n%d' % made
        try:
            open(m + '/' + new, 'wb').close()
            model[new] = b''
            put(new, 0, os.urandom(r.randrange(1, 9000)))
        except OSError as e:
            failed(e)
    else:
        cut('filler', max(0, len(model['filler']) - r.randrange(4096, 40000)))   # some room comes back
    if stats['failed'] > before or op % 50 == 0:
        check('op %d' % op)
    calm = 0 if stats['failed'] > before else calm + 1
check('at the end')
# Room again, as a user would make it: the index rows queued meanwhile are written (fsck checks them).
os.unlink(m + '/filler'); del model['filler']
print(json.dumps({'stats': stats, 'sums': {n: hashlib.sha256(d).hexdigest() for n, d in model.items()}}))
`

const SUMS = `
import os, sys, json, hashlib
m = sys.argv[1]
print(json.dumps({n: hashlib.sha256(open(os.path.join(m, n), 'rb').read()).hexdigest() for n in os.listdir(m)}))
`

describe('a full cipher dir', () => {
  it(`appends, overwrites, truncates and creates that hit ENOSPC change nothing, and what succeeded stays (seed ${SEED}, ${OPS} operations)`, async () => {
    const small = tempDir('small')
    let v: Vol | null = null
    try {
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=6m,mode=700', 'tmpfs', small], { encoding: 'utf8' })
      expect(r.status, r.stderr).toBe(0)
      v = makeVolume({ cipherParent: small })
      mount(v)
      let result: { stats: { failed: number, ok: number }, sums: Record<string, string> }
      try {
        result = py(FULL_DISK, { args: [v.mnt, String(SEED), String(OPS)], timeout: 300_000 }) as typeof result
      } finally {
        await umount(v)
      }
      process.stdout.write(`full disk: ${result.stats.ok} operations succeeded, ${result.stats.failed} failed with ENOSPC, the disk filled again ${result.stats.refills} times\n`)
      expect(result.stats.failed).toBeGreaterThan(OPS / 10)
      expect(result.stats.ok).toBeGreaterThan(100)
      // Each write that failed settled its write-journal record at once: none is left holding
      // a slot (with all taken, writes that need no new space would fail on the full disk).
      expect(fs.readFileSync(path.join(v.cipher, 'sealfs.write-journal')).indexOf(Buffer.from('SFJ1'))).toBe(-1)
      // Remounted: every file holds what the operations that succeeded left in it.
      mount(v)
      try {
        expect(py(SUMS, { args: [v.mnt] })).toEqual(result.sums)
      } finally {
        await umount(v)
      }
      const check = sealfs(['fsck', '--passfile', v.passfile, v.cipher])
      expect(check.status, check.stdout + check.stderr).toBe(0)
      // Full to the last byte, with an empty lock file: it still mounts read-write, so that
      // its user can delete files to make room.
      fs.truncateSync(path.join(v.cipher, 'sealfs.lock'), 0)
      py(`
import os, sys, errno
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
try:
    while True: os.write(fd, os.urandom(4096))
except OSError as e:
    if e.errno != errno.ENOSPC: raise
os.close(fd)
print('null')`, { args: [path.join(small, 'fill')] })
      mount(v)
      try {
        for (const n of fs.readdirSync(v.mnt).filter(n => /^f\d+$/.test(n))) fs.unlinkSync(path.join(v.mnt, n))
        fs.writeFileSync(path.join(v.mnt, 'after'), 'room again')
        expect(fs.readFileSync(path.join(v.mnt, 'after'), 'utf8')).toBe('room again')
      } finally {
        await umount(v)
      }
    } finally {
      if (v !== null) await cleanup(v)
      await takeDown(small)
      await removeTree(small)
    }
  }, 900_000)
})
