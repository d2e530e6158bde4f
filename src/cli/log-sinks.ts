import fs from 'fs'
import { loadAddon, PosixAddon } from '../native'
import { CliError } from './exit-codes'
import { LogSink, levelName } from '../log'

const posix = loadAddon<PosixAddon>('posix')

/** facility daemon (3), as syslog(3) numbers it. */
const FACILITY_DAEMON = 3

/**
 * Where the journal and syslog listen. SEALFS_JOURNAL_SOCKET and SEALFS_SYSLOG_SOCKET move
 * them (a container that binds them elsewhere; the tests, which start their own listener).
 */
function journalSocket (): string { return process.env.SEALFS_JOURNAL_SOCKET ?? '/run/systemd/journal/socket' }
function syslogSocket (): string { return process.env.SEALFS_SYSLOG_SOCKET ?? '/dev/log' }

function isSocket (p: string): boolean {
  try { return fs.statSync(p).isSocket() } catch { return false }
}

/**
 * systemd's native protocol (systemd.journal-fields(7)): one datagram of KEY=value lines; a
 * line the journal refuses (journald restarting, say) goes to `fallback`.
 */
function journalSink (socket: string, fallback: LogSink): LogSink {
  return (severity, message) => {
    const sent = posix.sendDatagram(socket, Buffer.from(`MESSAGE=${message}\nPRIORITY=${severity}\nSYSLOG_FACILITY=${FACILITY_DAEMON}\nSYSLOG_IDENTIFIER=sealfs\nSYSLOG_PID=${process.pid}\n`))
    if (sent < 0) fallback(severity, message)
  }
}

/** RFC 3164 over the local socket, as syslog(3) sends it. */
function syslogSink (socket: string): LogSink {
  return (severity, message) => { posix.sendDatagram(socket, Buffer.from(`<${FACILITY_DAEMON * 8 + severity}>sealfs[${process.pid}]: ${message}`)) }
}

/** A file (--log): appended to, one timestamped line each; its descriptor, for the daemon's standard streams. */
function fileSink (file: string): { sink: LogSink, fd: number } {
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600)
  } catch (e) {
    throw new CliError('usage', `cannot open the log file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  return {
    fd,
    sink: (severity, message) => {
      try { fs.writeSync(fd, `${new Date().toISOString()} ${levelName(severity)} sealfs[${process.pid}]: ${message}\n`) } catch { /* nowhere left to log */ }
    }
  }
}

/**
 * Whether standard error is the journal stream systemd gave this process (JOURNAL_STREAM is
 * its device:inode, systemd.exec(5)); a shell started from such a process inherits the
 * variable with a terminal on fd 2.
 */
function stderrIsJournal (): boolean {
  const m = /^(\d+):(\d+)$/.exec(process.env.JOURNAL_STREAM ?? '')
  if (m === null) return false
  try {
    const st = fs.fstatSync(2, { bigint: true })
    return st.dev === BigInt(m[1]) && st.ino === BigInt(m[2])
  } catch { return false }
}

/**
 * Standard error. Under systemd (JOURNAL_STREAM set: stderr is a journal stream) with the
 * `<N>` prefix the journal reads as the line's priority.
 */
function stderrSink (): LogSink {
  const journal = stderrIsJournal()
  return (severity, message) => {
    process.stderr.write(journal ? `<${severity}>${message}\n` : `sealfs[${process.pid}]: ${levelName(severity)}: ${message}\n`)
  }
}

export interface ChosenSink {
  sink: LogSink
  /** Where it goes, for the user: 'the journal', 'syslog', a file, 'standard error'. */
  where: string
  /** Said once to the user when lines could be lost. */
  warning?: string
  /** For a file: its descriptor, where a detached daemon's standard streams go once it is ready. */
  fd?: number
}

/**
 * A mount's log: --log FILE (detached or with -f); else a foreground mount's standard error;
 * else the journal or syslog; neither here, nowhere, and the warning says so.
 */
export function chooseLogSink (logFile: string | undefined, foreground: boolean): ChosenSink {
  if (logFile !== undefined) return { ...fileSink(logFile), where: logFile }
  if (foreground) return { sink: stderrSink(), where: 'standard error' }
  const journal = journalSocket()
  const syslog = syslogSocket()
  if (isSocket(journal)) return { sink: journalSink(journal, syslogSink(syslog)), where: 'the journal' }
  if (isSocket(syslog)) return { sink: syslogSink(syslog), where: 'syslog' }
  // Standard error would reach the user's terminal until the mount is ready, beside the
  // warnings and errors its parent prints already, and nowhere after.
  return { sink: () => {}, where: 'nowhere', warning: `no journal (${journal}) or syslog (${syslog}) here: the daemon's log lines are lost once it detaches; use --log FILE to keep them` }
}
