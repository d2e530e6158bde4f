import { Argument, Command, CommanderError, Option } from 'commander'
import { spawn, spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { DEFAULT_COST, MIN_COST } from '../crypto/passphrase-kdf'
import { Mount } from '../filesystem/mount'
import { projectRoot } from '../native'
import { wipeTree } from '../filesystem/tree-wipe'
import { canonicalMountPoint, isMountPoint, mountTable } from '../filesystem/mountinfo'
import { LOG_LEVELS, LogLevel, logLine, setLogLevel, setLogSink } from '../log'
import { checkVolumeId, readConfig } from '../volume/config'
import { DekIndex } from '../volume/dek-index'
import { unreachable, VolumeError } from '../volume/errors'
import { VolumeLock } from '../volume/volume-lock'
import { checkDir, DEFAULT_CHUNK_SIZE, Volume } from '../volume/volume'
import { LEASE_FILE, LEASE_PERIOD_MS } from '../volume/volume-lease'
import { CliError, EXIT, exitCodeOf, messageOf } from './exit-codes'
import { forbidCoreDumps, notifySystemd } from './daemon-signals'
import { chooseLogSink } from './log-sinks'
import { daemonOfMount, ended } from './mount-daemons'
import { loadAddon, PosixAddon } from '../native'
import { parseDuration, sizeOption } from './quantities'
import { parseMountOptions } from './mount-options'
import { clearProgress, withProgress } from './progress'
import { fromDescriptor, readPassphrase } from './passphrase'
import { UnlockChoice, chooseCredential } from './unlock'
import { defineKeyCommands, slotSummary } from './key-commands'
import { defineFsckCommand } from './fsck-command'
import { definePathCommand } from './path-command'
import { completionScript } from './completion'
import type { Credential } from '../volume/key-slot'

/** Fd 3 of a daemon child: lines back to the parent, "note ...", "warning ...", then "ready" or "error CODE MESSAGE". */
const STATUS_FD = 3

/** One line of the status protocol: a message's own line breaks (a path may hold them) become spaces. */
function statusLine (kind: string, message?: string): string {
  return `${kind}${message !== undefined ? ` ${message.replace(/[\r\n]+/g, ' ')}` : ''}\n`
}

/**
 * Ends a daemon whose unmount left operations running (a stalled backing store?). Keys and
 * descriptors stay until the process ends (with no core dump): zeroing or closing them under
 * a running job could seal a chunk with a zeroed key, or write through a reused descriptor
 * number. The index lives on the same store: its queued rows get 5 s (its connection is not
 * closed: that could block this thread). Then the process ends by SIGKILL, since
 * process.exit() would wait for the stuck pool threads (no core: RLIMIT_CORE is 0).
 */
async function exitStalled (volume: Volume, stalled: number): Promise<never> {
  logLine(`${stalled} operation${stalled > 1 ? 's were' : ' was'} still running 10 s after the unmount (a stalled backing store?); exiting without waiting: run 'sealfs fsck' on the volume`, 'error')
  try {
    await volume.index.settle(5000)
  } finally {
    process.kill(process.pid, 'SIGKILL')
  }
  throw new Error('unreachable')
}

function intOption (name: string, v: string): number {
  if (!/^\d+$/.test(v)) throw new CliError('usage', `${name} takes a whole number`)
  return Number(v)
}


/** Checks both directories; returns the mount point as the mount table will name it. */
function checkDirs (cipher: string, mnt: string, nonempty: boolean): string {
  for (const d of [cipher, mnt]) {
    let st: fs.Stats
    try {
      st = fs.statSync(d)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOTCONN') throw new CliError('not-empty', `${d} holds a dead mount (its daemon is gone); run 'sealfs umount ${d}' first`)
      if ((e as NodeJS.ErrnoException).code === 'EACCES') throw unreachable(d)
      throw new CliError('missing-dir', `${d} does not exist`)
    }
    if (!st.isDirectory()) throw new CliError('missing-dir', `${d} is not a directory`)
  }
  const c = fs.realpathSync(cipher)
  const m = fs.realpathSync(mnt)
  if (c === m || m.startsWith(c + path.sep) || c.startsWith(m + path.sep)) throw new CliError('usage', 'the mount point and the cipher dir must not contain each other')
  if (isMountPoint(m)) throw new CliError('not-empty', `${mnt} is already a mount point`)
  if (!nonempty && fs.readdirSync(m).length > 0) throw new CliError('not-empty', `mount point ${mnt} is not empty (use -o nonempty to mount over it)`)
  return m
}

interface MountCliOptions {
  passfile?: string, extpass?: string, keyfile?: string, slot?: string, volumeId?: string, ephemeral?: boolean, foreground?: boolean, o?: string[]
  passphraseFd?: string, credentialKind?: string, log?: string, logLevel?: string, idle?: string
}

const posix = loadAddon<PosixAddon>('posix')

/** The signals that end a mount, or cancel one that is not ready yet. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

function cancelled (signal: string): CliError {
  return new CliError('cancelled', `mount cancelled (${signal}): nothing is mounted`)
}

function logLevelOption (v: string | undefined): LogLevel {
  if (v === undefined) return 'notice'
  if (!Object.hasOwn(LOG_LEVELS, v)) throw new CliError('usage', `the log level is one of ${Object.keys(LOG_LEVELS).join(', ')}, not '${v}'`)
  return v as LogLevel
}

async function runMount (cipher: string, mnt: string, o: MountCliOptions): Promise<void> {
  const parsed = parseMountOptions(o.o ?? [])
  const idleSpec = o.idle ?? parsed.idle
  const idleMs = idleSpec !== undefined ? parseDuration(idleSpec) : null
  if (idleSpec !== undefined && (idleMs === null || idleMs <= 0)) throw new CliError('usage', `--idle takes a duration such as 90s, 10min or 1h30m, not '${idleSpec}'`)
  const logLevel = logLevelOption(o.logLevel ?? parsed.logLevel)
  const daemonChild = o.passphraseFd !== undefined
  // libfuse prints its request trace on standard error, which a detached daemon has not.
  if (parsed.fuse.includes('debug') && o.foreground !== true) throw new CliError('usage', '-o debug prints every request on standard error: use it with -f')
  const mountpoint = checkDirs(cipher, mnt, parsed.nonempty)
  // The log: chosen (and a bad --log refused) before anything is unlocked.
  const logSink = o.foreground === true ? chooseLogSink(o.log, !daemonChild) : null
  if (logSink !== null) { setLogSink(logSink.sink); setLogLevel(logLevel) }
  // Ctrl-C, SIGTERM or SIGHUP before the mount is ready cancels it. While the volume is
  // being unlocked (mostly the KDF), at once: what unlocking writes is crash-safe (the lease,
  // the index, the write journal's recovery), as after a kill -9. Later, once the step under
  // way is done, undoing it.
  let cancel: string | null = null
  let unlocking = true
  const cancelNow = (signal: string): void => {
    cancel = signal
    if (!unlocking) return
    if (daemonChild) { try { fs.writeSync(STATUS_FD, statusLine(`error ${EXIT.CANCELLED}`, cancelled(signal).message)) } catch { /* parent gone */ } }
    if (!daemonChild) { clearProgress(); fs.writeSync(2, `sealfs: ${cancelled(signal).message}\n`) }
    posix.exitNow(EXIT.CANCELLED)
  }
  const source = { passfile: o.passfile ?? parsed.passfile, extpass: o.extpass ?? parsed.extpass, keyfile: o.keyfile ?? parsed.keyfile }
  const ephemeral = o.ephemeral === true || parsed.ephemeral
  let chosen: UnlockChoice | null = null
  if (ephemeral) {
    // Its key exists only in the daemon: nothing opens it, so nothing is asked for.
    if (source.passfile !== undefined || source.extpass !== undefined || source.keyfile !== undefined || (o.slot ?? parsed.slot ?? o.volumeId ?? parsed.volumeId) !== undefined || parsed.readOnly) {
      throw new CliError('usage', 'an ephemeral mount takes no passphrase, key file, slot, volume ID or ro: its key is new at every mount')
    }
    if (daemonChild) fromDescriptor(Number(o.passphraseFd)).fill(0)
  } else {
    // A pinned volume ID is checked before anything else reads or runs what the cipher dir holds.
    const config = readConfig(cipher)
    checkVolumeId(config, cipher, o.volumeId ?? parsed.volumeId)
    chosen = daemonChild
      ? { credential: { kind: credentialKind(o.credentialKind), secret: fromDescriptor(Number(o.passphraseFd)) } as Credential, slot: o.slot ?? parsed.slot }
      : await chooseCredential(cipher, source, o.slot ?? parsed.slot, config)
  }
  if (!o.foreground && !daemonChild) return await withProgress(chosen === null ? 'mounting' : 'unlocking and mounting', detach(path.resolve(cipher), mountpoint, o, chosen))
  // From here a signal cancels the mount (the prompt, before, cancels itself and puts the
  // terminal back; a blocking read of a passfile is ended by the signal's default action).
  for (const signal of STOP_SIGNALS) process.on(signal, cancelNow)

  /** What the user should see while the mount is under way (a detached daemon's parent prints it at once). */
  const say = (line: string): void => {
    if (!daemonChild) { clearProgress(); process.stderr.write(`sealfs: ${line}\n`) }
    else try { fs.writeSync(STATUS_FD, statusLine('note', line)) } catch { /* parent gone */ }
  }
  /** Warnings for the user (a detached daemon's parent prints them), then 'ready' or the error. */
  const warnings: string[] = []
  const report = (line: string): void => {
    if (daemonChild) { try { fs.writeSync(STATUS_FD, warnings.map(w => statusLine('warning', w)).join('') + statusLine(line)); fs.closeSync(STATUS_FD) } catch { /* parent gone */ } }
  }
  let volume: Volume
  if (chosen === null) {
    volume = await Volume.ephemeral(cipher, wipeTree)
  } else {
    try {
      volume = await withProgress('unlocking', Volume.unlock(cipher, chosen.credential, {
        readOnly: parsed.readOnly,
        slot: chosen.slot,
        volumeId: o.volumeId ?? parsed.volumeId,
        lease: line => { logLine(line); say(line) }
      }))
    } finally {
      chosen.credential.secret.fill(0)
    }
  }
  unlocking = false
  if (cancel !== null) {
    await volume.close()
    throw cancelled(cancel)
  }
  if (logSink?.warning !== undefined) {
    if (daemonChild) warnings.push(logSink.warning)
    else process.stderr.write(`sealfs: warning: ${logSink.warning}\n`)
  }
  for (const notice of volume.notices) {
    logLine(notice)
    if (daemonChild) warnings.push(notice)
    else process.stderr.write(`sealfs: warning: ${notice}\n`)
  }
  let mount: Mount
  try {
    mount = await Mount.start(volume, mountpoint, { options: parsed.fuse, fsname: path.resolve(cipher) })
  } catch (e) {
    await volume.close()
    throw new CliError('mount-failed', `cannot mount ${mnt}: ${(e as Error).message}`)
  }
  if (cancel !== null) {
    const stalled = await mount.unmount().catch(() => 0)
    if (stalled > 0) {
      report(statusLine(`error ${EXIT.CANCELLED}`, cancelled(cancel).message).trimEnd())
      await exitStalled(volume, stalled)
    }
    await volume.close()
    throw cancelled(cancel)
  }
  volume.index.onError = line => logLine(line)
  const flusher = setInterval(() => volume.index.flush(), 1000)
  let renewFailing = false
  const lease = volume.lease
  const renewer = lease === null ? null : setInterval(() => {
    lease.renew().then(() => {
      if (renewFailing) logLine('the volume lease is renewed again')
      renewFailing = false
      if (!lease.lost) return
      // This mount could not renew it for two periods, and another client took it: two
      // writers would corrupt the index and race on files. This one steps down.
      logLine(`the volume lease (${LEASE_FILE}) is not this mount's any more (another client took it over while this mount could not renew it, or it was removed): unmounting, so that the volume never has two writers`, 'error')
      void stop(true, 'the volume lease was lost')
    }, e => {
      if (!renewFailing) logLine(`cannot renew the volume lease (${(e as NodeJS.ErrnoException).code ?? 'error'}); trying again every ${LEASE_PERIOD_MS / 1000} s`)
      renewFailing = true
    })
  }, LEASE_PERIOD_MS)
  const mode = volume.readOnly ? 'read-only' : 'read-write'
  logLine(`mounted ${path.resolve(cipher)} on ${mountpoint} (${mode}${chosen?.slot !== undefined ? `, key slot ${chosen.slot}` : ''}${chosen === null ? ', ephemeral' : ''})`, 'notice')
  report('ready')
  // From here a detached daemon's standard streams go to its log file or nowhere: its parent,
  // which copied them to the user's terminal, is gone.
  if (daemonChild) {
    process.stderr.on('error', () => { /* nowhere left to write */ })
    const out = logSink?.fd ?? fs.openSync('/dev/null', fs.constants.O_WRONLY)
    const rc = posix.redirectOutput(out)
    if (out !== logSink?.fd) fs.closeSync(out)
    if (rc < 0) logLine(`cannot redirect standard error away from the terminal's pipe (errno ${-rc})`, 'error')
  }
  notifySystemd('READY=1')

  let stopping = false
  const stop = async (unmount: boolean, why: string): Promise<void> => {
    if (stopping) return
    stopping = true
    logLine(`unmounting ${mountpoint}: ${why}`, 'notice')
    notifySystemd('STOPPING=1')
    clearInterval(flusher)
    if (idler !== null) clearInterval(idler)
    const stalled = await mount.unmount(!unmount).catch(e => { logLine(`unmount failed: ${(e as Error).message}`, 'error'); return 0 })
    if (stalled === 0) {
      await volume.close()  // the lease is renewed until it is given back here
      if (renewer !== null) clearInterval(renewer)
    } else {
      await exitStalled(volume, stalled)
    }
    logLine(`unmounted ${mountpoint}`, 'notice')
    process.exit(EXIT.OK)
  }
  // Someone ran `sealfs umount` or fusermount -u: the kernel ended the session, so finish up.
  mount.onExit = () => { setImmediate(() => void stop(false, 'it was unmounted (sealfs umount, fusermount -u or umount)')) }
  // --idle: unmount after a whole period with no request and no open file.
  let seen = -1
  let quietSince = Date.now()
  const idler = idleMs === null ? null : setInterval(() => {
    if (mount.requestCount !== seen || mount.busy) { seen = mount.requestCount; quietSince = Date.now(); return }
    if (Date.now() - quietSince >= idleMs) void stop(true, `idle for ${idleSpec ?? ''}`)
  }, Math.max(100, Math.min(idleMs / 4, 10_000)))
  // A hangup (the terminal of a foreground mount closed) ends the mount as cleanly as these.
  for (const signal of STOP_SIGNALS) {
    process.off(signal, cancelNow)
    process.on(signal, () => void stop(true, `${signal} received`))
  }
}

function credentialKind (kind: string | undefined): Credential['kind'] {
  return kind === 'keyfile' || kind === 'service' ? kind : 'passphrase'
}

/**
 * Starts the daemon as a detached child and waits until it has mounted (or failed). Until
 * then the child's standard error (libfuse and fusermount3 say there why a mount failed) is
 * copied to ours, and Ctrl-C, SIGTERM or SIGHUP here cancel the mount: the child is told, and
 * this returns once it has undone what it did.
 */
function detach (cipher: string, mountpoint: string, o: MountCliOptions, chosen: UnlockChoice | null): Promise<void> {
  // The child gets the credential (passphrase, key file or key-service secret) on stdin and
  // the one slot it is for, if any; passfile=/keyfile=/extpass= in -o are harmless to repeat.
  // An ephemeral mount (chosen null) gets nothing: its key is made in the child. Its paths
  // are absolute, the mount point as the mount table names it (sealfs umount and status find
  // the daemon by it).
  const passphrase = chosen?.credential.secret ?? Buffer.alloc(0)
  const args = [process.argv[1], 'mount', '--foreground', '--passphrase-fd', '0',
    ...(chosen !== null ? ['--credential-kind', chosen.credential.kind] : o.ephemeral === true ? ['--ephemeral'] : []),
    ...(chosen?.slot !== undefined ? ['--slot', chosen.slot] : []), ...(o.volumeId !== undefined ? ['--volume-id', o.volumeId] : []),
    ...(o.o ?? []).flatMap(x => ['-o', x]),
    ...(o.log !== undefined ? ['--log', path.resolve(o.log)] : []), ...(o.logLevel !== undefined ? ['--log-level', o.logLevel] : []),
    ...(o.idle !== undefined ? ['--idle', o.idle] : []), cipher, mountpoint]
  // A young generation of 2 MiB semi-spaces, not V8's 16: the daemon's garbage is short-lived
  // request objects, and the smaller one is cheaper as well as smaller (tar of 12,000 files:
  // peak RSS 149 -> 117 MiB, daemon CPU 7.4 -> 6.5 s). An old generation that starts at 4 MiB,
  // so its first full collections come early, while little is live: the same tar peaked at
  // 93 MiB instead of 106, for the same CPU.
  let child: ReturnType<typeof spawn>
  try {
    child = spawn(process.execPath, ['--max-semi-space-size=2', '--initial-old-space-size=4', ...args], { detached: true, stdio: ['pipe', 'ignore', 'pipe', 'pipe'] })
  } catch (e) {
    passphrase.fill(0)
    throw new CliError('mount-failed', `cannot start the sealfs daemon: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`)
  }
  // A child that cannot start (no /dev/null, say) still has its stdin end() called: the
  // passphrase is zeroed either way, and the 'error' below is the one line said.
  const started = new Promise<never>((_resolve, reject) => {
    child.once('error', e => { reject(new CliError('mount-failed', `cannot start the sealfs daemon: ${(e as NodeJS.ErrnoException).code ?? e.message}`)) })
  })
  child.stdin!.on('error', () => { /* the child is gone: said by its exit */ })
  child.stdin!.end(passphrase, () => passphrase.fill(0))
  let cancel: string | null = null
  const onSignal = (signal: NodeJS.Signals): void => {
    cancel ??= signal
    child.kill('SIGTERM')
  }
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal)
  const childStderr = child.stderr!
  const stderrDone = new Promise<void>(resolve => { childStderr.once('close', resolve) })
  childStderr.on('data', (d: Buffer) => { clearProgress(); process.stderr.write(d) })
  const exited = new Promise<void>(resolve => { if (child.exitCode !== null || child.signalCode !== null) resolve(); else child.once('exit', () => resolve()) })
  return Promise.race([started, new Promise<string>(resolve => {
    let status = ''
    let pending = ''
    const statusPipe = child.stdio[STATUS_FD] as NodeJS.ReadableStream
    statusPipe.on('data', (d: Buffer) => {
      // 'note' lines come while the daemon works (it waits out a lease, say): shown at once.
      pending += d.toString('utf8')
      const lines = pending.split('\n')
      pending = lines.pop() as string
      for (const l of lines) {
        if (l.startsWith('note ')) { clearProgress(); process.stderr.write(`sealfs: ${l.slice('note '.length)}\n`) }
        else status += l + '\n'
      }
    })
    statusPipe.on('end', () => resolve(status + pending))
  })]).then(async status => {
    const lines = status.trim().split('\n')
    const line = lines.filter(l => !l.startsWith('warning ')).join('\n').trim()
    if (line === 'ready' && cancel === null) {
      clearProgress()
      for (const w of lines.filter(l => l.startsWith('warning '))) process.stderr.write(`sealfs: warning: ${w.slice('warning '.length)}\n`)
      for (const signal of STOP_SIGNALS) process.off(signal, onSignal)
      child.unref()
      ;(child.stdio[STATUS_FD] as unknown as { destroy: () => void }).destroy()
      childStderr.destroy()
      return
    }
    // Cancelled just as it became ready: the child unmounts on the SIGTERM it got, and exits.
    if (line === 'ready') {
      await exited
      throw cancelled(cancel as string)
    }
    // Failed or cancelled: the child is gone when this returns, and what it said on standard
    // error comes first (its exit closes it, unless a process it started holds it still).
    await Promise.race([Promise.all([exited, stderrDone]), new Promise(resolve => setTimeout(resolve, 2000).unref())])
    const m = /^error (\d+) (.*)$/.exec(line)
    if (m !== null && Number(m[1]) === EXIT.CANCELLED && cancel !== null) throw cancelled(cancel)
    if (m !== null) throw Object.assign(new CliError('mount-failed', m[2]), { exitCode: Number(m[1]) })
    if (cancel !== null) throw cancelled(cancel)
    throw new CliError('mount-failed', 'the sealfs daemon exited before the mount was ready')
  })
}

async function runInit (cipher: string, o: { passfile?: string, extpass?: string, chunkSize?: string, kdfOpslimit?: string, kdfMemlimit?: string }): Promise<void> {
  const chunkSize = o.chunkSize !== undefined ? intOption('--chunk-size', o.chunkSize) : DEFAULT_CHUNK_SIZE
  const cost = {
    opslimit: o.kdfOpslimit !== undefined ? intOption('--kdf-opslimit', o.kdfOpslimit) : DEFAULT_COST.opslimit,
    memlimit: o.kdfMemlimit !== undefined ? sizeOption('--kdf-memlimit', o.kdfMemlimit) : DEFAULT_COST.memlimit
  }
  checkDir(cipher)
  if (fs.readdirSync(cipher).length > 0) throw new VolumeError('not-empty', `${cipher} is not empty`)
  const passphrase = await readPassphrase(o, true)
  try {
    await withProgress(`deriving the key (Argon2id, ${cost.opslimit} passes over ${cost.memlimit >= 2 ** 30 ? `${cost.memlimit / 2 ** 30} GiB` : `${cost.memlimit / 2 ** 20} MiB`})`, Volume.init(cipher, passphrase, { chunkSize, cost }))
  } finally {
    passphrase.fill(0)
  }
  process.stdout.write(`Created a sealfs volume in ${cipher}. Mount it with: sealfs mount ${cipher} MOUNTPOINT\n`)
}

/** What can be known without the passphrase: the config and the index's row count. */
function runInfo (cipher: string, o: { json?: boolean }): void {
  checkDir(cipher)
  const config = readConfig(cipher)
  let files: number | null = null
  try { files = DekIndex.countFiles(cipher) } catch { /* no or unreadable index */ }
  const info = {
    formatVersion: config.formatVersion,
    volumeId: config.volumeId,
    contentCipher: config.contentCipher,
    chunkSize: config.chunkSize,
    nameCipher: config.nameCipher,
    keyWrap: config.keyWrap,
    masterKeyVersion: config.masterKeyVersion,
    unfinishedRotationFrom: config.rotation?.fromVersion ?? null,
    endTags: config.endTags === true ? 'yes' : config.endTags === 'upgrading' ? 'upgrade unfinished' : 'no',
    writeWindows: config.writeWindows === true ? 'yes' : config.endTags === 'upgrading' ? 'upgrade unfinished' : 'no',
    ephemeral: config.ephemeral === true,
    keySlots: config.slots.map(slotSummary),
    files
  }
  if (o.json === true) {
    process.stdout.write(JSON.stringify(info, null, 2) + '\n')
    return
  }
  const lines = [
    `format version:  ${info.formatVersion}`,
    `volume ID:       ${info.volumeId}`,
    `content cipher:  ${info.contentCipher}, ${info.chunkSize}-byte chunks`,
    `name cipher:     ${info.nameCipher}`,
    `key wrap:        ${info.keyWrap}, master key version ${info.masterKeyVersion}`,
    `end tags:        ${config.endTags === true ? 'yes (a file cut short reads as EIO)' : config.endTags === 'upgrading' ? `upgrade unfinished; run 'sealfs fsck --repair --upgrade ${cipher}' to finish it` : `no (made before them); 'sealfs fsck --repair --upgrade ${cipher}' adds them`}`,
    `write windows:   ${config.writeWindows === true ? 'yes (fsck names a file written while the cipher dir was copied)' : config.endTags === 'upgrading' ? 'upgrade unfinished' : `no (made before them); 'sealfs fsck --repair --upgrade ${cipher}' adds them`}`,
    ...(config.rotation !== undefined ? [`key rotation:    unfinished (from version ${config.rotation.fromVersion}); run 'sealfs key rotate' to finish it`] : []),
    ...(info.ephemeral ? ['ephemeral:       yes (no key slot: nothing can open it after its mount ended)'] : []),
    ...info.keySlots.map(s => `key slot ${String(s.name)}: ${s.recovery === true ? 'recovery key' : String(s.kind)}, ${String(s.kdf)}${s.kind === 'passphrase' ? ` opslimit=${String(s.opslimit)} memlimit=${Number(s.memlimit) / 1024 / 1024} MiB` : ''}`),
    `files:           ${files === null ? 'unknown (no index)' : files}`
  ]
  process.stdout.write(lines.join('\n') + '\n')
}

/** How long `sealfs umount` waits for the daemon to exit once its mount is gone. */
const DAEMON_EXIT_WAIT_MS = 30_000

/**
 * The daemon of a read-write mount of `cipher`, as its lock file names it (a read-only mount
 * writes no pid there), if that process is still a sealfs one; else null.
 */
function daemonOf (cipher: string): number | null {
  const pid = Number(/^(\d+)\n/.exec(VolumeLock.holder(cipher))?.[1])
  if (!Number.isInteger(pid) || pid <= 1) return null
  try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('sealfs') ? pid : null } catch { return null }
}

/**
 * Unmounts a sealfs mount. A busy one (a process has a file or directory open there) is
 * refused unless `lazy`, as fusermount and umount(8) refuse it: a lazy detach would end the
 * daemon under a writer. On success it returns once the daemon has exited, so its last index
 * writes are done and the cipher dir is free (a backup or an unmount of the backing store may
 * follow at once); a lazy detach returns at once (the daemon ends when the last file closes).
 */
async function runUmount (given: string, o: { lazy?: boolean }): Promise<void> {
  // fusermount does not follow a symlink in the last component: name the mount as the table does.
  const mnt = canonicalMountPoint(given)
  const entry = mountTable().filter(m => m.mountpoint === mnt).pop()
  if (entry === undefined) throw new CliError('not-mounted', `${given} is not mounted`)
  if (entry.fstype !== 'fuse.sealfs') throw new CliError('not-mounted', `${given} is not a sealfs mount (it is ${entry.fstype}); use umount(8)`)
  // Its daemon, found without entering the mount; none found, the mount is looked at: a dead
  // one (its daemon killed) answers ENOTCONN.
  const pid = daemonOfMount(mnt, mountValueOptions()) ?? daemonOf(entry.source)
  let dead = false
  if (pid === null) try { fs.statSync(mnt) } catch (e) { dead = (e as NodeJS.ErrnoException).code === 'ENOTCONN' }
  // A mount whose daemon was killed answers nothing: it is detached lazily (nothing writes there).
  const r = spawnSync('fusermount', [dead || o.lazy === true ? '-uz' : '-u', '--', mnt], { stdio: ['ignore', 'ignore', 'pipe'] })
  if (r.status !== 0) {
    const why = (r.stderr?.toString() ?? '').trim().split('\n')[0]
    if (/busy/i.test(why)) throw new CliError('busy', `${given} is busy: a process has a file or directory open there (close it, or 'sealfs umount --lazy ${given}' detaches it now and the daemon ends when the last one closes)`)
    const u = spawnSync('umount', [...(o.lazy === true ? ['-l'] : []), '--', mnt], { stdio: ['ignore', 'ignore', 'pipe'] })
    if (u.status !== 0) throw new CliError('mount-failed', `cannot unmount ${given}: ${why || (u.stderr?.toString() ?? '').trim().split('\n')[0]}`)
  }
  if (pid === null || o.lazy === true) return
  for (let waited = 0; !ended(pid); waited += 50) {
    if (waited >= DAEMON_EXIT_WAIT_MS) {
      process.stderr.write(`sealfs: ${given} is unmounted, but its daemon (pid ${pid}) has not exited after ${DAEMON_EXIT_WAIT_MS / 1000} s\n`)
      return
    }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** The options of `mount` that take a value, as its argv spells them. */
function mountValueOptions (): Set<string> {
  const mount = program().commands.find(c => c.name() === 'mount') as Command
  return new Set(mount.options.filter(opt => opt.required || opt.optional).flatMap(opt => [opt.short, opt.long].filter((f): f is string => f !== undefined)))
}

/** How long `sealfs status` waits for one cipher dir's sealfs.conf (a backing store that is down hangs its reader). */
const VOLUME_ID_WAIT_MS = 2000

/** The volume ID in `cipher`'s sealfs.conf, read by a child process given VOLUME_ID_WAIT_MS; null if it cannot be read in time. */
function volumeIdOf (cipher: string): string | null {
  const code = `try { process.stdout.write(require(${JSON.stringify(path.join(__dirname, '..', 'volume', 'config'))}).readConfig(process.argv[1]).volumeId) } catch {}`
  const r = spawnSync(process.execPath, ['-e', code, cipher], { encoding: 'utf8', timeout: VOLUME_ID_WAIT_MS, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'ignore'] })
  return /^[0-9a-f]{32}$/.test(r.stdout ?? '') ? r.stdout : null
}

/**
 * The sealfs mounts this process sees (or those at `mnts`): mount point, cipher dir, daemon,
 * ro/rw and volume ID. Nothing is unlocked and no mount is entered (a hung one would hang
 * this); each sealfs.conf is read with a time limit (its store may be down).
 */
function runStatus (mnts: string[], o: { json?: boolean }): void {
  const wanted = mnts.map(canonicalMountPoint)
  const mounts = mountTable().filter(m => m.fstype === 'fuse.sealfs' && (wanted.length === 0 || wanted.includes(m.mountpoint)))
  for (const [i, w] of wanted.entries()) if (!mounts.some(m => m.mountpoint === w)) throw new CliError('not-mounted', `${mnts[i]} is not a sealfs mount`)
  const valueOptions = mountValueOptions()
  const rows = mounts.map(m => {
    const pid = daemonOfMount(m.mountpoint, valueOptions)
    const volumeId = volumeIdOf(m.source)
    return { mountPoint: m.mountpoint, cipherDir: m.source, pid, mode: m.options.includes('ro') ? 'ro' : 'rw', volumeId }
  })
  if (o.json === true) {
    process.stdout.write(JSON.stringify(rows, null, 2) + '\n')
    return
  }
  if (rows.length === 0) { process.stdout.write('no sealfs volume is mounted\n'); return }
  const table = [['MOUNT POINT', 'CIPHER DIR', 'PID', 'MODE', 'VOLUME ID'], ...rows.map(r => [r.mountPoint, r.cipherDir, r.pid === null ? '-' : String(r.pid), r.mode, r.volumeId ?? '-'])]
  const widths = table[0].map((_, c) => Math.max(...table.map(r => r[c].length)))
  process.stdout.write(table.map(r => r.map((cell, c) => c === r.length - 1 ? cell : cell.padEnd(widths[c])).join('  ')).join('\n') + '\n')
}

/** The version in the installed package's package.json. */
function packageVersion (): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version?: string }).version ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

export function program (): Command {
  const p = new Command('sealfs')
    .description('Encrypted overlay filesystem: per-file keys, AES-256-GCM chunks, encrypted names')
    .version(packageVersion(), '-V, --version', 'print the version')
    .exitOverride()
    .configureOutput({ writeErr: s => process.stderr.write(s.startsWith('error:') ? `sealfs: ${s}` : s) })
  const collect = (v: string, prev: string[] = []): string[] => [...prev, v]
  p.command('init')
    .description('create a new volume in the empty directory CIPHER')
    .argument('<CIPHER>', 'cipher dir (must exist and be empty)')
    .option('--passfile <file>', 'read the passphrase from the first line of a file (-: standard input)')
    .option('--extpass <command>', 'read the passphrase from the first line a program prints')
    .option('--chunk-size <bytes>', `plaintext chunk size, a power of two from 4096 to 1048576 (default ${DEFAULT_CHUNK_SIZE})`)
    .option('--kdf-opslimit <n>', `Argon2id passes (default ${DEFAULT_COST.opslimit}, at least ${MIN_COST.opslimit})`)
    .option('--kdf-memlimit <bytes>', `Argon2id memory (default ${DEFAULT_COST.memlimit}, at least ${MIN_COST.memlimit})`)
    .action(runInit)
  p.command('mount')
    .description('mount the volume CIPHER on MNT (detaches once the mount answers, unless -f)')
    .argument('<CIPHER>', 'cipher dir')
    .argument('<MNT>', 'mount point (an empty directory)')
    .option('--passfile <file>', 'read the passphrase from the first line of a file (-: standard input)')
    .option('--extpass <command>', 'read the passphrase from the first line a program prints')
    .option('--keyfile <file>', 'unlock with a key file (made by `sealfs key add --new-keyfile`)')
    .option('--slot <name>', 'try only the key slot of this name')
    .option('--volume-id <hex>', 'refuse to mount unless CIPHER holds this volume (its ID as `sealfs info` shows it)')
    .option('--ephemeral', 'a throwaway volume: a new key held only in the daemon; CIPHER must be empty or hold an earlier ephemeral volume, which is wiped')
    .option('-f, --foreground', 'stay in the foreground')
    .option('-o <options>', 'mount options, comma-separated (ro, allow_other, nosuid, passfile=F, idle=D, ...)', collect)
    .option('--log <file>', 'log here (a file) instead of the journal or syslog (or, with -f, standard error)')
    .addOption(new Option('--log-level <level>', 'the least severe lines logged (default: notice)').choices(Object.keys(LOG_LEVELS)))
    .option('--idle <duration>', 'unmount after this long without use (90s, 10m, 1h30m)')
    .addOption(new Option('--passphrase-fd <fd>').hideHelp())
    .addOption(new Option('--credential-kind <kind>').hideHelp())
    .action(runMount)
  p.command('info')
    .description('show a volume\'s format, ciphers, KDF parameters, key slots and file count (no passphrase needed)')
    .argument('<CIPHER>', 'cipher dir')
    .option('--json', 'print JSON')
    .action(runInfo)
  defineKeyCommands(p.command('key'))
  defineFsckCommand(p)
  p.command('umount')
    .description('unmount a sealfs mount, once its daemon has exited (a busy mount is refused)')
    .argument('<MNT>', 'mount point')
    .option('--lazy', 'detach a busy mount now; its daemon ends when the last open file closes')
    .action(runUmount)
  p.command('status')
    .description('list mounted sealfs volumes: mount point, cipher dir, daemon pid, ro/rw, volume ID')
    .argument('[MNT...]', 'only these mount points (exit 24 if one is not a sealfs mount)')
    .option('--json', 'print JSON')
    .action(runStatus)
  definePathCommand(p)
  p.command('completion')
    .description('print a bash or zsh completion script (see sealfs(1))')
    .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
    .action((shell: 'bash' | 'zsh') => { process.stdout.write(completionScript(p, shell)) })
  return p
}

const COMMANDS = new Set(['init', 'mount', 'umount', 'status', 'info', 'key', 'fsck', 'path', 'completion', 'help'])

export function main (argv: string[]): void {
  // Every sealfs process may hold keys (the daemon, key commands, unlocking): none may dump
  // core. Before anything is read or unlocked.
  forbidCoreDumps()
  // mount(8) runs mount.fuse, which runs `sealfs CIPHER MNT -o OPTS`: that is `sealfs mount`.
  // Only where CIPHER reads as a path (a slash in it, or a directory here): `sealfs unmount m`
  // or `sealfs status m` is a mistyped command, to be answered as one.
  const [first, second] = [argv[2], argv[3]]
  const positional = (a: string | undefined): boolean => a !== undefined && !a.startsWith('-')
  const isPath = (a: string): boolean => a.includes('/') || (() => { try { return fs.statSync(a).isDirectory() } catch { return false } })()
  if (positional(first) && positional(second) && !COMMANDS.has(first) && isPath(first)) argv = [...argv.slice(0, 2), 'mount', ...argv.slice(2)]
  const daemonChild = argv.includes('--passphrase-fd')
  const fail = (e: unknown): void => {
    const code = (e as { exitCode?: number }).exitCode ?? exitCodeOf(e)
    const msg = messageOf(e)
    // A detached daemon's parent prints it (the child's standard error reaches the terminal
    // too, until the mount is ready: once is enough).
    if (daemonChild) { try { fs.writeSync(STATUS_FD, statusLine(`error ${code}`, msg)) } catch { /* parent gone */ } } else process.stderr.write(`sealfs: ${msg}\n`)
    process.exit(code)
  }
  let p: Command
  try {
    p = program()
    p.parseAsync(argv).catch(e => {
      if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? EXIT.OK : EXIT.USAGE)
      fail(e)
    })
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? EXIT.OK : EXIT.USAGE)
    fail(e)
  }
}
