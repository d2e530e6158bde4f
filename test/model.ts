import crypto from 'crypto'
import fs from 'fs'
import path from 'path'
import { expect } from 'vitest'
import { rng } from './helpers'

// A model-based random test: a seeded generator applies random operations to a sealfs
// mount and to a plain directory side by side and compares, after every step, the
// return codes, then the whole tree: types, sizes, modes, link counts, contents and
// symlink targets; after each utimens, the times it set. mtimes: the two trees are written
// at different instants, so before each step every mtime is set to one fixed time, and
// after it the test compares which entries' mtimes the step changed.
// Used by model.test.ts (local backing) and network.test.ts (sshfs backing).

const DIRS = ['', 'd1', 'd1/d2', 'd3']
const NAMES = ['a', 'b', 'c', 'd1', 'd2', 'd3', 'l']
export const CHUNK = 4096
/** SEALFS_MODEL_SEED=N replays one seed; SEALFS_MODEL_STEPS=N runs longer. A failure prints both. */
export const modelSeeds = process.env.SEALFS_MODEL_SEED !== undefined ? [Number(process.env.SEALFS_MODEL_SEED)] : [11, 22, 33]
export const modelSteps = Number(process.env.SEALFS_MODEL_STEPS ?? 700)

type Outcome = unknown

function code (fn: () => Outcome): Outcome {
  try {
    const r = fn()
    return r === undefined ? 'ok' : r
  } catch (e) {
    const c = (e as NodeJS.ErrnoException).code
    if (c === undefined) throw e
    return c
  }
}

interface Snapshot { [p: string]: unknown }

/**
 * What a backing store can report: SFTP has no link counts (sshfs says 1), whole seconds
 * only, and cannot set a symlink's own times.
 */
export interface BackingLimits { timeResolutionNs: bigint, linkCounts: boolean, symlinkTimes: boolean }
const LOCAL: BackingLimits = { timeResolutionNs: 1n, linkCounts: true, symlinkTimes: true }

/** The mtime every entry gets before a step (whole seconds, so every backing can hold it). */
const BEFORE_STEP_S = 1_000_000_000

function resetMtimes (root: string, limits: BackingLimits): void {
  const visit = (p: string): void => {
    const st = fs.lstatSync(p)
    if (st.isDirectory()) for (const name of fs.readdirSync(p)) visit(path.join(p, name))
    if (limits.symlinkTimes || !st.isSymbolicLink()) fs.lutimesSync(p, BEFORE_STEP_S, BEFORE_STEP_S)
  }
  visit(root)
}

function snapshot (root: string, limits: BackingLimits): Snapshot {
  const out: Snapshot = { '': { mtimeChanged: fs.lstatSync(root).mtimeMs !== BEFORE_STEP_S * 1000 } }
  const visit = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel === '' ? name : `${rel}/${name}`
      const p = path.join(root, r)
      const st = fs.lstatSync(p)
      const base = {
        mode: st.mode, nlink: st.isDirectory() || !limits.linkCounts ? undefined : st.nlink, size: st.isDirectory() ? undefined : st.size,
        mtimeChanged: st.isSymbolicLink() && !limits.symlinkTimes ? undefined : st.mtimeMs !== BEFORE_STEP_S * 1000
      }
      if (st.isDirectory()) {
        out[r] = base
        visit(r)
      } else if (st.isSymbolicLink()) {
        out[r] = { ...base, target: fs.readlinkSync(p) }
      } else {
        out[r] = { ...base, sha256: crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex').slice(0, 16) }
      }
    }
  }
  visit('')
  return out
}

export async function runModel (mnt: string, plain: string, seed: number, steps: number, remount: () => Promise<void>, limits: BackingLimits = LOCAL): Promise<void> {
  const timeResolutionNs = limits.timeResolutionNs
  const r = rng(seed)
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]
  const rel = (): string => { const d = pick(DIRS); const n = pick(NAMES); return d === '' ? n : `${d}/${n}` }
  const roots = [plain, mnt]
  let fds: Array<[number, number]> = []
  const both = (fn: (root: string, side: number) => Outcome): [Outcome, Outcome] => [code(() => fn(roots[0], 0)), code(() => fn(roots[1], 1))]
  const log: string[] = []

  const closeAll = (): void => { for (const [a, b] of fds) { fs.closeSync(a); fs.closeSync(b) } fds = [] }

  try {
  for (let step = 0; step < steps; step++) {
    for (const root of roots) resetMtimes(root, limits)
    const op = Math.floor(r() * 15)
    const p = rel()
    const q = rel()
    let desc = ''
    let res: [Outcome, Outcome]
    switch (op) {
      case 0: {
        const mode = pick([0o644, 0o600, 0o755])
        desc = `open-create ${p} ${mode.toString(8)}`
        const opened: number[] = []
        res = both(root => { const fd = fs.openSync(path.join(root, p), fs.constants.O_CREAT | fs.constants.O_RDWR, mode); opened.push(fd); return 'fd' })
        if (opened.length === 2) { if (fds.length >= 4) { const [a, b] = fds.shift()!; fs.closeSync(a); fs.closeSync(b) } fds.push([opened[0], opened[1]]) } else opened.forEach(fd => fs.closeSync(fd))
        break
      }
      case 1: case 2: {
        if (fds.length === 0) continue
        const i = Math.floor(r() * fds.length)
        const off = Math.floor(r() * 5 * CHUNK)
        const len = 1 + Math.floor(r() * (r() < 0.3 ? 3 * CHUNK : 200))
        const data = Buffer.alloc(len, Math.floor(r() * 256))
        desc = `pwrite fd${i} off=${off} len=${len}`
        res = both((_root, side) => fs.writeSync(fds[i][side], data, 0, len, off))
        break
      }
      case 3: {
        if (fds.length === 0) continue
        const i = Math.floor(r() * fds.length)
        const off = Math.floor(r() * 5 * CHUNK)
        const len = Math.floor(r() * 2 * CHUNK)
        desc = `pread fd${i} off=${off} len=${len}`
        res = both((_root, side) => { const b = Buffer.alloc(len); const n = fs.readSync(fds[i][side], b, 0, len, off); return b.subarray(0, n).toString('base64') })
        break
      }
      case 4: {
        const size = Math.floor(r() * 5 * CHUNK)
        if (fds.length > 0 && r() < 0.5) {
          const i = Math.floor(r() * fds.length)
          desc = `ftruncate fd${i} ${size}`
          res = both((_root, side) => fs.ftruncateSync(fds[i][side], size))
        } else {
          desc = `truncate ${p} ${size}`
          res = both(root => fs.truncateSync(path.join(root, p), size))
        }
        break
      }
      case 5: desc = `rename ${p} ${q}`; res = both(root => fs.renameSync(path.join(root, p), path.join(root, q))); break
      case 6: desc = `link ${p} ${q}`; res = both(root => fs.linkSync(path.join(root, p), path.join(root, q))); break
      case 7: desc = `unlink ${p}`; res = both(root => fs.unlinkSync(path.join(root, p))); break
      case 8: desc = `mkdir ${p}`; res = both(root => fs.mkdirSync(path.join(root, p), 0o755)); break
      case 9: desc = `rmdir ${p}`; res = both(root => fs.rmdirSync(path.join(root, p))); break
      case 10: {
        const target = pick(['a', '../b', 'd1/c', '/etc/passwd', 'x'.repeat(100)])
        desc = `symlink ${target} ${p}`
        res = both(root => fs.symlinkSync(target, path.join(root, p)))
        break
      }
      case 11: {
        const mode = pick([0o600, 0o644, 0o755, 0o700, 0o640])
        desc = `chmod ${p} ${mode.toString(8)}`
        res = both(root => fs.chmodSync(path.join(root, p), mode))
        break
      }
      case 12: {
        const at = 1e9 + Math.floor(r() * 1e8) + r()
        const mt = 1e9 + Math.floor(r() * 1e8) + r()
        desc = `utimens ${p}`
        res = both(root => { fs.utimesSync(path.join(root, p), at, mt); const s = fs.statSync(path.join(root, p), { bigint: true }); return `${s.atimeNs / timeResolutionNs} ${s.mtimeNs / timeResolutionNs}` })
        break
      }
      case 13: {
        if (fds.length === 0) continue
        const i = Math.floor(r() * fds.length)
        if (r() < 0.5) {
          desc = `fsync fd${i}`
          res = both((_root, side) => fs.fsyncSync(fds[i][side]))
        } else {
          desc = `close fd${i}`
          const [a, b] = fds.splice(i, 1)[0]
          res = [code(() => fs.closeSync(a)), code(() => fs.closeSync(b))]
        }
        break
      }
      default: {
        if (r() < 0.9) continue
        desc = 'remount'
        closeAll()
        res = ['ok', 'ok']
        break
      }
    }
    log.push(`${step}: ${desc} -> ${String(res[0])}`)
    const where = `seed ${seed}, step ${step} (${desc}); last steps:\n${log.slice(-8).join('\n')}`
    expect(res[1], where).toEqual(res[0])
    if (desc === 'remount') await remount()
    expect(snapshot(mnt, limits), where).toEqual(snapshot(plain, limits))
  }
  } finally {
    closeAll()
  }
}

