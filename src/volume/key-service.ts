import { spawn } from 'child_process'
import fs from 'fs'
import { VolumeError } from './errors'

/** A key service that does not answer within this long has failed (clevis gives up on a dead Tang server sooner). */
const SERVICE_TIMEOUT_MS = 60_000

/** How a key-service command is run: a shell command line, or a fixed argv without a shell. */
export type ServiceCommand = { shell: string } | { argv: string[] }

/**
 * Runs a key-service command (a wrap or an unwrap) in a session and process group of its own
 * (so without a controlling terminal: a service cannot prompt): `input` on its stdin, its
 * stdout returned, at most `maxOut` bytes; its stderr is ours, so the service's own reason
 * for refusing reaches the user. The group is killed when the time is up or the output too
 * long, and once the command has exited, so a pipeline that leaves a process behind in it
 * cannot hang sealfs. Secrets travel only through the pipes: never in argv, the environment or a file.
 * Failure is a VolumeError('key-service') naming what failed, never what was written or read.
 */
export function runKeyService (command: ServiceCommand, input: Buffer, maxOut: number, what: string): Promise<Buffer> {
  const [file, args] = 'shell' in command ? ['/bin/sh', ['-c', command.shell]] : [command.argv[0], command.argv.slice(1)]
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'], detached: true })
    const parts: Buffer[] = []
    let size = 0
    let why: string | null = null
    let settled = false
    const killGroup = (reason: string): void => {
      if (why === null) why = reason
      try { process.kill(-(child.pid as number), 'SIGKILL') } catch { /* gone */ }
      child.stdout!.destroy()
      // A process stuck in the kernel may not die at once: the answer does not wait for it.
      setTimeout(() => finish(new VolumeError('key-service', `${what} ${why ?? reason}`)), 2000).unref()
    }
    const timer = setTimeout(() => killGroup(`did not answer within ${SERVICE_TIMEOUT_MS / 1000} s`), SERVICE_TIMEOUT_MS)
    const wipe = (): void => { for (const p of parts) p.fill(0) }
    const finish = (err: VolumeError | null): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (err !== null) { wipe(); reject(err); return }
      const out = Buffer.concat(parts)
      wipe()
      resolve(out)
    }
    child.stdout!.on('data', (d: Buffer) => {
      size += d.length
      if (size <= maxOut) { parts.push(d); return }
      d.fill(0)
      killGroup(`printed more than ${maxOut} bytes`)
    })
    child.stdin!.on('error', () => undefined)  // a command that exits without reading its input
    child.stdin!.end(input)
    child.on('error', () => finish(new VolumeError('key-service', `${what}: cannot run ${file}`)))
    child.on('exit', (code, signal) => {
      // The command itself has ended: whatever it left behind in its group goes too, and the
      // output is what it wrote before (a leftover holding the pipe must not keep us waiting).
      try { process.kill(-(child.pid as number), 'SIGKILL') } catch { /* none left */ }
      const done = (): void => {
        if (why !== null) return finish(new VolumeError('key-service', `${what} ${why}`))
        if (code !== 0) return finish(new VolumeError('key-service', `${what} failed (${signal ?? `exit ${String(code)}`})`))
        finish(null)
      }
      if (child.stdout!.readableEnded || child.stdout!.destroyed) return done()
      child.stdout!.once('close', done)
      setTimeout(() => { child.stdout!.destroy() }, 1000).unref()
    })
  })
}

/** What an unwrap prints: the secret, with at most one line ending (`\n` or `\r\n`) after it, removed here. */
export function trimLineEnd (out: Buffer): Buffer {
  let end = out.length
  if (end > 0 && out[end - 1] === 0x0a) {
    end--
    if (end > 0 && out[end - 1] === 0x0d) end--
  }
  return out.subarray(0, end)
}

/**
 * Unwrap commands that run without asking, with a fixed argv and no shell: what they are
 * given (the blob) is data, not a command, so a slot planted in the cipher dir can make them
 * do no more than they do for any input.
 */
const BUILT_IN: Record<string, string[]> = {
  'clevis decrypt': ['clevis', 'decrypt'],
  'systemd-creds decrypt --name=sealfs - -': ['systemd-creds', 'decrypt', '--name=sealfs', '-', '-']
}

/** Where the local list of other allowed unwrap commands is (one per line); SEALFS_UNWRAP_COMMANDS overrides it. */
export const UNWRAP_ALLOW_FILE = '/etc/sealfs/unwrap-commands'
const MAX_ALLOW_BYTES = 64 * 1024

/**
 * How to run a slot's stored unwrap command, or null if it may not run. The cipher dir (and
 * so the command stored in its config) is not trusted: a command runs only if it is one of
 * the built-in ones, or listed verbatim in the local allow-list, a regular file owned by
 * root or the user running sealfs that no one else may write.
 */
export function allowedUnwrap (command: string): ServiceCommand | null {
  const builtIn = BUILT_IN[command]
  if (builtIn !== undefined) return { argv: builtIn }
  const file = process.env.SEALFS_UNWRAP_COMMANDS ?? UNWRAP_ALLOW_FILE
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
  } catch {
    return null
  }
  try {
    const st = fs.fstatSync(fd)
    const euid = process.geteuid?.() ?? -1
    if (!st.isFile() || st.size > MAX_ALLOW_BYTES || !(st.uid === 0 || st.uid === euid) || (st.mode & 0o022) !== 0) return null
    const buf = Buffer.alloc(MAX_ALLOW_BYTES + 1)
    const n = fs.readSync(fd, buf, 0, buf.length, 0)
    if (n > MAX_ALLOW_BYTES) return null
    const lines = buf.subarray(0, n).toString('utf8').split('\n').map(l => l.replace(/\r$/, ''))
    return lines.includes(command) && !command.startsWith('#') ? { shell: command } : null
  } finally {
    fs.closeSync(fd)
  }
}
