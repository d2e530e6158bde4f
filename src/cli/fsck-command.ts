import { Command } from 'commander'
import fs from 'fs'
import path from 'path'
import { checkVolume, CheckProgress } from '../filesystem/volume-check'
import { backing, STAT_ATIME_NSEC, STAT_ATIME_SEC, STAT_LENGTH, STAT_MTIME_NSEC, STAT_MTIME_SEC } from '../filesystem/backing-addon'
import { DekIndex, INDEX_FILE } from '../volume/dek-index'
import { readConfig } from '../volume/config'
import { VolumeError } from '../volume/errors'
import { checkDir } from '../volume/volume'
import { Volume } from '../volume/volume'
import { CliError, EXIT } from './exit-codes'
import { loadAddon, PosixAddon } from '../native'
import { CredentialOptions } from './passphrase'
import { chooseCredential } from './unlock'
import { clearProgress, withProgress } from './progress'

interface FsckOptions extends CredentialOptions { slot?: string, repair?: boolean, json?: boolean, salvage?: string, upgrade?: boolean }

/**
 * Progress on a terminal (entries, files, bytes, rate, and the time left, reckoned by files
 * against the index's row count: about one row per file), else nothing.
 */
function fsckProgress (expectedFiles: number): { update: (p: CheckProgress) => void, end: () => void } {
  const started = Date.now()
  let last = 0
  const tty = process.stderr.isTTY
  return {
    update: p => {
      const now = Date.now()
      if (!tty || now - last < 100) return
      last = now
      const mb = p.bytes / 1e6
      const seconds = Math.max(0.001, (now - started) / 1000)
      const left = expectedFiles > p.files && p.files > 0 ? `, about ${Math.ceil(seconds * (expectedFiles - p.files) / p.files)} s left` : ''
      process.stderr.write(`\rchecking: ${p.entries.toLocaleString('en')} entries, ${p.files.toLocaleString('en')}${expectedFiles > 0 ? ` of ~${expectedFiles.toLocaleString('en')}` : ''} files, ${mb.toFixed(0)} MB, ${(mb / seconds).toFixed(0)} MB/s${left}   `)
    },
    end: () => { if (tty && last > 0) process.stderr.write('\n') }
  }
}

/**
 * The --salvage directory, made (0700) if missing, opened: it must not be inside the cipher
 * dir (copies of plaintext there would be in the clear, and walked as entries).
 */
function openSalvageDir (dir: string, cipher: string): number {
  // Checked before anything is made: the nearest existing ancestor stands for a new directory.
  let existing = path.resolve(dir)
  while (!fs.existsSync(existing) && path.dirname(existing) !== existing) existing = path.dirname(existing)
  const rest = path.relative(existing, path.resolve(dir))
  const real = path.join(fs.realpathSync(existing), rest)
  const realCipher = fs.realpathSync(cipher)
  const within = (a: string, b: string): boolean => a === b || a.startsWith(b.endsWith(path.sep) ? b : b + path.sep)
  if (within(real, realCipher)) throw new CliError('usage', `--salvage: ${dir} is inside the cipher dir; give a directory outside it`)
  if (within(realCipher, real)) throw new CliError('usage', `--salvage: the cipher dir is inside ${dir}; give a directory outside it`)
  try {
    fs.mkdirSync(real, { recursive: true, mode: 0o700 })
  } catch (e) {
    throw new CliError('usage', `--salvage: cannot make ${dir} (${(e as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  return fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW)
}

async function runFsck (cipher: string, o: FsckOptions): Promise<void> {
  if (o.upgrade === true && o.repair !== true) throw new CliError('usage', '--upgrade changes the volume: give it with --repair')
  checkDir(cipher)
  readConfig(cipher)  // not a volume, or a damaged config: said (exit 5 or 6) before anything else
  const salvageDir = o.salvage !== undefined ? openSalvageDir(o.salvage, cipher) : -1
  try {
    await checkAndReport(cipher, o, salvageDir)
  } finally {
    if (salvageDir >= 0) fs.closeSync(salvageDir)
  }
}

async function checkAndReport (cipher: string, o: FsckOptions, salvageDir: number): Promise<void> {
  const repair = o.repair === true
  const started = Date.now()
  // Without an index a read-only check cannot open the volume; --repair rebuilds it. One that
  // is not a regular file (a planted FIFO, device or symlink) is never opened.
  let indexMissing = false
  try {
    const st = fs.lstatSync(path.join(cipher, INDEX_FILE))
    if (!st.isFile()) throw new VolumeError('damaged-config', `${path.join(cipher, INDEX_FILE)} is not a regular file; move it away and run 'sealfs fsck --repair' to rebuild it`)
  } catch (e) {
    if (e instanceof VolumeError) throw e
    indexMissing = true
  }
  if (indexMissing && !repair) {
    const line = `${path.join(cipher, INDEX_FILE)} is missing: run 'sealfs fsck --repair' to rebuild it from the file headers`
    if (o.json === true) process.stdout.write(JSON.stringify({ problems: [{ path: '(index)', what: 'missing', repaired: false }], clean: false }) + '\n')
    process.stderr.write(`${line}\n`)
    process.exitCode = EXIT.FSCK_PROBLEMS
    return
  }
  const choice = await chooseCredential(cipher, o, o.slot)
  let volume: Volume
  try {
    // A repair takes the volume lease where flock may not reach other clients (it does not
    // renew it: a long repair is not protected past its first 11 s).
    volume = await withProgress('unlocking', Volume.unlock(cipher, choice.credential, { readOnly: !repair, slot: choice.slot, upgrading: o.upgrade === true, lease: line => { clearProgress(); process.stderr.write(`sealfs: ${line}\n`) } }))
  } finally {
    choice.credential.secret.fill(0)
  }
  // --upgrade: the config says so before the first file changes, until the last has.
  const upgrade = o.upgrade === true && volume.upgradable
  let upgraded: 'finished' | 'unfinished' | 'not needed' = 'not needed'
  const root = fs.openSync(cipher, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
  const progress = fsckProgress(indexMissing ? 0 : (() => { try { return DekIndex.countFiles(cipher) } catch { return 0 } })())
  let result: ReturnType<typeof checkVolume>
  let indexFailed: string | null = null
  volume.index.onError = message => { indexFailed ??= message }
  try {
    // The config's writes change the root's times, which are the mount's root directory's.
    const rootSt = new Float64Array(STAT_LENGTH)
    const rootTimes = upgrade && backing.statAt(root, Buffer.alloc(0), rootSt) >= 0
    try {
      if (upgrade) volume.beginUpgrade()
      result = checkVolume(volume, root, repair, progress.update, salvageDir, upgrade)
      if (upgrade) {
        upgraded = 'unfinished'
        if (result.upgradeLeft === 0 && indexFailed === null) {
          const rc = loadAddon<PosixAddon>('posix').syncfs(root)  // every tag and header on disk before the config requires them
          if (rc >= 0) { volume.finishUpgrade(); upgraded = 'finished' }
        }
      }
    } finally {
      if (rootTimes) backing.utimensFd(root, rootSt[STAT_ATIME_SEC], rootSt[STAT_ATIME_NSEC], rootSt[STAT_MTIME_SEC], rootSt[STAT_MTIME_NSEC])
    }
  } finally {
    progress.end()
    fs.closeSync(root)
    await volume.close()  // repaired index rows are committed here
  }
  if (indexFailed !== null) {
    // Nothing queued for the index reached it: those repairs did not happen.
    for (const p of result.problems) if (p.path === '(index)' || p.what.includes('index row')) p.repaired = false
    result.problems.push({ path: '(index)', what: `could not be written: ${indexFailed}`, repaired: false })
  }
  if (indexMissing) result.problems.unshift({ path: '(index)', what: 'sealfs.index was missing; rebuilt from the file headers', repaired: true })
  const seconds = (Date.now() - started) / 1000
  const left = result.problems.filter(p => !p.repaired).length
  if (o.json === true) {
    process.stdout.write(JSON.stringify({ ...result, ...(o.upgrade === true ? { upgrade: upgraded } : {}), seconds: Math.round(seconds * 100) / 100, clean: result.problems.length === 0 }) + '\n')
  }
  const lines = result.problems.map(p => `${p.path}: ${p.what}${p.repaired ? ' (repaired)' : repair ? ' (not repaired)' : ''}`)
  for (const s of result.salvaged) {
    const lost = s.lost.map(([a, b]) => b === null ? `${a} to the end (the file was cut short or torn there)` : `${a}-${b}`).join(', ')
    lines.push(`${s.path}: salvaged to ${path.join(o.salvage as string, s.to)} (${s.size.toLocaleString('en')} bytes; lost, as zeros: bytes ${lost})`)
  }
  lines.push(`Checked ${result.directories.toLocaleString('en')} directories, ${result.files.toLocaleString('en')} files (${(result.bytes / 1e6).toFixed(1)} MB) and ${result.symlinks.toLocaleString('en')} symlinks in ${seconds.toFixed(1)} s: ` +
    (result.problems.length === 0 ? 'no problems.' : `${result.problems.length} problem${result.problems.length > 1 ? 's' : ''}${repair ? `, ${result.problems.length - left} repaired` : ' (sealfs fsck --repair repairs what it can)'}.`))
  if (upgraded === 'finished') lines.push(`Upgraded: ${result.upgraded.toLocaleString('en')} file${result.upgraded === 1 ? '' : 's'} given an end tag; every file's end is now authenticated.`)
  if (upgraded === 'unfinished') lines.push(`Upgrade unfinished: ${result.upgraded.toLocaleString('en')} file${result.upgraded === 1 ? '' : 's'} given an end tag, some not (named above). The volume does not mount until it is finished: mend what is named and run 'sealfs fsck --repair --upgrade ${cipher}' again.`)
  if (o.upgrade === true && upgraded === 'not needed') lines.push('Upgrade: not needed (this volume has end tags).')
  process.stderr.write(lines.join('\n') + '\n')
  if (upgraded === 'unfinished') process.exitCode = EXIT.UPGRADE_IN_PROGRESS
  else if (result.problems.length > 0) process.exitCode = left > 0 ? EXIT.FSCK_PROBLEMS : EXIT.FSCK_REPAIRED
}

/** `sealfs fsck`: checks (and with --repair, mends) an unmounted or read-only-mounted volume. */
export function defineFsckCommand (p: Command): void {
  p.command('fsck')
    .description('check every name, header, chunk and index row of a volume that is not mounted read-write; --repair rebuilds the index, removes crash leftovers and quarantines what does not decrypt')
    .argument('<CIPHER>', 'cipher dir')
    .option('--passfile <file>', 'unlock with the passphrase on the first line of a file (-: standard input)')
    .option('--extpass <command>', 'unlock with the passphrase a program prints')
    .option('--keyfile <file>', 'unlock with a key file')
    .option('--slot <name>', 'try only the key slot of this name')
    .option('--repair', 'rebuild index rows from the headers, remove rows of deleted files and crash leftovers, move entries that do not decrypt to sealfs.quarantine (never deletes a file\'s contents)')
    .option('--salvage <dir>', 'copy every readable byte of each damaged file to the same path under <dir> (outside the cipher dir), the bytes lost as zeros, and say which')
    .option('--upgrade', 'with --repair: give every file of a volume made before end tags its end tag, so that a file cut short reads as EIO (resumable; the volume does not mount until it has finished)')
    .option('--json', 'print a JSON summary on stdout')
    .action(runFsck)
}
