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
  const found = subcommandOf(argv, main)
  if (found === undefined) return undefined
  // citty hands the subcommand only what follows its name: an option before it (`kfe --dry-run
  // rotate …`) would be dropped, and the command run without it.
  // Named without a value given after '=' (a value is the user's, and may be a secret).
  const before = argv
    .slice(0, found.at)
    .filter((a) => !GLOBAL.has(a))
    .map((a) => a.split('=')[0]!)
  if (before.length > 0) return before
  return walk(argv, found.defs).unknown
}

/**
 * With `argv` naming a subcommand, the error for the required arguments it leaves out (a
 * positional such as `<table>`, an option such as `--phase`); `undefined` when none is missing,
 * when there is no subcommand, or with `--help` (citty prints the usage then). citty would print
 * its usage text on stdout and exit 1 instead: not a typed error, and not JSON under `--json`.
 */
export function missingArgumentsError(argv: readonly string[], main: CommandDef): OperationError | undefined {
  const found = subcommandOf(argv, main)
  if (found === undefined || argv.some((a) => a === '--help' || a === '-h')) return undefined
  const { given, positionals } = walk(argv, found.defs)
  const missing: string[] = []
  let place = 0
  for (const [key, def] of Object.entries(found.defs)) {
    if (def.type === 'positional') {
      if (def.required === true && place >= positionals) missing.push(`<${key}>`)
      place++
    } else if ((def as { required?: boolean }).required === true && !given.has(key)) missing.push(`--${key}`)
  }
  if (missing.length === 0) return undefined
  const command = argv[found.at]!
  return new OperationError(
    'OPS_INVALID',
    `\`kfe ${command}\` needs ${missing.join(', ')}: nothing was run (see \`kfe ${command} --help\`).`,
  )
}

/** The subcommand `argv` names, its place in `argv` and its argument definitions. */
function subcommandOf(argv: readonly string[], main: CommandDef): { at: number; defs: ArgsDef } | undefined {
  const subs = (main.subCommands ?? {}) as Record<string, CommandDef>
  const at = argv.findIndex((a) => !a.startsWith('-'))
  const sub = at < 0 ? undefined : subs[argv[at]!]
  if (sub === undefined) return undefined
  return { at, defs: (sub.args ?? {}) as ArgsDef }
}

/**
 * Reads `argv` as citty does for a subcommand of `defs`: the options and words it does not
 * declare, the declared options given (by their key), and how many positionals were given.
 */
function walk(
  argv: readonly string[],
  defs: ArgsDef,
): { unknown: string[]; given: Set<string>; positionals: number } {
  const known = new Map<string, { key: string; type: 'string' | 'boolean' }>()
  for (const [key, def] of Object.entries(defs)) {
    if (def.type === 'positional') continue
    const type = def.type === 'boolean' ? 'boolean' : 'string'
    const alias = (def as { alias?: string | string[] }).alias
    const aliases = alias === undefined ? [] : Array.isArray(alias) ? alias : [alias]
    for (const n of [key, camel(key), ...aliases]) known.set(n, { key, type })
  }
  const unknown: string[] = []
  const given = new Set<string>()
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
    const negated = flag.startsWith('no-') ? known.get(flag.slice(3)) : undefined
    const option = known.get(flag) ?? (negated?.type === 'boolean' ? negated : undefined)
    if (option === undefined) {
      if (!GLOBAL.has(token)) unknown.push(token.split('=')[0]!)
      continue
    }
    // A string option's value is the next argument (unless given as --name=value), whatever it
    // looks like (citty's parser, node:util parseArgs non-strict, takes it); none is left at the end.
    if (option.type === 'string' && value === undefined) {
      if (i + 1 < argv.length) given.add(option.key)
      i++
    } else given.add(option.key)
  }
  return { unknown, given, positionals: Math.max(0, Math.min(seen, positionals)) }
}

/** The error for {@link unknownOptions}' result: nothing was run. */
export function unknownOptionsError(unknown: readonly string[], command: string): OperationError {
  return new OperationError(
    'OPS_INVALID',
    `Unknown option${unknown.length > 1 ? 's' : ''} or argument${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} for \`kfe ${command}\`: nothing was run (options go after the command's name; see \`kfe ${command} --help\`).`,
  )
}

/**
 * The error for an unknown command, and with `--json` for a missing one (citty would print its
 * usage text, which is not JSON, and an unknown command's name apart from it, untagged);
 * `undefined` when `argv` names a command, or names none without `--json` (`kfe` alone prints
 * the usage).
 */
export function unknownCommandError(argv: readonly string[], main: CommandDef): OperationError | undefined {
  const subs = (main.subCommands ?? {}) as Record<string, CommandDef>
  const name = argv.find((a) => !a.startsWith('-'))
  if (name === undefined ? !argv.includes('--json') : subs[name] !== undefined) return undefined
  return new OperationError(
    'OPS_INVALID',
    `${name === undefined ? 'No command given' : `Unknown command ${name}`}: nothing was run (commands: ${Object.keys(subs).join(', ')}).`,
  )
}
