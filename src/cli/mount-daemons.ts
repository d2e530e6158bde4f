import fs from 'fs'
import path from 'path'

/**
 * Finds the daemon serving a sealfs mount, for `sealfs umount` (which waits for it to exit)
 * and `sealfs status`. The kernel does not record it, and a read-only mount writes nothing in
 * the cipher dir, so it is found as fuser(1) would: a sealfs process running `mount` that
 * holds /dev/fuse open and names the mount point among its arguments (a detached daemon gets
 * it canonical; one run with -f as given, from its working directory). Processes of other
 * users are seen only by root.
 */
export function daemonOfMount (mountpoint: string): number | null {
  let pids: string[]
  try { pids = fs.readdirSync('/proc').filter(p => /^\d+$/.test(p)) } catch { return null }
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
      const script = argv.findIndex(a => /(^|\/)sealfs(\.js)?$/.test(a))
      if (script < 0 || !argv.slice(script + 1).includes('mount')) continue
      const cwd = fs.readlinkSync(`/proc/${pid}/cwd`)
      if (!argv.slice(script + 1).some(a => a !== '' && !a.startsWith('-') && samePath(path.resolve(cwd, a), mountpoint))) continue
      if (!fs.readdirSync(`/proc/${pid}/fd`).some(fd => { try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/fuse' } catch { return false } })) continue
      return Number(pid)
    } catch {
      continue  // gone, or another user's
    }
  }
  return null
}

/**
 * Whether `p` names `mountpoint` (canonical): its parent is resolved, never `p` itself, which
 * would ask the mount (a hung daemon would hang this too).
 */
function samePath (p: string, mountpoint: string): boolean {
  if (p === mountpoint) return true
  if (path.basename(p) !== path.basename(mountpoint)) return false
  try { return path.join(fs.realpathSync(path.dirname(p)), path.basename(p)) === mountpoint } catch { return false }
}

/** Whether process `pid` has ended (gone, or a zombie nobody has reaped yet). */
export function ended (pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/s.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return true
  }
}
