import fs from 'fs'
import path from 'path'

/** One line of a mountinfo file: the mount's ID, where it is mounted, its device, type, source and per-mount options (ro or rw first). */
export interface MountEntry { id: string, mountpoint: string, device: string, fstype: string, source: string, options: string[] }

/** mountinfo escapes space, tab, newline and backslash in paths as octal. */
function unescape (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/**
 * The mounts a process sees, in mount order (another process's with /proc/PID/mountinfo).
 * Mount points are as the kernel records them: canonical paths, symlinks resolved, so
 * compare them with canonicalMountPoint() of a path.
 */
export function mountTable (file = '/proc/self/mountinfo'): MountEntry[] {
  const out: MountEntry[] = []
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const f = line.split(' ')
    if (f.length <= 4) continue
    // After the optional fields, " - " then the filesystem type and the mount source.
    const dash = f.indexOf('-', 6)
    out.push({ id: f[0], mountpoint: unescape(f[4]), device: f[2], fstype: dash > 0 ? f[dash + 1] ?? '' : '', source: dash > 0 ? unescape(f[dash + 2] ?? '') : '', options: f[5].split(',') })
  }
  return out
}

export function isMountPoint (canonicalPath: string): boolean {
  return mountTable().some(m => m.mountpoint === canonicalPath)
}

/**
 * `p` as the mount table names the mount on it. Its parent is resolved, not `p` itself:
 * looking at a mount point asks the mount, and a hung daemon (or a dead one, ENOTCONN) would
 * hang or fail this. Only where that names no mount (a symlink as the last component) is `p`
 * resolved whole.
 */
export function canonicalMountPoint (p: string): string {
  const abs = path.resolve(p)
  let byParent: string
  try { byParent = path.join(fs.realpathSync(path.dirname(abs)), path.basename(abs)) } catch { return abs }
  if (abs === '/' || isMountPoint(byParent)) return byParent
  try { return fs.realpathSync(abs) } catch { return byParent }
}
