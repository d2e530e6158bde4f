import fs from 'fs'
import { mountTable } from './mountinfo'

/** "major:minor" of the filesystem mounted on `mountpoint` (the last mount there). */
function mountDevice (mountpoint: string): string | undefined {
  return mountTable().filter(m => m.mountpoint === mountpoint).pop()?.device
}

/**
 * Raises the kernel's readahead window for the mount to `kib` (the kernel's default is
 * 128 KiB, and a FUSE read request is never larger than the window). Sequential reads then
 * come as requests of `kib`: an eighth of the round trips at 1 MiB, which more than halves
 * the daemon's CPU per MiB read. Only root may write the setting; elsewhere (and if it is
 * already as large) the kernel's default stays, which is correct, only slower. The mount's
 * device comes from mountinfo: a stat of the mountpoint would wait on this very daemon.
 */
export function widenReadahead (mountpoint: string, kib: number): void {
  try {
    const dev = mountDevice(mountpoint)
    if (dev === undefined) return
    const file = `/sys/class/bdi/${dev}/read_ahead_kb`
    if (Number(fs.readFileSync(file, 'utf8')) >= kib) return
    fs.writeFileSync(file, String(kib))
  } catch {
    // Not root, or no sysfs: the default window.
  }
}
