import fs from 'fs'

/** One line of /proc/self/mountinfo: where something is mounted and its device. */
export interface MountEntry { mountpoint: string, device: string }

/** mountinfo escapes space, tab, newline and backslash in paths as octal. */
function unescape (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
}

/**
 * The mounts this process sees, in mount order. Mount points are as the kernel records them:
 * canonical paths (symlinks resolved), so compare them with fs.realpathSync of a path.
 */
export function mountTable (): MountEntry[] {
  const out: MountEntry[] = []
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ')
    if (f.length > 4) out.push({ mountpoint: unescape(f[4]), device: f[2] })
  }
  return out
}

export function isMountPoint (canonicalPath: string): boolean {
  return mountTable().some(m => m.mountpoint === canonicalPath)
}
