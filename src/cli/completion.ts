// `sealfs completion bash|zsh`: a completion script made from the commander tree itself (its
// commands, options and arguments as --help shows them), so it stays true as commands change.
import { Command } from 'commander'

/**
 * How a value is completed: a file, a directory, one of some choices, or anything (nothing
 * to offer). Decided by the value's name in the help: `<file>` and `<dir>`, CIPHER and MNT.
 */
type Value = 'file' | 'dir' | 'word' | { choices: string[] }

interface OptionSpec { flags: string[], description: string, value: Value | null, valueName: string, repeats: boolean }
interface ArgumentSpec { description: string, value: Value, required: boolean, variadic: boolean }
interface CommandSpec {
  /** [] for sealfs itself, ['key', 'add'] for `sealfs key add`. */
  path: string[]
  description: string
  commands: CommandSpec[]
  options: OptionSpec[]
  args: ArgumentSpec[]
}

function valueOf (name: string, choices: readonly string[] | undefined): Value {
  if (choices !== undefined && choices.length > 0) return { choices: [...choices] }
  if (/file$/i.test(name)) return 'file'
  if (/^(dir|directory|cipher|mnt)$/i.test(name)) return 'dir'
  return 'word'
}

/** The commands, options and arguments that `--help` shows, recursively (hidden ones left out). */
function specOf (cmd: Command, path: string[], parent: Command | null): CommandSpec {
  const help = cmd.createHelp()
  const options = help.visibleOptions(cmd).map(o => {
    const valueName = /[<[]([^>\].]+)/.exec(o.flags)?.[1] ?? 'value'
    return {
      flags: [o.short, o.long].filter((f): f is string => f !== undefined),
      description: o.description,
      // An optional value ([x]) is not completed: the word after the option may be an argument.
      value: o.required ? valueOf(valueName, o.argChoices) : null,
      valueName,
      // Given more than once: variadic, or collected by a parser (-o a -o b).
      repeats: o.required && (o.variadic || o.parseArg !== undefined)
    }
  })
  // The implicit `help [command]` takes the name of a sibling command.
  const implicitHelp = parent !== null && !parent.commands.includes(cmd)
  const siblings = parent === null ? [] : parent.createHelp().visibleCommands(parent).map(c => c.name()).filter(n => n !== cmd.name())
  const args = cmd.registeredArguments.map(a => ({
    description: a.description !== '' ? a.description : a.name(),
    value: implicitHelp ? { choices: siblings } : valueOf(a.name(), a.argChoices),
    required: a.required,
    variadic: a.variadic
  }))
  const commands = help.visibleCommands(cmd).map(c => specOf(c, [...path, c.name()], cmd))
  return { path, description: cmd.description(), commands, options, args }
}

function allSpecs (s: CommandSpec): CommandSpec[] {
  return [s, ...s.commands.flatMap(allSpecs)]
}

// ------------------------------------------------------------------ bash

/** A value as the bash table writes it. */
function bashValue (v: Value | null): string {
  if (v === null) return '-'
  return typeof v === 'string' ? v : `choices ${v.choices.join(' ')}`
}

const shQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`

function bashScript (root: CommandSpec, prog: string): string {
  const arms = allSpecs(root).map(s => {
    const lines = [
      ...s.commands.map(c => `cmd ${c.path[c.path.length - 1]}`),
      ...s.options.flatMap(o => o.flags.map(f => `opt ${f} ${bashValue(o.value)}`)),
      ...s.args.map(a => `${a.variadic ? 'args' : 'arg'} ${bashValue(a.value)}`)
    ]
    return `    ${shQuote(s.path.join(' '))}) printf '%s\\n' \\\n${lines.map(l => `      ${shQuote(l)}`).join(' \\\n')} ;;`
  })
  const fn = `_${prog.replace(/[^A-Za-z0-9_]/g, '_')}`
  return `# bash completion for ${prog}. Made by \`${prog} completion bash\` from its commands and options.
# Install: ${prog} completion bash > /etc/bash_completion.d/${prog}  (or: source <(${prog} completion bash))

# What command $1 ("", "key", "key add", ...) takes, a line each:
#   cmd NAME         a subcommand
#   opt FLAG VALUE   an option; VALUE is - (none), file, dir, word, or choices C1 C2 ...
#   arg VALUE        the next argument (args VALUE: this one and every one after it)
${fn}_spec () {
  case $1 in
${arms.join('\n')}
  esac
}

# The names of command $1's subcommands or options ($2: cmd or opt), on one line.
${fn}_names () {
  local tag name rest
  while read -r tag name rest; do [[ $tag == "$2" ]] && printf '%s ' "$name"; done < <(${fn}_spec "$1")
}

# The VALUE of option $2 of command $1 (nothing for an unknown option).
${fn}_option () {
  local tag name value
  while read -r tag name value; do [[ $tag == opt && $name == "$2" ]] && printf '%s' "$value"; done < <(${fn}_spec "$1")
}

# The VALUE of argument $2 (from 0) of command $1 (nothing past the last).
${fn}_arg () {
  local tag value k=0
  while read -r tag value; do
    [[ $tag == arg || $tag == args ]] || continue
    if [[ $tag == args || $k == "$2" ]]; then printf '%s' "$value"; return; fi
    ((k++))
  done < <(${fn}_spec "$1")
}

# Completes $2 as a VALUE ($1).
${fn}_value () {
  case $1 in
    file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$2") ;;
    dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$2") ;;
    choices\\ *) mapfile -t COMPREPLY < <(compgen -W "\${1#choices }" -- "$2") ;;
  esac
}

${fn} () {
  local cur=\${COMP_WORDS[COMP_CWORD]} path='' n=0 i w value ended=''
  COMPREPLY=()
  [[ $cur == = ]] && cur=''   # --opt=<TAB>: bash makes the '=' a word of its own
  # The words before the cursor: which command they name, and how many arguments it has.
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if [[ -z $ended && $w == -- ]]; then
      ended=1
    elif [[ -z $ended && $w == -* ]]; then
      value=$(${fn}_option "$path" "$w")
      [[ -z $value || $value == - ]] && continue
      # Its value: the next word, or the one after an '=' (--opt=VALUE); being typed, or skipped.
      ((i + 1 < COMP_CWORD)) && [[ \${COMP_WORDS[i+1]} == = ]] && ((i++))
      if ((i + 1 == COMP_CWORD)); then ${fn}_value "$value" "$cur"; return; fi
      ((i++))
    elif ((n == 0)) && [[ " $(${fn}_names "$path" cmd)" == *" $w "* ]]; then
      path=\${path:+$path }$w
    else
      ((n++))
    fi
  done
  if [[ -z $ended && $cur == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$(${fn}_names "$path" opt)" -- "$cur")
  elif ((n == 0)) && [[ -n $(${fn}_names "$path" cmd) ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$(${fn}_names "$path" cmd)" -- "$cur")
  else
    ${fn}_value "$(${fn}_arg "$path" "$n")" "$cur"
  fi
}

complete -F ${fn} ${prog}
`
}

// ------------------------------------------------------------------ zsh

/** Text inside _arguments' [description] or a :message: field. */
const zshText = (s: string): string => s.replace(/\s+/g, ' ').replace(/([\\\]\[:])/g, '\\$1')

function zshAction (v: Value): string {
  if (v === 'file') return '_files'
  if (v === 'dir') return '_files -/'
  if (v === 'word') return ' '
  return `(${v.choices.map(c => c.replace(/([\\\s()'"])/g, '\\$1')).join(' ')})`
}

function zshOption (o: OptionSpec): string[] {
  // -f and --foreground exclude each other; an option not marked * is offered only once anyway.
  const exclusive = o.repeats ? '*' : o.flags.length > 1 ? `(${o.flags.join(' ')})` : ''
  return o.flags.map(f => {
    const takes = o.value === null ? '' : f.startsWith('--') ? '=' : '+'
    const value = o.value === null ? '' : `:${zshText(o.valueName)}:${zshAction(o.value)}`
    return shQuote(`${exclusive}${f}${takes}[${zshText(o.description)}]${value}`)
  })
}

function zshFunction (s: CommandSpec, prog: string, name: (s: CommandSpec) => string): string {
  const specs = s.options.flatMap(zshOption)
  if (s.commands.length === 0) {
    specs.push(...s.args.map(a => shQuote(`${a.variadic ? '*' : a.required ? '' : ':'}:${zshText(a.description)}:${zshAction(a.value)}`)))
    return `${name(s)} () {\n  _arguments -s -S : \\\n    ${specs.join(' \\\n    ')}\n}\n`
  }
  const commands = s.commands.map(c => shQuote(`${c.path[c.path.length - 1].replace(/:/g, '\\:')}:${c.description.replace(/\s+/g, ' ')}`))
  const dispatch = s.commands.map(c => `        ${shQuote(c.path[c.path.length - 1])}) ${name(c)} ;;`)
  return `${name(s)} () {
  local curcontext=$curcontext state line
  typeset -A opt_args
  _arguments -C -s -S : \\
    ${[...specs, `'1:command:->command'`, `'*::argument:->argument'`].join(' \\\n    ')}
  case $state in
    command)
      local -a commands=(
        ${commands.join('\n        ')}
      )
      _describe -t commands command commands ;;
    argument)
      curcontext=\${curcontext%:*:*}:${[prog, ...s.path].join('-')}-$words[1]:
      case $words[1] in
${dispatch.join('\n')}
      esac ;;
  esac
}
`
}

function zshScript (root: CommandSpec, prog: string): string {
  const base = `_${prog.replace(/[^A-Za-z0-9_]/g, '_')}`
  const name = (s: CommandSpec): string => [base, ...s.path].join('_').replace(/[^A-Za-z0-9_]/g, '_')
  const functions = allSpecs(root).map(s => zshFunction(s, prog, name))
  return `#compdef ${prog}
# zsh completion for ${prog}. Made by \`${prog} completion zsh\` from its commands and options.
# Install: ${prog} completion zsh > DIR/_${prog}, DIR a directory in $fpath (then compinit);
# or, for this shell only: source <(${prog} completion zsh)

${functions.join('\n')}
if [[ $funcstack[1] == ${base} ]]; then
  ${base} "$@"
else
  compdef ${base} ${prog}
fi
`
}

/** A bash or zsh completion script for `program` and every command under it. */
export function completionScript (program: Command, shell: 'bash' | 'zsh'): string {
  const root = specOf(program, [], null)
  return shell === 'bash' ? bashScript(root, program.name()) : zshScript(root, program.name())
}
