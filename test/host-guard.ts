// vitest globalSetup: the tests run as root, and a test that escaped its temporary
// directories has damaged machines before. This records what the host looks like before the
// suite and fails the run, loudly, if anything below changed by its end:
//   - the account and mount files (inode, mode, owner, size, times, contents);
//   - the entries of a few host directories a careless test would write into;
//   - the set of mounts (a test left something mounted, or unmounted something of the host's);
//   - processes working in a test's temporary directory (a daemon outlived its test);
//   - test directories left in the system's temporary directory (a test did not clean up).
// The model test checks the account files after every step as well (test/model.ts).
import crypto from 'crypto'
import fs from 'fs'
import os from 'os'
import path from 'path'
import { mountTable } from '../src/filesystem/mountinfo'
import { processesUsing, TEST_DIR_PREFIX } from './helpers'

const FILES = ['/etc/passwd', '/etc/shadow', '/etc/group', '/etc/gshadow', '/etc/fstab', '/etc/hosts', '/etc/sudoers']
const DIRS = ['/etc', '/usr/local/bin', '/usr/local/sbin', '/run', '/root', '/var/tmp']
const TMP = fs.realpathSync(os.tmpdir())

function fileState (f: string): string {
  try {
    const st = fs.lstatSync(f)
    const body = st.isFile() ? crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex') : st.isSymbolicLink() ? fs.readlinkSync(f) : ''
    return `inode ${st.ino} mode ${st.mode.toString(8)} owner ${st.uid}:${st.gid} size ${st.size} mtime ${st.mtimeMs} ctime ${st.ctimeMs} ${body}`
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'error'
  }
}

function listing (d: string): string[] {
  try { return fs.readdirSync(d).sort() } catch (e) { return [`(${(e as NodeJS.ErrnoException).code ?? 'error'})`] }
}

/** Mounts as "ID PATH": a mount stacked on an existing mount point is new too. */
function mounts (): string[] {
  return mountTable().map(m => `${m.id} ${m.mountpoint}`)
}

/** Processes whose command line names a test directory (TMP/sealfs-*), as "PID: ARGS". */
function testProcesses (): string[] {
  return processesUsing(TMP).filter(p => p.args.some(a => a.includes(path.join(TMP, TEST_DIR_PREFIX))))
    .map(p => `${p.pid}: ${p.args.join(' ').trim()}`)
}

interface HostState { files: Record<string, string>, dirs: Record<string, string[]>, mounts: string[], processes: string[], testDirs: string[] }

function hostState (): HostState {
  return {
    files: Object.fromEntries(FILES.map(f => [f, fileState(f)])),
    dirs: Object.fromEntries(DIRS.map(d => [d, listing(d)])),
    mounts: mounts(),
    processes: testProcesses(),
    testDirs: listing(TMP).filter(n => n.startsWith(TEST_DIR_PREFIX))
  }
}

const added = (before: string[], after: string[]): string[] => after.filter(x => !before.includes(x))
const removed = (before: string[], after: string[]): string[] => before.filter(x => !after.includes(x))

function differences (before: HostState, after: HostState): string[] {
  const out: string[] = []
  for (const f of FILES) if (before.files[f] !== after.files[f]) out.push(`${f} changed: ${before.files[f]} -> ${after.files[f]}`)
  for (const d of DIRS) {
    const plus = added(before.dirs[d], after.dirs[d])
    const minus = removed(before.dirs[d], after.dirs[d])
    if (plus.length + minus.length > 0) out.push(`${d}: entries added [${plus.join(', ')}], removed [${minus.join(', ')}]`)
  }
  const mounts = added(before.mounts, after.mounts)
  if (mounts.length > 0) out.push(`left mounted: ${mounts.join(', ')}`)
  const gone = removed(before.mounts, after.mounts)
  if (gone.length > 0) out.push(`unmounted by the suite: ${gone.join(', ')}`)
  const procs = after.processes.filter(p => !before.processes.some(b => b.split(':')[0] === p.split(':')[0]))
  if (procs.length > 0) out.push(`processes still working in test directories:\n  ${procs.join('\n  ')}`)
  const dirs = added(before.testDirs, after.testDirs)
  if (dirs.length > 0) out.push(`test directories left in ${TMP}: ${dirs.join(', ')}`)
  const deleted = removed(before.testDirs, after.testDirs)
  if (deleted.length > 0) out.push(`directories the suite did not make were deleted from ${TMP}: ${deleted.join(', ')}`)
  return out
}

export default function setup (): () => void {
  const before = hostState()
  // mount(8) and umount(8) (libmount) create /run/mount and keep a record there; the tests'
  // calls keep theirs in this run's own directory instead (the workers inherit the variable).
  const runDir = fs.mkdtempSync(path.join(TMP, `${TEST_DIR_PREFIX}run-`))
  process.env.LIBMOUNT_UTAB = path.join(runDir, 'utab')
  return () => {
    fs.rmSync(runDir, { recursive: true, force: true })
    const diffs = differences(before, hostState())
    if (diffs.length > 0) {
      const msg = `THE TEST SUITE CHANGED THE HOST outside its temporary directories:\n- ${diffs.join('\n- ')}`
      process.stderr.write(`\n${msg}\n`)
      throw new Error(msg)
    }
  }
}
