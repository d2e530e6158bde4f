import { Command } from 'commander'
import fs from 'fs'
import path from 'path'
import { DEFAULT_COST } from '../crypto/passphrase-kdf'
import { newRecoveryKey } from '../crypto/recovery-key'
import { randomBytes } from '../crypto/secret-key'
import { KeySlot, readConfig, slotName } from '../volume/config'
import { syncDir, writeAll } from '../volume/atomic-file'
import { VolumeError } from '../volume/errors'
import { Unlock, addSlot, changePassphrase, removeSlot } from '../volume/slot-changes'
import { sizeOption } from './quantities'
import { CliError } from './exit-codes'
import { CredentialOptions, fromKeyfile, fromPassfile, readPassphrase } from './passphrase'
import { chooseCredential } from './unlock'
import { Credential } from '../volume/key-slot'
import { KeyRotation } from '../volume/key-rotation'
import { VolumeLock } from '../volume/volume-lock'
import { WriteJournal } from '../volume/write-journal'
import { keepTimes, removeJournal, rewrapTree, WalkProgress } from '../filesystem/rotation-walk'
import { withProgress } from './progress'

const KEYFILE_BYTES = 32

interface UnlockOptions extends CredentialOptions { slot?: string }
interface CostOptions { kdfOpslimit?: string, kdfMemlimit?: string }

/** A slot as `key list` and `info` show it (never its salt or wrapped key). */
export function slotSummary (s: KeySlot): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = { name: slotName(s), id: s.id, kind: s.kind }
  if (s.created !== undefined) out.created = s.created
  out.kdf = s.kdf
  if (s.kind === 'passphrase') {
    out.opslimit = s.opslimit
    out.memlimit = s.memlimit
    if (s.recovery === true) out.recovery = true
  }
  if (s.kind === 'command') out.unwrapCmd = s.unwrapCmd
  return out
}

function describe (s: KeySlot): string {
  const kind = s.kind === 'passphrase' ? (s.recovery === true ? 'recovery key' : 'passphrase') : s.kind === 'keyfile' ? 'key file' : 'key service'
  const params = s.kind === 'passphrase' ? `argon2id, ${s.opslimit} passes, ${s.memlimit / 1024 / 1024} MiB` : s.kind === 'command' ? `unwrap: ${s.unwrapCmd}` : 'blake2b'
  const created = s.created !== undefined ? s.created.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC') : 'before slot names'
  return `${slotName(s).padEnd(16)} ${kind.padEnd(13)} ${created.padEnd(24)} ${params}`
}

/** The Argon2id cost given with --kdf-opslimit/--kdf-memlimit, as far as given. */
function costOf (o: CostOptions): { opslimit?: number, memlimit?: number } {
  const int = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined
    if (!/^\d+$/.test(v)) throw new CliError('usage', `${name} takes a whole number`)
    return Number(v)
  }
  return { opslimit: int('--kdf-opslimit', o.kdfOpslimit), memlimit: o.kdfMemlimit === undefined ? undefined : sizeOption('--kdf-memlimit', o.kdfMemlimit) }
}

function newSlotCost (o: CostOptions): { opslimit: number, memlimit: number } {
  const c = costOf(o)
  return { opslimit: c.opslimit ?? DEFAULT_COST.opslimit, memlimit: c.memlimit ?? DEFAULT_COST.memlimit }
}

async function unlockFrom (cipher: string, o: UnlockOptions): Promise<Unlock> {
  return await chooseCredential(cipher, o, o.slot)
}

function runList (cipher: string, o: { json?: boolean }): void {
  if (!fs.existsSync(cipher)) throw new VolumeError('missing-dir', `${cipher} does not exist`)
  const config = readConfig(cipher)
  if (o.json === true) {
    process.stdout.write(JSON.stringify({ volumeId: config.volumeId, masterKeyVersion: config.masterKeyVersion, unfinishedRotationFrom: config.rotation?.fromVersion ?? null, ephemeral: config.ephemeral === true, slots: config.slots.map(slotSummary) }, null, 2) + '\n')
    return
  }
  if (config.ephemeral === true) {
    process.stdout.write('ephemeral volume: no key slot (its key existed only in the daemon that made it)\n')
    return
  }
  const lines = [`master key version ${config.masterKeyVersion}${config.rotation !== undefined ? ` (rotation from version ${config.rotation.fromVersion} unfinished: run 'sealfs key rotate' to finish it)` : ''}`, `${'NAME'.padEnd(16)} ${'KIND'.padEnd(13)} ${'CREATED'.padEnd(24)} PARAMETERS`, ...config.slots.map(describe)]
  process.stdout.write(lines.join('\n') + '\n')
}

/** A new key file: 32 random bytes, mode 0400, never over an existing file. */
function writeNewKeyfile (file: string, key: Buffer): void {
  let fd: number
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o400)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new VolumeError('exists', `${file} exists already; a new key file is never written over one`)
    throw new CliError('passphrase-source', `cannot create key file ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  try {
    writeAll(fd, key)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
  syncDir(path.dirname(path.resolve(file)))  // the key file's name is durable before the slot that needs it
}

interface AddOptions extends UnlockOptions, CostOptions {
  name: string, newPassfile?: string, newKeyfile?: string, recovery?: boolean, wrapCmd?: string, unwrapCmd?: string
}

async function runAdd (cipher: string, o: AddOptions): Promise<void> {
  const service = o.wrapCmd !== undefined || o.unwrapCmd !== undefined
  const given = [o.newPassfile !== undefined, o.newKeyfile !== undefined, o.recovery === true, service].filter(Boolean).length
  if (given !== 1) throw new CliError('usage', 'give one of --new-passfile, --new-keyfile, --recovery and --wrap-cmd with --unwrap-cmd')
  if (service && (o.wrapCmd === undefined || o.unwrapCmd === undefined)) throw new CliError('usage', '--wrap-cmd and --unwrap-cmd go together')
  if (o.newKeyfile !== undefined && fs.existsSync(o.newKeyfile)) throw new VolumeError('exists', `${o.newKeyfile} exists already; a new key file is never written over one`)
  const fresh = o.newPassfile !== undefined ? fromPassfile(o.newPassfile) : null
  let unlock: Unlock | null = null
  try {
    unlock = await unlockFrom(cipher, o)
    if (o.newKeyfile !== undefined) {
      // The key file first: a slot never exists whose key file was not written.
      const key = randomBytes(KEYFILE_BYTES)
      try {
        writeNewKeyfile(o.newKeyfile, key)
        await withProgress('unlocking and adding the slot', addSlot(cipher, unlock, { kind: 'keyfile', name: o.name, keyfile: key })).catch(e => {
          fs.rmSync(o.newKeyfile as string, { force: true })
          throw e
        })
      } finally {
        key.fill(0)
      }
      process.stderr.write(`Added key-file slot '${o.name}'; its key file is ${o.newKeyfile}. Keep it apart from the cipher dir.\n`)
    } else if (service) {
      await withProgress('unlocking and adding the slot', addSlot(cipher, unlock, { kind: 'command', name: o.name, wrapCmd: o.wrapCmd as string, unwrapCmd: o.unwrapCmd as string }))
      process.stderr.write(`Added key-service slot '${o.name}'; it is tried first, without asking, at every unlock.\n`)
    } else if (o.recovery === true) {
      const key = newRecoveryKey()
      try {
        await withProgress('unlocking and adding the slot', addSlot(cipher, unlock, { kind: 'passphrase', name: o.name, passphrase: key, cost: newSlotCost(o), recovery: true }))
        // Shown only once the slot is on disk: a key printed for a slot that a crash lost would open nothing.
        process.stderr.write(`Added recovery-key slot '${o.name}'. Write the key down now; it is not stored anywhere and is shown only this once:\n`)
        fs.writeSync(1, key)  // from the Buffer, never through a string
        fs.writeSync(1, '\n')
      } finally {
        key.fill(0)
      }
    } else {
      await withProgress('unlocking and adding the slot', addSlot(cipher, unlock, { kind: 'passphrase', name: o.name, passphrase: fresh as Buffer, cost: newSlotCost(o) }))
      process.stderr.write(`Added passphrase slot '${o.name}'.\n`)
    }
  } finally {
    fresh?.fill(0)
    unlock?.credential.secret.fill(0)
  }
}

async function runRemove (cipher: string, name: string, o: UnlockOptions): Promise<void> {
  const unlock = await unlockFrom(cipher, o)
  try {
    await withProgress('unlocking', removeSlot(cipher, unlock, name))
  } finally {
    unlock.credential.secret.fill(0)
  }
  process.stderr.write(`Removed key slot '${name}'. A copy of sealfs.conf made before this (in a backup, say) still opens with it: the master key is unchanged.\n`)
}

async function runPasswd (cipher: string, name: string | undefined, o: UnlockOptions & CostOptions & { newPassfile?: string }): Promise<void> {
  // The slot to change is checked before anything is asked for; without a name it is the
  // slot the passphrase opens, so no key service is asked to unlock.
  if (name !== undefined) {
    const target = readConfig(cipher).slots.find(s => slotName(s) === name)
    if (target === undefined) throw new VolumeError('no-such-slot', `the volume has no key slot named '${name}'`)
    if (target.kind !== 'passphrase') throw new VolumeError('bad-input', `key slot '${name}' is a ${target.kind} slot, not a passphrase slot`)
  }
  const unlock = await chooseCredential(cipher, o, o.slot, undefined, name !== undefined)
  let fresh: Buffer | null = null
  try {
    fresh = o.newPassfile !== undefined ? fromPassfile(o.newPassfile) : await readPassphrase({}, true, 'New passphrase')
    const changed = await withProgress('unlocking and deriving the new key', changePassphrase(cipher, unlock, fresh, name, costOf(o)))
    process.stderr.write(`Changed the passphrase of key slot '${changed}'.\n`)
  } finally {
    fresh?.fill(0)
    unlock.credential.secret.fill(0)
  }
}

interface RotateOptions extends UnlockOptions { alsoPassfile?: string[], alsoKeyfile?: string[], dropUnopened?: boolean, reencrypt?: boolean, json?: boolean }

/** Progress on a terminal (files, rate, time left), JSON lines with --json, else nothing. */
function rotationProgress (json: boolean, doing: string): { update: (p: WalkProgress) => void, end: () => void } {
  const started = Date.now()
  let last = 0
  const tty = process.stderr.isTTY
  const update = (p: WalkProgress): void => {
    const now = Date.now()
    if (now - last < (json ? 1000 : 100)) return
    last = now
    const secs = (now - started) / 1000
    const rate = secs > 0 ? p.done / secs : 0
    if (json) {
      process.stdout.write(JSON.stringify({ progress: { files: p.done, total: p.total, seconds: Math.round(secs * 10) / 10 } }) + '\n')
    } else if (tty) {
      const left = rate > 0 ? Math.max(0, Math.ceil((p.total - p.done) / rate)) : 0
      process.stderr.write(`\r${doing}: ${p.done.toLocaleString('en')} / ${p.total.toLocaleString('en')} files, ${Math.round(rate).toLocaleString('en')} files/s, ${left} s left   `)
    }
  }
  return { update, end: () => { if (!json && tty && last > 0) process.stderr.write('\n') } }
}

/**
 * One rotation, begun or resumed, to its end: whether it re-encrypted, and (`keepLock`) the
 * mount lock, still held for the next one.
 */
async function rotateOnce (cipher: string, unlock: Unlock, also: Credential[], o: RotateOptions, held?: VolumeLock, keepLock = false): Promise<{ reencrypted: boolean, lock: VolumeLock | null }> {
  const started = Date.now()
  const rotation = await withProgress('unlocking every key slot', KeyRotation.start(cipher, { unlock, also, dropUnopened: o.dropUnopened === true, reencrypt: o.reencrypt === true }, held))
  let root = -1
  let closed = false
  try {
    root = fs.openSync(cipher, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    const putRootTimesBack = keepTimes(root)
    const progress = rotationProgress(o.json === true, rotation.reencrypt ? 're-encrypting files' : 'rewrapping file keys')
    let walked: ReturnType<typeof rewrapTree>
    let rowsRewrapped: number
    let rowsLeft: number
    try {
      walked = rewrapTree(root, rotation, progress.update)
      progress.end();
      [rowsRewrapped, rowsLeft] = rotation.finishIndex()
    } catch (e) {
      progress.end()
      if (e instanceof VolumeError) throw e
      // A full disk, an I/O error: what failed, and that running it again finishes it.
      const err = e as NodeJS.ErrnoException
      throw new VolumeError('rotation-in-progress', `key rotation stopped: ${err.code ?? err.name} in ${err.syscall ?? 'the index'}; the volume does not mount until 'sealfs key rotate' is run again and finishes`)
    }
    if (walked.unreadable.length > 0) {
      throw new VolumeError('rotation-in-progress', `key rotation not finished: ${walked.unreadable.length} file${walked.unreadable.length > 1 ? 's or directories' : ' or directory'} this user cannot read (${walked.unreadable[0]}${walked.unreadable.length > 1 ? ', ...' : ''}) may still need the old key; run 'sealfs key rotate' as root (or their owner) to finish it`)
    }
    removeJournal(root)  // synced; only then is the old key forgotten
    rotation.finish()
    // The cipher dir's root is the mount's root directory: its times stay as they were.
    putRootTimesBack()
    const seconds = (Date.now() - started) / 1000
    const summary = {
      masterKeyVersion: rotation.to, reencrypted: rotation.reencrypt, resumed: rotation.resumed, dropped: rotation.dropped, files: walked.files, rewrapped: walked.rewrapped,
      indexRowsRewrapped: rowsRewrapped, indexRowsLeft: rowsLeft, damaged: walked.damaged, unwritable: walked.unwritable, seconds: Math.round(seconds * 100) / 100
    }
    if (o.json === true) process.stdout.write(JSON.stringify(summary) + '\n')
    const what = rotation.reencrypt ? 're-encrypted under new data keys' : 'rewrapped'
    const lines = [`${rotation.resumed ? 'Finished the interrupted rotation to' : 'Rotated to'} master key version ${rotation.to}: ${walked.rewrapped.toLocaleString('en')} of ${walked.files.toLocaleString('en')} files ${what} in ${seconds.toFixed(1)} s; key version ${rotation.from} is gone.`]
    if (rotation.dropped.length > 0) lines.push(`Removed key slot${rotation.dropped.length > 1 ? 's' : ''} ${rotation.dropped.map(n => `'${n}'`).join(', ')} (no credential given).`)
    for (const w of walked.damaged) lines.push(`warning: ${w}: damaged (its header or a chunk does not authenticate), left as it was; it opens through its index row, if that is intact`)
    for (const w of walked.unwritable) lines.push(`warning: ${w}: not writable by this user, left as it was (it opens through its index row; rotate as root or its owner to rewrite it)`)
    process.stderr.write(lines.join('\n') + '\n')
    const reencrypted = rotation.reencrypt
    // The write journal's slots keep old chunks sealed under the data keys just retired (it
    // held no record: #begin refuses one that does). The lock is still held: nothing mounts.
    if (reencrypted) WriteJournal.wipe(cipher)
    closed = true
    return { reencrypted, lock: rotation.close(keepLock) }
  } finally {
    if (!closed) rotation.close()
    if (root >= 0) fs.closeSync(root)
  }
}

async function runRotate (cipher: string, o: RotateOptions): Promise<void> {
  const also: Credential[] = []
  let unlock: Unlock | null = null
  try {
    for (const f of o.alsoPassfile ?? []) also.push({ kind: 'passphrase', secret: fromPassfile(f) })
    for (const f of o.alsoKeyfile ?? []) also.push({ kind: 'keyfile', secret: fromKeyfile(f) })
    unlock = await unlockFrom(cipher, o)
    // An unfinished rotation is finished as it was begun; if it did not re-encrypt and
    // --reencrypt was asked for, a re-encrypting one follows.
    // The mount lock is held from the first to the second: nothing mounts in between.
    const first = await rotateOnce(cipher, unlock, also, o, undefined, o.reencrypt === true)
    if (!first.reencrypted && first.lock !== null) await rotateOnce(cipher, unlock, also, o, first.lock)
    else first.lock?.release()
  } finally {
    for (const c of also) c.secret.fill(0)
    unlock?.credential.secret.fill(0)
  }
}

function unlockOptions (c: Command): Command {
  return c
    .option('--passfile <file>', 'unlock with the passphrase on the first line of a file (-: standard input)')
    .option('--extpass <command>', 'unlock with the passphrase a program prints')
    .option('--keyfile <file>', 'unlock with a key file')
    .option('--slot <name>', 'try only the key slot of this name')
}

/** `sealfs key ...`: the volume's key slots. */
export function defineKeyCommands (key: Command): void {
  key.description('list, add, remove and change key slots (passphrases, key files, recovery keys, key services)')
  key.command('list')
    .description('list the key slots of CIPHER (no passphrase needed)')
    .argument('<CIPHER>', 'cipher dir')
    .option('--json', 'print JSON')
    .action(runList)
  unlockOptions(key.command('add'))
    .description('add a key slot, unlocking with any existing one')
    .argument('<CIPHER>', 'cipher dir')
    .requiredOption('--name <name>', 'the new slot\'s name')
    .option('--new-passfile <file>', 'the new slot\'s passphrase: the first line of this file')
    .option('--new-keyfile <file>', 'write a new key file (32 random bytes, mode 0400) and add a slot for it')
    .option('--recovery', 'generate a recovery key, print it once, and add a slot for it')
    .option('--wrap-cmd <command>', 'key service: a command that reads a secret on stdin and prints an encrypted blob (clevis encrypt, systemd-creds encrypt, a KMS CLI)')
    .option('--unwrap-cmd <command>', 'key service: the command that reads the blob on stdin and prints the secret (stored in the slot)')
    .option('--kdf-opslimit <n>', `Argon2id passes of a new passphrase slot (default ${DEFAULT_COST.opslimit})`)
    .option('--kdf-memlimit <bytes>', `Argon2id memory of a new passphrase slot (default ${DEFAULT_COST.memlimit})`)
    .action(runAdd)
  unlockOptions(key.command('remove'))
    .description('remove the key slot NAME (never the last one)')
    .argument('<CIPHER>', 'cipher dir')
    .argument('<NAME>', 'the slot to remove')
    .action(runRemove)
  unlockOptions(key.command('passwd'))
    .description('change the passphrase of the slot NAME (default: the slot you unlock with)')
    .argument('<CIPHER>', 'cipher dir')
    .argument('[NAME]', 'the passphrase slot to change')
    .option('--new-passfile <file>', 'the new passphrase: the first line of this file (default: asked on the terminal)')
    .option('--kdf-opslimit <n>', 'new Argon2id passes (default: the slot\'s)')
    .option('--kdf-memlimit <bytes>', 'new Argon2id memory (default: the slot\'s)')
    .action(runPasswd)
  unlockOptions(key.command('rotate'))
    .description('make a new master key: rewrap every file\'s key and every slot under it, then destroy the old one (the volume must not be mounted; run it again to finish an interrupted rotation)')
    .argument('<CIPHER>', 'cipher dir')
    .option('--also-passfile <file>', 'keep the passphrase slot this passphrase opens (repeatable)', collect, [])
    .option('--also-keyfile <file>', 'keep the key-file slot this key file opens (repeatable)', collect, [])
    .option('--drop-unopened', 'remove the slots no credential given opens, instead of refusing')
    .option('--reencrypt', 'also give every file a new data key and re-encrypt its contents (for a leaked key; O(bytes))')
    .option('--json', 'progress and the result as JSON lines on stdout')
    .action(runRotate)
}

function collect (value: string, previous: string[]): string[] {
  return [...previous, value]
}
