import { spawn } from 'child_process'
import { VolumeError } from './errors'

/** A key service that does not answer within this long has failed (clevis gives up on a dead Tang server sooner). */
const SERVICE_TIMEOUT_MS = 60_000

/**
 * Runs a key-service command (a wrap or an unwrap) with /bin/sh -c: `input` on its stdin, its
 * stdout returned, at most `maxOut` bytes; its stderr is ours, so the service's own reason
 * for refusing reaches the user. Secrets travel only through the pipes: never in argv, the
 * environment or a file. Failure is a VolumeError('key-service') naming the slot and the
 * exit status, never what was written or read.
 */
export function runKeyService (command: string, input: Buffer, maxOut: number, what: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['pipe', 'pipe', 'inherit'], timeout: SERVICE_TIMEOUT_MS, killSignal: 'SIGKILL' })
    const parts: Buffer[] = []
    let size = 0
    let tooLong = false
    const wipe = (): void => { for (const p of parts) p.fill(0) }
    child.stdout!.on('data', (d: Buffer) => {
      size += d.length
      if (size <= maxOut) parts.push(d)
      else tooLong = true
      if (tooLong) d.fill(0)
    })
    child.stdin!.on('error', () => undefined)  // a command that exits without reading its input
    child.stdin!.end(input)
    child.on('error', () => { wipe(); reject(new VolumeError('key-service', `${what}: cannot run /bin/sh`)) })
    child.on('close', (code, signal) => {
      if (code !== 0 || tooLong) {
        wipe()
        const why = tooLong ? `printed more than ${maxOut} bytes` : signal === 'SIGKILL' ? `did not answer within ${SERVICE_TIMEOUT_MS / 1000} s` : `failed (${signal ?? `exit ${String(code)}`})`
        return reject(new VolumeError('key-service', `${what} ${why}`))
      }
      const out = Buffer.concat(parts)
      wipe()
      resolve(out)
    })
  })
}

/** What an unwrap prints: the secret, with at most one line ending after it (removed here). */
export function trimLineEnd (out: Buffer): Buffer {
  let end = out.length
  if (end > 0 && out[end - 1] === 0x0a) end--
  if (end > 0 && out[end - 1] === 0x0d) end--
  return out.subarray(0, end)
}
