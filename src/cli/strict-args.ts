import type { ArgsDef, CommandDef } from 'citty'
import { OperationError } from '../errors.js'

/** What citty accepts of every command beside its own arguments (exactly these tokens). */
const GLOBAL = new Set(['--help', '-h', '--version', '-v'])

const camel = (name: string) => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

/**
 * The options of `argv` (the arguments after `kfe`) that its subcommand does not declare, or
 * `undefined` when there is no subcommand to check (citty prints the usage then). citty accepts
 * any `--flag`, so a mistyped `--dryrun` would run the command for real: the CLI refuses it.
 * A string option's value (`--table x`, `--from --odd` never happens with citty either) is
 * skipped; `--name=value`, `--no-name` of a boolean, and the camelCase spelling are accepted.
 */
export function unknownOptions(argv: readonly string[], main: CommandDef): string[] | undefined {
  const subs = (main.subCommands ?? {}) as Record<string, CommandDef>
  const at = argv.findIndex((a) => !a.startsWith('-'))
  const sub = at < 0 ? undefined : subs[argv[at]!]
  if (sub === undefined) return undefined
  // citty hands the subcommand only what follows its name: an option before it (`kfe --dry-run
  // rotate …`) would be dropped, and the command run without it.
  // Named without a value given after '=' (a value is the user's, and may be a secret).
  const before = argv
    .slice(0, at)
    .filter((a) => !GLOBAL.has(a))
    .map((a) => a.split('=')[0]!)
  if (before.length > 0) return before
  const defs = (sub.args ?? {}) as ArgsDef
  const known = new Map<string, 'string' | 'boolean'>()
  for (const [key, def] of Object.entries(defs)) {
    if (def.type === 'positional') continue
    const type = def.type === 'boolean' ? 'boolean' : 'string'
    const alias = (def as { alias?: string | string[] }).alias
    const aliases = alias === undefined ? [] : Array.isArray(alias) ? alias : [alias]
    for (const n of [key, camel(key), ...aliases]) known.set(n, type)
  }
  const unknown: string[] = []
  const positionals = Object.values(defs).filter((d) => d.type === 'positional').length
  let seen = -1 // the command's own name is the first word
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!
    if (token === '--') break
    if (!token.startsWith('-') || token === '-') {
      // `kfe verify users extra`: a word the command takes no place for (citty ignores it).
      if (++seen > positionals) unknown.push(token)
      continue
    }
    const body = token.replace(/^--?/, '')
    const [flag = '', value] = body.split(/=(.*)/s)
    // `--no-x` negates a boolean only (citty would make a string option `false`).
    const negated = flag.startsWith('no-') && known.get(flag.slice(3)) === 'boolean' ? 'boolean' : undefined
    const type = known.get(flag) ?? negated
    if (type === undefined) {
      if (!GLOBAL.has(token)) unknown.push(token.split('=')[0]!)
      continue
    }
    // A string option's value is the next argument (unless given as --name=value).
    if (type === 'string' && value === undefined) i++
  }
  return unknown
}

/** The error for {@link unknownOptions}' result: nothing was run. */
export function unknownOptionsError(unknown: readonly string[], command: string): OperationError {
  return new OperationError(
    'OPS_INVALID',
    `Unknown option${unknown.length > 1 ? 's' : ''} or argument${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} for \`kfe ${command}\`: nothing was run (options go after the command's name; see \`kfe ${command} --help\`).`,
  )
}

/**
 * With `--json`, the error for a missing or unknown command (citty would print its usage text,
 * which is not JSON); `undefined` when `argv` names a command, or without `--json`.
 */
export function unknownCommandError(argv: readonly string[], main: CommandDef): OperationError | undefined {
  if (!argv.includes('--json')) return undefined
  const subs = (main.subCommands ?? {}) as Record<string, CommandDef>
  const name = argv.find((a) => !a.startsWith('-'))
  if (name !== undefined && subs[name] !== undefined) return undefined
  return new OperationError(
    'OPS_INVALID',
    `${name === undefined ? 'No command given' : `Unknown command ${name}`}: nothing was run (commands: ${Object.keys(subs).join(', ')}).`,
  )
}
