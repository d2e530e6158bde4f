import { Command } from 'commander'
import fs from 'fs'
import { entriesOfFileId, entryAtPath, VolumeEntry } from '../filesystem/volume-paths'
import { readConfig } from '../volume/config'
import { checkDir, Volume } from '../volume/volume'
import { CliError } from './exit-codes'
import { CredentialOptions } from './passphrase'
import { chooseCredential } from './unlock'
import { withProgress } from './progress'

interface PathOptions extends CredentialOptions { slot?: string, fileId?: string, plain?: string, json?: boolean }

/**
 * `sealfs path`: a file ID from a log line to its plaintext path, or a plaintext path to the
 * backing entry that holds it (what gocryptfs-xray does). Unlocks the volume without its lock
 * or index, read-only, so it also runs while the volume is mounted.
 */
async function runPath (cipher: string, o: PathOptions): Promise<void> {
  if ((o.fileId === undefined) === (o.plain === undefined)) throw new CliError('usage', 'give one of --file-id ID and --plain PATH')
  const fileId = o.fileId?.toLowerCase()
  if (fileId !== undefined && !/^[0-9a-f]{32}$/.test(fileId)) throw new CliError('usage', `a file ID is 32 hex digits, as log lines give it, not '${o.fileId ?? ''}'`)
  checkDir(cipher)
  readConfig(cipher)
  const choice = await chooseCredential(cipher, o, o.slot)
  let volume: Volume
  try {
    volume = await withProgress('unlocking', Volume.unlock(cipher, choice.credential, { slot: choice.slot, beside: true }))
  } finally {
    choice.credential.secret.fill(0)
  }
  let found: VolumeEntry[]
  let skipped = 0
  try {
    const root = fs.openSync(cipher, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
    try {
      if (fileId !== undefined) ({ found, skipped } = entriesOfFileId(volume, root, fileId))
      else found = [entryAtPath(volume, root, o.plain as string)].filter((e): e is VolumeEntry => e !== null)
    } finally {
      fs.closeSync(root)
    }
  } finally {
    await volume.close()
  }
  if (found.length === 0) {
    const unwalked = skipped > 0 ? ` (${skipped} director${skipped > 1 ? 'ies were' : 'y was'} not walked: on another filesystem, unreadable, or too deep)` : ''
    throw new CliError('not-found', fileId !== undefined ? `no file of ${cipher} has file ID ${fileId}${unwalked}` : `${o.plain ?? ''} is not in the volume`)
  }
  if (o.json === true) {
    process.stdout.write(JSON.stringify(found, null, 2) + '\n')
    return
  }
  // A name may hold a line break or a control character: shown escaped, one entry a line (--json is exact).
  const shown = (p: string): string => p.replace(/[\x00-\x1f\x7f\\]/g, c => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
  for (const e of found) process.stdout.write(fileId !== undefined ? `${shown(e.path)}\n` : `${e.backing}${e.fileId !== null ? `  (file ID ${e.fileId})` : ''}\n`)
}

export function definePathCommand (p: Command): void {
  p.command('path')
    .description('map a file ID from a log line to its path in the volume (--file-id), or a path in the volume to its backing entry and file ID (--plain); runs while mounted too')
    .argument('<CIPHER>', 'cipher dir')
    .option('--file-id <id>', 'the file ID (32 hex digits) a log line names')
    .option('--plain <path>', 'a path inside the volume, from its root (/docs/a.txt)')
    .option('--passfile <file>', 'unlock with the passphrase on the first line of a file (-: standard input)')
    .option('--extpass <command>', 'unlock with the passphrase a program prints')
    .option('--keyfile <file>', 'unlock with a key file')
    .option('--slot <name>', 'try only the key slot of this name')
    .option('--json', 'print JSON: path, backing (from CIPHER) and fileId of each')
    .action(runPath)
}
