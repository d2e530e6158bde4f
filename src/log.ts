// One place for daemon log lines. Callers pass only facts that are not secret: file IDs,
// chunk indexes, errno codes, the cipher dir and mount point. Never names or paths inside the
// volume, plaintext or key material.

/** syslog(3) severities, as the journal and /dev/log take them. */
export const LOG_LEVELS = { error: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const
export type LogLevel = keyof typeof LOG_LEVELS

/** Where a line goes: its severity (LOG_LEVELS) and the message, without prefix. */
export type LogSink = (severity: number, message: string) => void

let sink: LogSink = (severity, message) => { process.stderr.write(`sealfs[${process.pid}]: ${levelName(severity)}: ${message}\n`) }
let threshold: number = LOG_LEVELS.notice

export function levelName (severity: number): LogLevel {
  return (Object.keys(LOG_LEVELS) as LogLevel[]).find(k => LOG_LEVELS[k] === severity) ?? 'notice'
}

export function setLogSink (fn: LogSink): void {
  sink = fn
}

/** Lines less severe than `level` are dropped (the default is notice). */
export function setLogLevel (level: LogLevel): void {
  threshold = LOG_LEVELS[level]
}

/**
 * Logs one line. The default level, warning, is for what went wrong in the volume (a file
 * that does not authenticate, a write refused); tampering is an error; mount events notices.
 */
export function logLine (message: string, level: LogLevel = 'warning'): void {
  const severity = LOG_LEVELS[level]
  if (severity <= threshold) sink(severity, message.replace(/[\r\n]+/g, ' '))
}
