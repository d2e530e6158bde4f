import fs from 'fs'
import path from 'path'

/**
 * Finds the daemon serving a sealfs mount, for `sealfs umount` (which waits for it to exit)
 * and `sealfs status`. The kernel does not record it, and a read-only mount writes nothing in
 * the cipher dir, so it is found as fuser(1) would: a sealfs process running `mount` that
 * holds /dev/fuse open and whose MNT argument is the mount point (a detached daemon gets it
 * canonical; one run with -f as given, from its working directory). Paths are compared as
 * text: nothing is looked up, so a hung mount or backing store hangs nothing here.
 * `valueOptions`: the options of `mount` that take a value (their values are not MNT).
 * Processes of other users are seen only by root.
 */
export function daemonOfMount (mountpoint: string, valueOptions: ReadonlySet<string>): number | null {
  let pids: string[]
  try { pids = fs.readdirSync('/proc').filter(p => /^\d+$/.test(p)) } catch { return null }
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1)
      const script = argv.findIndex(a => /(^|\/)sealfs(\.js)?$/.test(a))
      if (script < 0 || argv[script + 1] !== 'mount') continue
      const mnt = positionals(argv.slice(script + 2), valueOptions)[1]
      if (mnt === undefined || path.resolve(fs.readlinkSync(`/proc/${pid}/cwd`), mnt) !== mountpoint) continue
      if (!fs.readdirSync(`/proc/${pid}/fd`).some(fd => { try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/fuse' } catch { return false } })) continue
      return Number(pid)
    } catch {
      continue  // gone, or another user's
    }
  }
  return null
}

/** The arguments that are not options nor options' values (`--` ends the options). */
function positionals (args: string[], valueOptions: ReadonlySet<string>): string[] {
  const out: string[] = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]
    if (a === '--') return [...out, ...args.slice(i + 1)]
    if (a.startsWith('-') && a !== '-') {
      if (!a.includes('=') && valueOptions.has(a)) i++
      continue
    }
    out.push(a)
  }
  return out
}

/** Whether process `pid` has ended (gone, or a zombie nobody has reaped yet). */
export function ended (pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/s.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return true
  }
}
