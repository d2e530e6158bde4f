import { execFileSync, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { describe, expect, it } from 'vitest'
import { cleanup, makeVolume, mount, py, sealfs, sleep, umount, Vol } from './helpers'

/**
 * Backups of a busy volume: tar, rsync -a and cp -a copies of the cipher dir taken while a
 * writer keeps changing some files restore to volumes that mount read-write, where every
 * file that was fsynced before the copies and not touched since reads back exactly, and
 * fsck blames only files the writer was changing.
 */
describe('backups of the cipher dir', () => {
  it('tar, rsync -a and cp -a copies taken under a writer mount, keep every untouched file, and fsck blames only the changing ones', async () => {
    const v = makeVolume()
    try {
      mount(v)
      const stable = py(`
import os, hashlib, json
m = ${JSON.stringify(v.mnt)}
os.makedirs(m + '/stable'); os.makedirs(m + '/hot')
sums = {}
for i in range(150):
    data = os.urandom(100 + (i * 7919) % 60000)
    with open(m + '/stable/f%d' % i, 'wb') as f:
        f.write(data); f.flush(); os.fsync(f.fileno())
    sums['f%d' % i] = hashlib.sha256(data).hexdigest()
for i in range(10):
    with open(m + '/hot/h%d' % i, 'wb') as f: f.write(os.urandom(50000))
print(json.dumps(sums))`) as Record<string, string>
      // The writer: overwrites, appends and truncates the hot files until told to stop.
      const stop = path.join(v.base, 'stop')
      const writer = spawn('python3', ['-c', `
import os, random
m = ${JSON.stringify(v.mnt)}
r = random.Random(7)
while not os.path.exists(${JSON.stringify(stop)}):
    p = m + '/hot/h%d' % r.randrange(10)
    with open(p, 'r+b') as f:
        op = r.randrange(3)
        size = os.fstat(f.fileno()).st_size
        if op == 0:
            f.seek(r.randrange(max(1, size))); f.write(os.urandom(r.randrange(1, 20000)))
        elif op == 1:
            f.seek(0, 2); f.write(os.urandom(r.randrange(1, 9000)))
        else:
            f.truncate(r.randrange(1, 80000))
`], { stdio: 'ignore' })
      const copies: Array<[string, string]> = []
      try {
        await sleep(300)
        const tarball = path.join(v.base, 'cipher.tar')
        // Exit 1: "file changed as we read it", which a copy of a busy volume is.
        const tarred = spawnSync('tar', ['-C', v.cipher, '-cf', tarball, '.'], { encoding: 'utf8' })
        expect([0, 1], tarred.stderr).toContain(tarred.status)
        const fromTar = path.join(v.base, 'from-tar')
        fs.mkdirSync(fromTar)
        execFileSync('tar', ['-C', fromTar, '-xf', tarball])
        copies.push(['tar', fromTar])
        const fromRsync = path.join(v.base, 'from-rsync')
        // Exit 23 or 24: a file shrank or went while it was read (rsync leaves it out or as it was).
        const synced = spawnSync('rsync', ['-a', `${v.cipher}/`, `${fromRsync}/`], { encoding: 'utf8' })
        expect([0, 23, 24], synced.stderr).toContain(synced.status)
        copies.push(['rsync -a', fromRsync])
        const fromCp = path.join(v.base, 'from-cp')
        execFileSync('cp', ['-a', v.cipher, fromCp])
        copies.push(['cp -a', fromCp])
      } finally {
        fs.writeFileSync(stop, '')
        await new Promise(resolve => writer.exitCode !== null ? resolve(null) : writer.once('exit', resolve))
        await umount(v)
      }
      for (const [how, copy] of copies) {
        // Restored: the lock file of the live mount is not the copy's.
        fs.rmSync(path.join(copy, 'sealfs.lock'), { force: true })
        const r = sealfs(['fsck', '--passfile', v.passfile, '--json', copy])
        expect([0, 20], `${how}: ${r.stderr}`).toContain(r.status)
        // Index rows lag the files by up to a second, so a busy copy may lack some (fsck
        // --repair writes them from the headers); data problems must be the hot files' only.
        const problems = (JSON.parse(r.stdout.trim().split('\n').pop() as string) as { problems: Array<{ path: string, what: string }> }).problems
        const dataProblems = problems.filter(p => p.path !== '(index)' && !/index row/.test(p.what))
        expect(dataProblems.filter(p => !p.path.startsWith('/hot/')), `${how}: ${r.stderr}`).toEqual([])
        process.stdout.write(`${how}: fsck found ${problems.length - dataProblems.length} index-row problems and ${dataProblems.length} data problems, in ${new Set(dataProblems.map(p => p.path)).size} of the 10 changing files\n`)
        // --repair: 20 if it left a problem, else 21 if it found any (a torn write the copy's
        // write journal puts back is repaired: its file's other problems go with it).
        const repair = sealfs(['fsck', '--passfile', v.passfile, '--repair', '--json', copy])
        const after = (JSON.parse(repair.stdout.trim().split('\n').pop() as string) as { problems: Array<{ path: string, repaired: boolean }> }).problems
        expect(after.filter(p => !p.repaired && !p.path.startsWith('/hot/')), how).toEqual([])
        expect(repair.status, how).toBe(after.some(p => !p.repaired) ? 20 : after.length > 0 ? 21 : 0)
        const c = { ...v, cipher: copy }
        const m = sealfs(['mount', '--passfile', v.passfile, copy, v.mnt])  // read-write
        expect(m.status, `${how}: ${m.stderr}`).toBe(0)
        try {
          const sums = py(`
import os, hashlib, json
m = ${JSON.stringify(v.mnt)}
print(json.dumps({n: hashlib.sha256(open(m + '/stable/' + n, 'rb').read()).hexdigest() for n in os.listdir(m + '/stable')}))`)
          expect(sums, how).toEqual(stable)
          fs.writeFileSync(path.join(v.mnt, 'stable', 'written-after-restore'), 'ok')
        } finally {
          await umount(c)
        }
      }
    } finally {
      await cleanup(v)
    }
  }, 180_000)
})
