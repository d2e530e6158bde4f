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
//
// The tests run as root, and operations through symlinks follow them, so every symlink the
// model makes must resolve inside the tree whatever the seed. Each side is laid out as
//   SIDE/sentinel   a file the model never names: it must never change
//   SIDE/tree       the compared tree (its root, `R`)
//   SIDE/tree/w     where every operation's path starts
// Relative targets hold at most one '..' and no path ever names '..', so a symlink can lead
// at most one level above the directory it sits in; starting from R/w that is R. The one
// absolute target is R/w/a of the same side (compared as '$ROOT/w/a'). After every step a
// guard checks that SIDE holds only the tree and the unchanged sentinel and that the host's
// account files are untouched, and fails the test at the step that escaped.

const DIRS = ['w', 'w/d1', 'w/d1/d2', 'w/d3']
const NAMES = ['a', 'b', 'c', 'd1', 'd2', 'd3', 'l']
export const CHUNK = 4096

function parseSeeds (spec: string): number[] {
  const out: number[] = []
  for (const part of spec.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim())
    if (m === null) throw new Error(`SEALFS_MODEL_SEEDS: '${part}' is not N or N-M`)
    for (let s = Number(m[1]); s <= Number(m[2] ?? m[1]); s++) out.push(s)
  }
  return out
}
/** SEALFS_MODEL_SEEDS=N, N-M or a comma list of those replays those seeds; SEALFS_MODEL_STEPS=N runs longer. A failure prints both. */
const seedSpec = process.env.SEALFS_MODEL_SEEDS ?? process.env.SEALFS_MODEL_SEED
export const modelSeeds = seedSpec !== undefined ? parseSeeds(seedSpec) : [11, 22, 33]
export const modelSteps = Number(process.env.SEALFS_MODEL_STEPS ?? 700)
/** A test's time limit: long runs on a network backing take about 80 ms a step. */
export const modelTimeoutMs = Math.max(120_000, modelSteps * 200)

/** Host files whose change would mean a test escaped (checked after every step: an lstat each). */
const HOST_FILES = ['/etc/passwd', '/etc/shadow', '/etc/group']

function hostSignature (): string {
  return HOST_FILES.map(f => {
    try {
      const st = fs.lstatSync(f, { bigint: true })
      return `${f} ${st.ino} ${st.mode} ${st.uid} ${st.gid} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`
    } catch (e) {
      return `${f} ${(e as NodeJS.ErrnoException).code}`
    }
  }).join('\n')
}

/**
 * One side of the model: `side` is a fresh empty directory; it gets the sentinel and the
 * tree. Returns the tree's root and a check that nothing outside the tree changed.
 */
function layOut (side: string): { root: string, check: () => string | null } {
  const sentinel = path.join(side, 'sentinel')
  fs.writeFileSync(sentinel, 'the model test must never touch this file\n', { mode: 0o644 })
  const root = path.join(side, 'tree')
  fs.mkdirSync(root)
  fs.mkdirSync(path.join(root, 'w'))
  // A listing and an lstat: on the sshfs backing every request is a network round trip. (No
  // inode number: sshfs makes its own, and a remount may renumber.)
  const sig = (): string => {
    const st = fs.lstatSync(sentinel, { bigint: true })
    return `${fs.readdirSync(side).sort().join(',')} ${st.mode} ${st.uid} ${st.gid} ${st.size} ${st.mtimeNs} ${st.ctimeNs}`
  }
  const want = sig()
  return { root, check: () => { const now = sig(); return now === want ? null : `${side} changed outside its tree: ${want} -> ${now}` } }
}

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
        // The absolute target names this side's own root; a symlink's size is its target's length.
        const target = fs.readlinkSync(p)
        const shown = target.startsWith(root + '/') ? '$ROOT' + target.slice(root.length) : target
        out[r] = { ...base, size: st.size === Buffer.byteLength(target) ? 'target length' : st.size, target: shown }
      } else {
        out[r] = { ...base, sha256: crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex').slice(0, 16) }
      }
    }
  }
  visit('')
  return out
}

/**
 * Runs the model on two fresh empty directories, `plainSide` (a plain directory) and
 * `mntSide` (inside the mount), each laid out as described above.
 */
export async function runModel (mntSide: string, plainSide: string, seed: number, steps: number, remount: () => Promise<void>, limits: BackingLimits = LOCAL): Promise<void> {
  const timeResolutionNs = limits.timeResolutionNs
  const r = rng(seed)
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]
  const rel = (): string => `${pick(DIRS)}/${pick(NAMES)}`
  const sides = [layOut(plainSide), layOut(mntSide)]
  const roots = sides.map(s => s.root)
  const [plain, mnt] = roots
  const host = hostSignature()
  const escaped = (): string | null => {
    for (const s of sides) { const e = s.check(); if (e !== null) return e }
    const now = hostSignature()
    return now === host ? null : `host files changed:\n${host}\n->\n${now}`
  }
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
        const target = pick(['a', '../b', 'd1/c', 'ABS', 'x'.repeat(100)])
        desc = `symlink ${target === 'ABS' ? '$ROOT/w/a' : target} ${p}`
        res = both(root => fs.symlinkSync(target === 'ABS' ? path.join(root, 'w', 'a') : target, path.join(root, p)))
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
    const escape = escaped()
    if (escape !== null) throw new Error(`THE MODEL TEST ESCAPED ITS TREE at ${where}\n${escape}`)
    expect(res[1], where).toEqual(res[0])
    if (desc === 'remount') await remount()
    expect(snapshot(mnt, limits), where).toEqual(snapshot(plain, limits))
  }
  } catch (e) {
    if (process.env.SEALFS_MODEL_TRACE === '1') process.stderr.write(`every step of seed ${seed}:\n${log.join('\n')}\n`)
    throw e
  } finally {
    closeAll()
  }
}

