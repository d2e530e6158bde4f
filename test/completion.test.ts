import { spawnSync } from 'child_process'
import fs from 'fs'
import path from 'path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { completionScript } from '../src/cli/completion'
import { program } from '../src/cli/main'
import { removeTree, tempDir } from './helpers'

describe('shell completion', () => {
  let dir: string
  let bashScript: string
  beforeAll(() => {
    dir = tempDir('completion')
    bashScript = path.join(dir, 'sealfs.bash')
    fs.writeFileSync(bashScript, completionScript(program(), 'bash'))
    fs.mkdirSync(path.join(dir, 'cipher'))
    fs.mkdirSync(path.join(dir, 'plain'))
    fs.writeFileSync(path.join(dir, 'passfile'), '')
  })
  afterAll(async () => { await removeTree(dir) })

  /** What bash's completion offers for the words typed so far (the last one is being completed). */
  function bash (...words: string[]): string[] {
    const run = 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _sealfs; printf "%s\\n" "${COMPREPLY[@]}"'
    const r = spawnSync('bash', ['--norc', '--noprofile', '-c', run, 'bash', bashScript, ...words], { cwd: dir, encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    return r.stdout.split('\n').filter(l => l !== '').sort()
  }

  it('completes commands, nested key commands and the implicit help command', () => {
    expect(bash('sealfs', 'mo')).toEqual(['mount'])
    expect(bash('sealfs', '')).toEqual(['completion', 'fsck', 'help', 'info', 'init', 'key', 'mount', 'path', 'status', 'umount'])
    expect(bash('sealfs', 'key', '')).toEqual(['add', 'help', 'list', 'passwd', 'remove', 'rotate'])
    expect(bash('sealfs', 'key', 'pa')).toEqual(['passwd'])
    expect(bash('sealfs', 'help', 'k')).toEqual(['key'])
  })

  it('completes the options of the command typed, never a hidden one', () => {
    expect(bash('sealfs', 'mount', '--pa')).toEqual(['--passfile'])
    const all = bash('sealfs', 'mount', '-')
    expect(all).toContain('--foreground')
    expect(all).toContain('-o')
    expect(all).toContain('--help')
    expect(all).not.toContain('--passphrase-fd')
    expect(bash('sealfs', 'key', 'rotate', '--also-')).toEqual(['--also-keyfile', '--also-passfile'])
    expect(bash('sealfs', '--ver')).toEqual(['--version'])
  })

  it('completes directories for CIPHER and MNT, files for --passfile and --log, choices where there are some', () => {
    expect(bash('sealfs', 'mount', '')).toEqual(['cipher', 'plain'])
    expect(bash('sealfs', 'mount', 'cipher', 'p')).toEqual(['plain'])
    // An option's value is not taken for an argument: CIPHER is still next.
    expect(bash('sealfs', 'mount', '--slot', 'a', '-o', 'ro', 'c')).toEqual(['cipher'])
    expect(bash('sealfs', 'mount', '--passfile', 'pa')).toEqual(['passfile'])
    expect(bash('sealfs', 'mount', '--log', 'pa')).toEqual(['passfile'])
    // --opt=VALUE: bash makes the '=' a word of its own.
    expect(bash('sealfs', 'mount', '--passfile', '=', 'pa')).toEqual(['passfile'])
    expect(bash('sealfs', 'mount', '--passfile', '=')).toEqual(['cipher', 'passfile', 'plain', 'sealfs.bash'])
    expect(bash('sealfs', 'mount', '--log-level', 'd')).toEqual(['debug'])
    expect(bash('sealfs', 'mount', '--slot', '')).toEqual([])
    expect(bash('sealfs', 'completion', '')).toEqual(['bash', 'zsh'])
    expect(bash('sealfs', 'status', 'cipher', 'p')).toEqual(['plain'])
    expect(bash('sealfs', 'mount', 'cipher', 'plain', '')).toEqual([])
    expect(bash('sealfs', 'key', 'add', '--new-keyfile', 'pa')).toEqual(['passfile'])
    // A path inside the volume is not one here: nothing is offered.
    expect(bash('sealfs', 'path', '--plain', 'pa')).toEqual([])
    expect(bash('sealfs', 'path', '--plain', 'x', 'ci')).toEqual(['cipher'])
  })

  const zsh = spawnSync('zsh', ['--version']).status === 0
  it.skipIf(!zsh)('makes a zsh script that zsh parses', () => {
    const script = path.join(dir, '_sealfs')
    const text = completionScript(program(), 'zsh')
    expect(text.startsWith('#compdef sealfs\n')).toBe(true)
    expect(text).not.toContain('passphrase-fd')
    fs.writeFileSync(script, text)
    const r = spawnSync('zsh', ['-n', script], { encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
  })
})
