import fs from 'fs'
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

/** Where a detached daemon's log lines go: a file (--log) or syslog/journald through /dev/log. */
export function daemonLogSink (logFile: string | undefined): (line: string) => void {
  if (logFile !== undefined) {
    const fd = fs.openSync(logFile, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600)
    return line => { try { fs.writeSync(fd, `${new Date().toISOString()} ${line}\n`) } catch { /* nowhere left to log */ } }
  }
  // RFC 3164 over the local socket: facility daemon (3), severity notice (5). journald reads /dev/log too.
  return line => { posix.sendDatagram('/dev/log', Buffer.from(`<${3 * 8 + 5}>${line}`)) }
}

