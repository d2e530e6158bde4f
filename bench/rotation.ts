// Master-key rotation cost: `sealfs key rotate` (rewrap only) and `key rotate --reencrypt`
// (new DEKs, contents rewritten) over a tree of FILES files (default 100,000), next to
// `cp -a` of the same cipher dir, each from a cold page cache. Needs root (drop_caches,
// FUSE). Everything it writes is in a new directory under BENCH_DIR (default /var/tmp),
// removed at the end. `npm run bench:rotation`; FILES=N for another size.
import { execFileSync, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'

const CLI = path.join(__dirname, '..', '..', 'bin', 'sealfs.js')
const FILES = Number(process.env.FILES ?? 100_000)
const WORK = fs.mkdtempSync(path.join(fs.realpathSync(process.env.BENCH_DIR ?? '/var/tmp'), 'sealfs-rotation-'))
const cipher = path.join(WORK, 'cipher')
const mnt = path.join(WORK, 'mnt')
const passfile = path.join(WORK, 'pass')

function sealfs (args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.status !== 0) throw new Error(`sealfs ${args[0]} ${args[1] ?? ''}: ${r.stderr}`)
  return r.stdout
}

function cold (): void {
  execFileSync('sync')
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3')
}

function timed (what: () => void): number {
  cold()
  const t0 = process.hrtime.bigint()
  what()
  return Number(process.hrtime.bigint() - t0) / 1e9
}

function du (dir: string): number {
  return Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0])
}

function main (): void {
  if (process.getuid?.() !== 0) throw new Error('needs root (FUSE mounts, drop_caches)')
  fs.mkdirSync(cipher)
  fs.mkdirSync(mnt)
  fs.writeFileSync(passfile, 'bench passphrase\n', { mode: 0o600 })
  sealfs(['init', '--passfile', passfile, '--kdf-opslimit', '2', '--kdf-memlimit', String(64 << 20), cipher])
  sealfs(['mount', '--passfile', passfile, cipher, mnt])
  try {
    // Sizes from 100 bytes to 8 KiB, 100 files per directory: a source tree's shape.
    execFileSync('python3', ['-c', `
import os
m, n = ${JSON.stringify(mnt)}, ${FILES}
blob = os.urandom(8192)
for i in range(n):
    d = '%s/d%d' % (m, i // 100)
    if i % 100 == 0: os.mkdir(d)
    with open('%s/f%d' % (d, i), 'wb') as f: f.write(blob[:100 + (i * 7919) % 8092])
`])
  } finally {
    execFileSync('fusermount3', ['-u', mnt])
  }
  // The daemon closes its index after the unmount returns.
  for (let i = 0; i < 100 && spawnSync('pgrep', ['-f', `mount .*${cipher}`]).status === 0; i++) spawnSync('sleep', ['0.1'])
  const bytes = du(cipher)
  const copy = path.join(WORK, 'copy')
  const cp = timed(() => execFileSync('cp', ['-a', cipher, copy]))
  fs.rmSync(copy, { recursive: true })
  const rotate = timed(() => sealfs(['key', 'rotate', '--passfile', passfile, cipher]))
  let reencrypt: number | null = null
  if (sealfs(['key', 'rotate', '--help']).includes('--reencrypt')) {
    reencrypt = timed(() => sealfs(['key', 'rotate', '--reencrypt', '--passfile', passfile, cipher]))
  }
  const mb = bytes / 1e6
  const rows = [
    ['cp -a of the cipher dir', cp],
    ['key rotate', rotate],
    ...(reencrypt !== null ? [['key rotate --reencrypt', reencrypt]] : [])
  ] as Array<[string, number]>
  process.stdout.write(`${FILES.toLocaleString('en')} files, ${mb.toFixed(0)} MB in the cipher dir, cold cache each (${WORK})\n\n`)
  process.stdout.write('| what | seconds | files/s | MB/s | vs cp -a |\n|---|---|---|---|---|\n')
  for (const [what, s] of rows) {
    process.stdout.write(`| ${what} | ${s.toFixed(2)} | ${Math.round(FILES / s).toLocaleString('en')} | ${(mb / s).toFixed(0)} | ${(s / cp).toFixed(2)}x |\n`)
  }
}

try {
  main()
} finally {
  spawnSync('fusermount3', ['-u', mnt])
  fs.rmSync(WORK, { recursive: true, force: true })
}
