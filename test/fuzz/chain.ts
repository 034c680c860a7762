import { sql } from 'kysely'

/**
 * A generated query as a chain of Kysely builder calls: one small IR that can be run against a
 * Kysely instance (encrypted or plaintext copy) and printed as the TypeScript a regression test
 * would hold. The generator (generate.ts) produces these; fast-check shrinks the choices behind them.
 */

/** One argument of a builder call. */
export type Arg =
  /** A JSON-able literal (string, number, boolean, null, array, object). */
  | { readonly lit: unknown }
  /** A JSON value written to or compared with a JSON column (text on the plaintext copy). */
  | { readonly json: unknown }
  /** A Date literal (ISO string). */
  | { readonly date: string }
  /**
   * A name with table placeholders: `{users} as u`, `{orders}.email`. Built with the physical
   * name of the copy it runs on; printed as a template literal over `N.users`.
   */
  | { readonly name: string }
  /** A nested chain (a subquery or expression built from the enclosing lambda's parameter). */
  | { readonly chain: Chain }
  /** A lambda `(p) => chain` whose chain starts from `p`. */
  | { readonly fn: Chain }
  /** An array of arguments. */
  | { readonly arr: readonly Arg[] }
  /** An object of arguments (e.g. `values({...})`, `set({...})`). */
  | { readonly obj: Readonly<Record<string, Arg>> }

/**
 * A method call; `call: ''` invokes the receiver itself (`eb('u.id', '=', 1)`); `get: true`
 * reads a property instead (`eb.fn`).
 */
export interface Call {
  readonly call: string
  readonly args: readonly Arg[]
  readonly get?: true
}

/**
 * Calls applied in order to a root: the Kysely instance (`db`), a lambda's parameter, or raw SQL
 * (`sql\`…\``, its template in `raw`).
 */
export interface Chain {
  readonly root: 'db' | 'param' | 'sql'
  readonly raw?: RawSql
  readonly calls: readonly Call[]
}

/** One part of a raw `sql` template. */
export type RawPart =
  /** SQL text as written (lower-case unquoted names, no `{table}` placeholders). */
  | { readonly text: string }
  /** `${sql.ref(name)}`: a column named with table placeholders, quoted by the dialect. */
  | { readonly ref: string }
  /** `${sql.table(name)}`: a table named with a placeholder (`{tags}`), quoted by the dialect. */
  | { readonly table: string }
  /** `${sql.raw(name)}`: a table named with a placeholder, unquoted in the SQL text. */
  | { readonly rawName: string }
  /** `${value}`: a parameter. */
  | { readonly param: string | number }
  /** `${sql.lit(value)}`: a literal in the SQL text. */
  | { readonly sqlLit: string | number }
  /**
   * `-- text`: a line comment. The template holds no line break after it when it ends the
   * template (the plugin must add one wherever it walks the fragment: Kysely prints a statement
   * on one line, so the comment would swallow what follows).
   */
  | { readonly comment: string }

/** A raw `sql` template; `condition`: it stands for a condition (an operand of WHERE). */
export interface RawSql {
  readonly parts: readonly RawPart[]
  readonly condition: boolean
}

/** Physical names of the fixture's logical tables on one copy. */
export type Names = Readonly<Record<string, string>>

const PLACEHOLDER = /\{(\w+)\}/g

function physical(name: string, names: Names): string {
  return name.replace(PLACEHOLDER, (_, logical: string) => {
    const p = names[logical]
    if (p === undefined) throw new Error(`fuzz: no table ${logical}`)
    return p
  })
}

// biome-ignore lint/suspicious/noExplicitAny: a chain calls Kysely's builders dynamically.
type Dyn = any

/** Where a chain is built: its physical names, and whether JSON values go as text (plaintext copy). */
export interface Target {
  readonly names: Names
  readonly jsonAsText: boolean
  /**
   * The oracle: raw SQL sent with the meaning of the tree Kysely builds, which plain Kysely does
   * not print and the plugin sends. Raw conditions go in parentheses (raw SQL goes out as
   * written, so `where(sql\`a or b\`).where(c)` reads as `a or (b and c)`), and raw SQL ending
   * in a line comment ends with a line break wherever it stands (a condition, a compared or SET
   * value, a select item, ORDER BY, `modifyEnd`, an insert value, a FROM item): plain Kysely
   * prints the statement on one line, so the comment would swallow what follows it
   * (src/plugin/raw-text.ts, `endLine`). A comparison with a raw value goes in parentheses too.
   */
  readonly meaning: boolean
}

/** Builds the value of a chain against `db` (or the lambda parameter `param`). */
export function build(chain: Chain, db: unknown, target: Target, param?: unknown): Dyn {
  let value: Dyn = chain.root === 'db' ? db : chain.root === 'param' ? param : rawSql(chain.raw!, target)
  for (const c of chain.calls) {
    if (c.get === true) {
      value = value[c.call]
      continue
    }
    const args = c.args.map((a) => buildArg(a, db, target, param))
    value = c.call === '' ? value(...args) : value[c.call](...args)
    // The oracle: a comparison with a raw operand is one condition, in parentheses, as the plugin
    // sends it beside others (its text may go on past the value: src/plugin/raw-text.ts,
    // `holdsRaw`).
    if (target.meaning && c.call === '' && chain.root === 'param' && c.args.some(isRawOperand))
      value = (param as Dyn).parens(value)
  }
  return value
}

/** Raw SQL as a value or operand (not a whole condition). */
function isRawOperand(a: Arg): boolean {
  return 'chain' in a && a.chain.root === 'sql' && a.chain.raw?.condition === false
}

function rawSql(raw: RawSql, t: Target): Dyn {
  const fragments = ['']
  const params: unknown[] = []
  const add = (p: unknown) => {
    params.push(p)
    fragments.push('')
  }
  const parens = raw.condition && t.meaning
  for (const [i, p] of raw.parts.entries()) {
    if ('text' in p) fragments[fragments.length - 1] += p.text
    else if ('comment' in p)
      fragments[fragments.length - 1] += `-- ${p.comment}${i < raw.parts.length - 1 || t.meaning ? '\n' : ''}`
    else if ('ref' in p) add(sql.ref(physical(p.ref, t.names)))
    else if ('table' in p) add(sql.table(physical(p.table, t.names)))
    else if ('rawName' in p) add(sql.raw(physical(p.rawName, t.names)))
    else if ('param' in p) add(p.param)
    else add(sql.lit(p.sqlLit))
  }
  if (parens) {
    fragments[0] = `(${fragments[0]}`
    fragments[fragments.length - 1] += ')'
  }
  return sql(fragments as unknown as TemplateStringsArray, ...params)
}

function buildArg(a: Arg, db: unknown, t: Target, param: unknown): unknown {
  if ('lit' in a) return a.lit
  if ('json' in a) return t.jsonAsText ? JSON.stringify(a.json) : a.json
  if ('date' in a) return new Date(a.date)
  if ('name' in a) return physical(a.name, t.names)
  if ('chain' in a) return build(a.chain, db, t, param)
  if ('fn' in a) return (p: unknown) => build(a.fn, db, t, p)
  if ('arr' in a) return a.arr.map((x) => buildArg(x, db, t, param))
  return Object.fromEntries(
    Object.entries(a.obj).map(([k, v]) => [physical(k, t.names), buildArg(v, db, t, param)]),
  )
}

/** Prints a chain as Kysely TypeScript: `db` for the root, `eN` for lambda parameters. */
export function print(chain: Chain, param = 'db', depth = 0): string {
  let out = chain.root === 'db' ? 'db' : chain.root === 'param' ? param : printRaw(chain.raw!)
  for (const c of chain.calls) {
    if (c.get === true) {
      out += `.${c.call}`
      continue
    }
    const args = c.args.map((a) => printArg(a, depth)).join(', ')
    out += c.call === '' ? `(${args})` : `.${c.call}(${args})`
  }
  return out
}

function printArg(a: Arg, depth: number): string {
  if ('lit' in a) return printLiteral(a.lit)
  if ('json' in a) return printLiteral(a.json)
  if ('date' in a) return `new Date('${a.date}')`
  if ('name' in a) {
    if (!PLACEHOLDER.test(a.name)) return `'${a.name}'`
    PLACEHOLDER.lastIndex = 0
    return `\`${a.name.replace(PLACEHOLDER, (_, l: string) => `\${N.${l}}`)}\``
  }
  if ('chain' in a) return print(a.chain, `e${depth}`, depth)
  if ('fn' in a) return `(e${depth + 1}) => ${print(a.fn, `e${depth + 1}`, depth + 1)}`
  if ('arr' in a) return `[${a.arr.map((x) => printArg(x, depth)).join(', ')}]`
  const entries = Object.entries(a.obj).map(([k, v]) => `${printKey(k)}: ${printArg(v, depth)}`)
  return `{ ${entries.join(', ')} }`
}

function printRaw(raw: RawSql): string {
  const parts = raw.parts.map((p, i) => {
    if ('text' in p) return p.text.replace(/[\\`]/g, '\\$&').replace(/\$\{/g, '\\${')
    if ('comment' in p) return `-- ${p.comment}${i < raw.parts.length - 1 ? '\\n' : ''}`
    if ('ref' in p) return `\${sql.ref(${printArg(nm(p.ref), 0)})}`
    if ('table' in p) return `\${sql.table(${printArg(nm(p.table), 0)})}`
    if ('rawName' in p) return `\${sql.raw(${printArg(nm(p.rawName), 0)})}`
    if ('param' in p) return `\${${printLiteral(p.param)}}`
    return `\${sql.lit(${printLiteral(p.sqlLit)})}`
  })
  return `sql\`${parts.join('')}\``
}

function printLiteral(v: unknown): string {
  if (v === null || typeof v !== 'object') return typeof v === 'string' ? quote(v) : String(v)
  if (Array.isArray(v)) return `[${v.map(printLiteral).join(', ')}]`
  const entries = Object.entries(v).map(
    ([k, x]) => `${/^[A-Za-z_]\w*$/.test(k) ? k : quote(k)}: ${printLiteral(x)}`,
  )
  return `{ ${entries.join(', ')} }`
}

function printKey(k: string): string {
  if (/^[A-Za-z_]\w*$/.test(k)) return k
  if (!k.includes('{')) return quote(k)
  return `[\`${k.replace(PLACEHOLDER, (_, l: string) => `\${N.${l}}`)}\`]`
}

function quote(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
}

/** Shorthands for writing chains. */
export const lit = (v: unknown): Arg => ({ lit: v })
export const nm = (v: string): Arg => ({ name: v })
export const chainArg = (c: Chain): Arg => ({ chain: c })
export const fnArg = (c: Chain): Arg => ({ fn: c })
export const arr = (xs: readonly Arg[]): Arg => ({ arr: xs })
export const obj = (o: Record<string, Arg>): Arg => ({ obj: o })
export const call = (name: string, ...args: Arg[]): Call => ({ call: name, args })
export const get = (name: string): Call => ({ call: name, args: [], get: true })
export const onDb = (...calls: Call[]): Chain => ({ root: 'db', calls })
export const onParam = (...calls: Call[]): Chain => ({ root: 'param', calls })
export const rawChain = (raw: RawSql, ...calls: Call[]): Chain => ({ root: 'sql', raw, calls })
