import { spawn, spawnSync } from 'child_process'
import fs from 'fs'
import tty from 'tty'
import { MAX_KEYFILE_BYTES } from '../crypto/secret-kdf'
import type { Credential } from '../volume/key-slot'
import { CliError } from './exit-codes'

const MAX_PASSPHRASE = 4096
const EXTPASS_TIMEOUT_MS = 60_000
/** Signals that cancel the prompt, as they cancel a mount. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

function firstLine (buf: Buffer, what: string): Buffer {
  let end = buf.indexOf(0x0a)
  if (end < 0) end = buf.length
  if (end > 0 && buf[end - 1] === 0x0d) end--
  const line = Buffer.alloc(end)
  buf.copy(line, 0, 0, end)
  buf.fill(0)
  if (line.length === 0) throw new CliError('passphrase-source', `${what} gave an empty passphrase`)
  if (line.length > MAX_PASSPHRASE) throw new CliError('passphrase-source', `${what} gave a passphrase longer than ${MAX_PASSPHRASE} bytes`)
  return line
}

/**
 * Reads `fd` to its end, at most MAX_PASSPHRASE + 2 bytes (a passphrase, its newline and a
 * CR): a pipe or standard input. Waits while a non-blocking descriptor has nothing yet.
 */
function readBounded (fd: number, what: string): Buffer {
  const buf = Buffer.alloc(MAX_PASSPHRASE + 3)
  let got = 0
  for (;;) {
    let n: number
    try {
      n = fs.readSync(fd, buf, got, buf.length - got, null)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20)
      continue
    }
    if (n === 0) break
    got += n
    if (got === buf.length) { buf.fill(0); throw new CliError('passphrase-source', `${what} is too long to be a passphrase`) }
  }
  const out = Buffer.from(buf.subarray(0, got))
  buf.fill(0)
  return out
}

/**
 * The first line of a file (without its newline): a regular file, a pipe or FIFO
 * (`--passfile <(...)`, `/dev/stdin`), or standard input (`-`). A regular file that others may
 * read, or that another user owns, gets a warning: it holds the key to the volume.
 */
export function fromPassfile (file: string): Buffer {
  if (file === '-') return firstLine(readBounded(0, 'standard input'), 'standard input')
  let buf: Buffer
  try {
    const st = fs.statSync(file)
    if (st.isFIFO() || st.isCharacterDevice() || st.isSocket()) {
      const fd = fs.openSync(file, fs.constants.O_RDONLY)
      try {
        buf = readBounded(fd, `passfile ${file}`)
      } finally {
        fs.closeSync(fd)
      }
    } else {
      if (!st.isFile()) throw new CliError('passphrase-source', `passfile ${file} is not a regular file, a pipe or standard input`)
      if (st.size > MAX_PASSPHRASE + 2) throw new CliError('passphrase-source', `passfile ${file} is too large to be a passphrase file`)
      const uid = process.geteuid?.() ?? st.uid
      if ((st.mode & 0o077) !== 0) process.stderr.write(`sealfs: warning: passfile ${file} can be read by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it\n`)
      else if (st.uid !== uid && st.uid !== 0) process.stderr.write(`sealfs: warning: passfile ${file} belongs to another user (uid ${st.uid})\n`)
      buf = fs.readFileSync(file)
    }
  } catch (e) {
    if (e instanceof CliError) throw e
    throw new CliError('passphrase-source', `cannot read passfile ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  return firstLine(buf, `passfile ${file}`)
}

/** The first line a program prints (run with /bin/sh -c); it must exit 0 within a minute. */
export function fromExtpass (command: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'inherit'], timeout: EXTPASS_TIMEOUT_MS })
    const parts: Buffer[] = []
    let size = 0
    child.stdout.on('data', (d: Buffer) => { size += d.length; if (size <= MAX_PASSPHRASE + 2) parts.push(d) })
    child.on('error', () => reject(new CliError('passphrase-source', 'cannot run the extpass program')))
    child.on('close', (code, signal) => {
      const buf = Buffer.concat(parts)
      for (const p of parts) p.fill(0)
      if (code !== 0) {
        buf.fill(0)
        return reject(new CliError('passphrase-source', `the extpass program failed (${signal ?? `exit ${String(code)}`})`))
      }
      try { resolve(firstLine(buf, 'the extpass program')) } catch (e) { reject(e) }
    })
  })
}

/** Reads everything from a descriptor (the daemon gets its passphrase from its parent this way). */
export function fromDescriptor (fd: number): Buffer {
  const parts: Buffer[] = []
  const chunk = Buffer.alloc(4096)
  for (;;) {
    const n = fs.readSync(fd, chunk, 0, chunk.length, null)
    if (n === 0) break
    parts.push(Buffer.from(chunk.subarray(0, n)))
  }
  chunk.fill(0)
  const buf = Buffer.concat(parts)
  for (const p of parts) p.fill(0)
  return buf
}

/**
 * Runs stty(1) on the terminal `fd`: the line discipline's own modes, which node cannot set
 * (its raw mode is all or nothing). Returns stty's output, or null if it failed.
 */
function stty (fd: number, args: string[]): string | null {
  const r = spawnSync('stty', args, { stdio: [fd, 'pipe', 'ignore'], encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/** Whether the locale's charset is UTF-8, or unnamed (then UTF-8 is the likeliest). */
function utf8Locale (): boolean {
  // An empty variable is as good as unset (setlocale(3) skips it too).
  const locale = [process.env.LC_ALL, process.env.LC_CTYPE, process.env.LANG].find(v => v !== undefined && v !== '') ?? ''
  return !locale.includes('.') || /\.utf-?8/i.test(locale)
}

/**
 * Reads one line from the terminal as the system's own prompts do (passwd, sudo): the
 * terminal's canonical mode with echo off, so its erase (Backspace), word erase (Ctrl-W) and
 * kill (Ctrl-U) keys work as they do everywhere, and erase removes a whole UTF-8 character
 * (iutf8): the passphrase is what the user saw. Ctrl-C, Ctrl-D on an empty line, SIGTERM and
 * SIGHUP cancel it (exit 25). The terminal's modes are put back as they were in every case.
 */
export function fromTerminal (prompt: string): Promise<Buffer> {
  let fd: number
  try {
    fd = fs.openSync('/dev/tty', 'r+')
  } catch {
    return Promise.reject(new CliError('passphrase-source', 'no terminal to read the passphrase from; use --passfile or --extpass'))
  }
  const saved = stty(fd, ['-g'])
  // Canonical mode with its line editing, Ctrl-C as a signal, CR as the end of a line.
  const modes = ['-echo', 'icanon', 'isig', 'icrnl', ...(utf8Locale() ? ['iutf8'] : [])]
  if (saved === null || stty(fd, modes) === null) {
    fs.closeSync(fd)
    return Promise.reject(new CliError('passphrase-source', 'cannot turn the terminal\'s echo off (stty failed); use --passfile or --extpass'))
  }
  fs.writeSync(fd, prompt)
  const input = new tty.ReadStream(fd)
  const parts: Buffer[] = []
  let size = 0
  return new Promise<Buffer>((resolve, reject) => {
    let done = false
    const finish = (err: CliError | null): void => {
      if (done) return
      done = true
      for (const signal of STOP_SIGNALS) process.off(signal, onSignal)
      process.off('SIGCONT', onContinue)
      input.removeAllListeners('data')
      input.removeAllListeners('end')
      stty(fd, [saved])
      try { fs.writeSync(fd, '\n') } catch { /* gone */ }
      input.destroy()
      const line = Buffer.concat(parts)
      for (const p of parts) p.fill(0)
      if (err !== null) { line.fill(0); reject(err); return }
      try { resolve(firstLine(line, 'the terminal')) } catch (e) { reject(e) }
    }
    const onSignal = (signal: NodeJS.Signals): void => { finish(new CliError('cancelled', `cancelled at the passphrase prompt (${signal === 'SIGINT' ? 'Ctrl-C' : signal})`)) }
    for (const signal of STOP_SIGNALS) process.on(signal, onSignal)
    // Back from Ctrl-Z (fg): the shell may have put echo back on meanwhile.
    const onContinue = (): void => { stty(fd, modes); try { fs.writeSync(fd, `\n${prompt}`) } catch { /* gone */ } }
    process.on('SIGCONT', onContinue)
    input.on('error', () => finish(new CliError('passphrase-source', 'the terminal went away while the passphrase was typed')))
    input.on('data', (d: Buffer) => {
      // Canonical mode hands over whole lines: this one ends at its newline.
      parts.push(Buffer.from(d))
      size += d.length
      d.fill(0)
      if (parts[parts.length - 1].includes(0x0a)) return finish(null)
      if (size > MAX_PASSPHRASE + 1) return finish(new CliError('passphrase-source', `the passphrase is longer than ${MAX_PASSPHRASE} bytes`))
    })
    // Ctrl-D on an empty line: end of input.
    input.on('end', () => finish(new CliError('cancelled', 'cancelled at the passphrase prompt (end of input)')))
  })
}

/** A key file, read whole as bytes. */
export function fromKeyfile (file: string): Buffer {
  try {
    const st = fs.statSync(file)
    if (!st.isFile()) throw new CliError('passphrase-source', `key file ${file} is not a regular file`)
    if (st.size === 0 || st.size > MAX_KEYFILE_BYTES) throw new CliError('passphrase-source', `key file ${file} is ${st.size === 0 ? 'empty' : 'too large to be a key file'}`)
    return fs.readFileSync(file)
  } catch (e) {
    if (e instanceof CliError) throw e
    throw new CliError('passphrase-source', `cannot read key file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
  }
}

export interface PassphraseOptions { passfile?: string, extpass?: string }
export interface CredentialOptions extends PassphraseOptions { keyfile?: string }

/** The credential given on the command line (a key file, a passphrase), else a passphrase from the terminal. */
export async function readCredential (o: CredentialOptions): Promise<Credential> {
  if (o.keyfile !== undefined) {
    if (o.passfile !== undefined || o.extpass !== undefined) throw new CliError('usage', 'use only one of --keyfile, --passfile and --extpass')
    return { kind: 'keyfile', secret: fromKeyfile(o.keyfile) }
  }
  return { kind: 'passphrase', secret: await readPassphrase(o, false) }
}

export async function readPassphrase (o: PassphraseOptions, confirm: boolean, label = 'Passphrase'): Promise<Buffer> {
  if (o.passfile !== undefined && o.extpass !== undefined) throw new CliError('usage', 'use only one of --passfile and --extpass')
  if (o.passfile !== undefined) return fromPassfile(o.passfile)
  if (o.extpass !== undefined) return fromExtpass(o.extpass)
  const first = await fromTerminal(`${label}: `)
  if (!confirm) return first
  const again = await fromTerminal(`Repeat ${label.toLowerCase()}: `)
  const same = first.equals(again)
  again.fill(0)
  if (!same) { first.fill(0); throw new CliError('passphrase-source', 'the passphrases do not match') }
  return first
}
