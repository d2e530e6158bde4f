import { loadAddon, PosixAddon } from '../native'

const posix = loadAddon<PosixAddon>('posix')

/**
 * No core file, ever: any sealfs process may hold keys (the daemon, a key command, an
 * unlock). RLIMIT_CORE 0, soft and hard, and not dumpable (which also keeps other processes
 * of the same user from attaching a debugger).
 */
export function forbidCoreDumps (): void {
  posix.disableCoreDumps()
}

/** sd_notify(3): tells systemd about the daemon's state when it runs us with NOTIFY_SOCKET. */
export function notifySystemd (state: 'READY=1' | 'STOPPING=1'): void {
  const socket = process.env.NOTIFY_SOCKET
  if (socket === undefined || socket === '') return
  posix.sendDatagram(socket, Buffer.from(`${state}\nMAINPID=${process.pid}\n`))
}
