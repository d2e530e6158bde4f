import { ChildProcess, execFileSync, spawn, spawnSync } from 'child_process'
import fs from 'fs'
import net from 'net'
import path from 'path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { CONFIG_FILE, VolumeConfig } from '../src/volume/config'
import { CLI, cleanup, isMounted, makeVolume, removeTree, sleep, takeDown, tempDir, umount, Vol } from './helpers'

const TANGD = '/usr/libexec/tangd'
/** clevis reaches the test's Tang server through curl: never through a proxy from the environment. */
const LOOPBACK_ENV = { ...process.env, no_proxy: '127.0.0.1', NO_PROXY: '127.0.0.1' }
const TANGD_KEYGEN = '/usr/libexec/tangd-keygen'

/**
 * sealfs in a session of its own (setsid): no controlling terminal, so a prompt cannot be the
 * way in, as under systemd or mount(8) at boot.
 */
function detached (args: string[], env: NodeJS.ProcessEnv = LOOPBACK_ENV): { status: number, stdout: string, stderr: string } {
  // A mount's daemon logs into the test's directory, not the host's syslog.
  const log = args[0] === 'mount' ? ['--log', path.join(path.dirname(args[args.length - 1]), 'daemon.log')] : []
  const r = spawnSync('setsid', ['-w', process.execPath, CLI, args[0], ...log, ...args.slice(1)], { encoding: 'utf8', env, timeout: 90_000 })
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

/**
 * Runs sealfs on a terminal (script(1) gives it one) and types `answer` once the prompt
 * matching `prompt` has appeared (not after a fixed delay); resolves with its status and output.
 */
function onTerminal (args: string[], prompt: RegExp, answer: string, env: NodeJS.ProcessEnv): Promise<{ status: number | null, out: string }> {
  return new Promise(resolve => {
    const child = spawn('script', ['-qfec', `${process.execPath} ${CLI} ${args.map(a => `'${a}'`).join(' ')}`, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'inherit'] })
    let out = ''
    let typed = false
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      if (!typed && prompt.test(out)) {
        typed = true
        child.stdin!.write(answer + '\r')
      }
    })
    child.on('close', code => {
      clearTimeout(timer)
      child.stdin!.destroy()
      resolve({ status: code, out })
    })
  })
}

function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port
      srv.close(() => resolve(port))
    })
  })
}

async function answers (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/** A real Tang server on a loopback port: tangd (one connection on stdin/stdout) behind socat, keys in the test's directory. */
class TangServer {
  #proc: ChildProcess | null = null
  constructor (readonly db: string, readonly port: number) {}
  get url (): string { return `http://127.0.0.1:${this.port}` }

  async start (): Promise<void> {
    this.#proc = spawn('socat', [`TCP-LISTEN:${this.port},bind=127.0.0.1,fork,reuseaddr`, `EXEC:${TANGD} ${this.db}`], { stdio: 'ignore' })
    for (let i = 0; i < 100 && !(await answers(this.port)); i++) await sleep(50)
  }

  async stop (): Promise<void> {
    const p = this.#proc
    this.#proc = null
    if (p === null || p.exitCode !== null || p.signalCode !== null) return
    const gone = new Promise(resolve => p.once('exit', resolve))
    p.kill('SIGKILL')
    await gone
  }
}

function writeFile (v: Vol, name: string, content: string): string {
  const f = path.join(v.base, name)
  fs.writeFileSync(f, content, { mode: 0o600 })
  return f
}

async function mountsAndServes (v: Vol, cipher: string, env?: NodeJS.ProcessEnv): Promise<void> {
  const r = detached(['mount', cipher, v.mnt], env)
  expect(r.status, r.stderr).toBe(0)
  try {
    fs.writeFileSync(path.join(v.mnt, 'note'), 'opened by a key service')
    expect(fs.readFileSync(path.join(v.mnt, 'note'), 'utf8')).toBe('opened by a key service')
  } finally {
    await umount(v)
  }
}

describe('key-service slots', () => {
  let v: Vol
  let tang: TangServer
  let tangDir: string
  beforeAll(async () => {
    v = makeVolume()
    // Tang's keys in a directory of its own: the server outlives each test's takeDown(v.base).
    tangDir = tempDir('tang')
    const db = path.join(tangDir, 'db')
    fs.mkdirSync(db)
    execFileSync(TANGD_KEYGEN, [db])
    tang = new TangServer(db, await freePort())
    await tang.start()
  })
  afterEach(async () => { await takeDown(v.base) })
  afterAll(async () => {
    try {
      await tang?.stop()
    } finally {
      await cleanup(v)
      if (tangDir !== undefined) await removeTree(tangDir)
    }
  })

  it('Tang: unlocks by itself while the server answers; once its keys are gone, the volume and its backups are unreadable', async () => {
    const wrap = `clevis encrypt tang '{"url":"${tang.url}"}' -y`
    const add = detached(['key', 'add', '--passfile', v.passfile, '--name', 'tang', '--wrap-cmd', wrap, '--unwrap-cmd', 'clevis decrypt', v.cipher])
    expect(add.status, add.stderr).toBe(0)
    const slot = (JSON.parse(fs.readFileSync(path.join(v.cipher, CONFIG_FILE), 'utf8')) as VolumeConfig).slots[1]
    expect(slot).toMatchObject({ name: 'tang', kind: 'command', unwrapCmd: 'clevis decrypt' })

    // No credential, no terminal: the Tang slot opens the volume, for mount and key commands alike.
    await mountsAndServes(v, v.cipher)
    const rm = detached(['key', 'remove', v.cipher, 'passphrase'])
    expect(rm.status, rm.stderr).toBe(0)
    expect(detached(['mount', '--passfile', v.passfile, v.cipher, v.mnt]).status).toBe(7)
    const backup = path.join(v.base, 'backup')
    execFileSync('cp', ['-a', v.cipher, backup])
    await mountsAndServes(v, backup)

    // The key service disables the key: Tang's keys replaced and the old ones deleted.
    await tang.stop()
    for (const f of fs.readdirSync(tang.db)) fs.rmSync(path.join(tang.db, f))
    execFileSync(TANGD_KEYGEN, [tang.db])
    await tang.start()
    for (const cipher of [v.cipher, backup]) {
      const r = detached(['mount', cipher, v.mnt])
      expect(r.status, r.stderr).toBe(15)
      expect(r.stderr).toMatch(/sealfs: key service of slot 'tang': the unwrap command failed \(exit \d+\)\n$/)
      expect(isMounted(v.mnt)).toBe(false)
    }
    expect(detached(['key', 'list', v.cipher]).status).toBe(0)  // still readable, just not openable
  }, 120_000)

  it('systemd-creds with a host key: opens by itself, and not once the host key is gone', async () => {
    const w = makeVolume()
    try {
      // The host key lives in the test's directory, not in /var/lib/systemd.
      const env = { ...LOOPBACK_ENV, SYSTEMD_CREDENTIAL_SECRET: path.join(w.base, 'credential.secret') }
      const add = detached(['key', 'add', '--passfile', w.passfile, '--name', 'host', '--wrap-cmd', 'systemd-creds encrypt --with-key=host --name=sealfs - -',
        '--unwrap-cmd', 'systemd-creds decrypt --name=sealfs - -', w.cipher], env)
      expect(add.status, add.stderr).toBe(0)
      expect(fs.existsSync(env.SYSTEMD_CREDENTIAL_SECRET)).toBe(true)
      const r = detached(['mount', w.cipher, w.mnt], env)
      expect(r.status, r.stderr).toBe(0)
      try {
        fs.writeFileSync(path.join(w.mnt, 'f'), 'x')
      } finally {
        await umount(w)
      }
      fs.rmSync(env.SYSTEMD_CREDENTIAL_SECRET)
      const gone = detached(['mount', w.cipher, w.mnt], env)
      expect(gone.status, gone.stderr).toBe(15)
      expect(isMounted(w.mnt)).toBe(false)
      // The passphrase slot is still there: a credential given explicitly is used as it is.
      expect(detached(['mount', '--passfile', w.passfile, w.cipher, w.mnt], env).status).toBe(0)
      await umount(w)
    } finally {
      await cleanup(w)
    }
  }, 120_000)

  it('falls back to the terminal prompt, saying so, when no key service answers', async () => {
    const w = makeVolume()
    try {
      const script = path.join(w.base, 'unwrap.sh')
      fs.writeFileSync(script, 'base64 -d\n')
      const unwrap = `sh '${script}'`
      const allow = path.join(w.base, 'unwrap-commands')
      fs.writeFileSync(allow, `${unwrap}\n`, { mode: 0o600 })
      const env = { ...LOOPBACK_ENV, SEALFS_UNWRAP_COMMANDS: allow }
      expect(detached(['key', 'add', '--passfile', w.passfile, '--name', 'svc', '--wrap-cmd', 'base64', '--unwrap-cmd', unwrap, w.cipher]).status).toBe(0)
      fs.writeFileSync(script, 'echo "service unreachable" >&2; exit 3\n')
      // A terminal: the passphrase is asked for, and the prompt says why.
      const r = await onTerminal(['mount', '--log', path.join(w.base, 'daemon.log'), w.cipher, w.mnt], /Passphrase \(no key service answered\): /, 'test passphrase', env)
      expect(r.status, r.out).toBe(0)
      expect(r.out).toMatch(/service unreachable/)
      expect(r.out).not.toMatch(/test passphrase/)  // not echoed
      expect(isMounted(w.mnt)).toBe(true)
      await umount(w)
      // passwd without a name changes the passphrase slot the typed passphrase opens, even
      // while a key service answers (it is not asked).
      fs.writeFileSync(script, 'base64 -d\n')
      const p2 = path.join(w.base, 'p2')
      fs.writeFileSync(p2, 'second passphrase\n')
      const pw = await onTerminal(['key', 'passwd', '--new-passfile', p2, w.cipher], /Passphrase: /, 'test passphrase', env)
      expect(pw.status, pw.out).toBe(0)
      expect(pw.out).toMatch(/Changed the passphrase of key slot 'passphrase'/)
      expect(detached(['mount', '--passfile', p2, '--log', path.join(w.base, 'daemon.log'), w.cipher, w.mnt], env).status).toBe(0)
      await umount(w)
    } finally {
      await cleanup(w)
    }
  }, 120_000)

  it('hands the secret over pipes only, checks the unwrap at enrolment, and runs a stored command only if built in or allowed locally', async () => {
    const w = makeVolume()
    try {
      const seen = path.join(w.base, 'seen')
      fs.mkdirSync(seen)
      // A stand-in service that records what it is given (stdin, argv, environment) and how
      // often the unwrap runs; unwrap.sh can change behaviour later without its command changing.
      const wrap = `cat > '${seen}/wrap-input'; printf '%s\\n' "$0 $*" > '${seen}/wrap-argv'; env > '${seen}/wrap-env'; base64 '${seen}/wrap-input'`
      const script = path.join(seen, 'unwrap.sh')
      fs.writeFileSync(script, `echo run >> '${seen}/unwrap-runs'; env > '${seen}/unwrap-env'; base64 -d\n`)
      const unwrap = `sh '${script}'`
      const allow = path.join(w.base, 'unwrap-commands')
      fs.writeFileSync(allow, `# test\n${unwrap}\n`, { mode: 0o600 })
      const env = { ...LOOPBACK_ENV, SEALFS_UNWRAP_COMMANDS: allow }

      const bad = detached(['key', 'add', '--passfile', w.passfile, '--name', 'broken', '--wrap-cmd', wrap, '--unwrap-cmd', 'echo wrong', w.cipher])
      expect([bad.status, bad.stderr]).toEqual([15, 'sealfs: the unwrap command did not give back what the wrap command was given\n'])
      expect((JSON.parse(fs.readFileSync(path.join(w.cipher, CONFIG_FILE), 'utf8')) as VolumeConfig).slots.length).toBe(1)

      const add = detached(['key', 'add', '--passfile', w.passfile, '--name', 'svc', '--wrap-cmd', wrap, '--unwrap-cmd', unwrap, w.cipher])
      expect(add.status, add.stderr).toBe(0)
      const secret = fs.readFileSync(path.join(seen, 'wrap-input'), 'utf8')
      expect(secret).toMatch(/^[0-9a-f]{64}\n$/)
      fs.rmSync(path.join(seen, 'unwrap-runs'))
      await mountsAndServes(w, w.cipher, env)
      // Asked once, by the command the user ran: the daemon gets the secret from it, over a pipe.
      expect(fs.readFileSync(path.join(seen, 'unwrap-runs'), 'utf8')).toBe('run\n')
      const hex = secret.trim()
      for (const f of ['wrap-argv', 'wrap-env', 'unwrap-env']) expect(fs.readFileSync(path.join(seen, f), 'utf8')).not.toContain(hex)
      expect(fs.readFileSync(path.join(w.cipher, CONFIG_FILE), 'utf8')).not.toContain(hex)

      // Not allowed: no local list, or one that someone else owns or may write. Nothing runs.
      const noList = detached(['mount', w.cipher, w.mnt])
      expect(noList.status).toBe(15)
      expect(noList.stderr).toMatch(/neither built in nor in the local allow-list .*, so it was not run\n$/)
      for (const [uid, mode] of [[65534, 0o600], [0, 0o620], [0, 0o606]]) {
        fs.chownSync(allow, uid, 0)
        fs.chmodSync(allow, mode)
        expect(detached(['mount', w.cipher, w.mnt], env).status).toBe(15)
      }
      fs.chownSync(allow, 0, 0)
      fs.chmodSync(allow, 0o600)
      expect(fs.readFileSync(path.join(seen, 'unwrap-runs'), 'utf8')).toBe('run\n')

      // A service that answers with another secret, and a slot whose stored command was
      // edited (to one that is allowed and gives the right secret): neither opens the slot.
      fs.writeFileSync(script, 'printf "%064d\\n" 0\n')
      const zeros = detached(['mount', w.cipher, w.mnt], env)
      expect([zeros.status, zeros.stderr]).toEqual([7, 'sealfs: the key service gave a secret that does not open its slot (or the volume config was modified)\n'])
      fs.writeFileSync(script, 'base64 -d\n')
      const c = JSON.parse(fs.readFileSync(path.join(w.cipher, CONFIG_FILE), 'utf8')) as VolumeConfig
      const edited = `${unwrap} # edited`
      ;(c.slots[1] as unknown as Record<string, unknown>).unwrapCmd = edited
      fs.writeFileSync(path.join(w.cipher, CONFIG_FILE), JSON.stringify(c))
      fs.appendFileSync(allow, `${edited}\n`)
      expect(detached(['mount', w.cipher, w.mnt], env).status).toBe(7)

      // A planted slot's command that is not allowed never runs, whoever owns the config.
      const marker = path.join(w.base, 'ran')
      ;(c.slots[1] as unknown as Record<string, unknown>).unwrapCmd = `touch '${marker}'`
      fs.writeFileSync(path.join(w.cipher, CONFIG_FILE), JSON.stringify(c), { mode: 0o600 })
      expect(detached(['mount', w.cipher, w.mnt], env).status).toBe(15)
      expect(fs.existsSync(marker)).toBe(false)

      // A service that leaves a process holding its output open does not hang the unlock,
      // and one that prints without end is stopped.
      ;(c.slots[1] as unknown as Record<string, unknown>).unwrapCmd = unwrap
      fs.writeFileSync(path.join(w.cipher, CONFIG_FILE), JSON.stringify(c), { mode: 0o600 })
      fs.writeFileSync(script, 'sleep 600 & base64 -d\n')
      const lingering = detached(['mount', w.cipher, w.mnt], env)
      expect(lingering.status, lingering.stderr).toBe(0)
      await umount(w)
      fs.writeFileSync(script, 'yes\n')
      const endless = detached(['mount', w.cipher, w.mnt], env)
      expect([endless.status, endless.stderr]).toEqual([15, 'sealfs: key service of slot \'svc\': the unwrap command printed more than 4096 bytes\n'])
      expect(isMounted(w.mnt)).toBe(false)
    } finally {
      await cleanup(w)
    }
  }, 120_000)
})
