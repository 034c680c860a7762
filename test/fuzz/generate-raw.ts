import { type Arg, type Chain, call, chainArg, lit, nm, onParam, type RawPart, rawChain } from './chain.js'
import { anyColumn, type Gen, type Relation, refIn, type ScopeColumn, tableColumns, valueFor } from './gen.js'
import { poolOf, TABLE_NAMES } from './schema.js'

/**
 * Raw SQL (`sql` template tags) in conditions and values of the fuzz generator
 * (test/fuzz/generate.ts). The text names plaintext columns only: the plugin refuses raw SQL that
 * names an encrypted column (src/plugin/raw-operands.ts), which a raw value compared with an
 * encrypted column, or a comment naming one, exercises. Names are lower-case and unquoted, or
 * given by `sql.ref` (quoted by the dialect), so the same text runs on PostgreSQL and MariaDB.
 */

/** A column of a relation in scope, with what raw SQL may compare it with. */
type Plain = [Relation, ScopeColumn]

function plainColumns(scope: readonly Relation[]): Plain[] {
  return scope.flatMap((r) => r.cols.filter((c) => !c.encrypted).map((c) => [r, c] as Plain))
}

/** `r1.name` as text, or `${sql.ref('r1.name')}` (always for a `{table}` qualifier). */
function nameParts(g: Gen, scope: readonly Relation[], [r, c]: Plain): RawPart {
  const name = refIn(g, scope, r, c)
  return name.includes('{') || g.chance(40) ? { ref: name } : { text: name }
}

/** A value of `c`'s pool as a parameter, `sql.lit`, or a literal in the text. */
export function valuePart(g: Gen, c: ScopeColumn): RawPart {
  const v = g.pick(poolOf(c.origin.table, c.origin.column)) as string | number
  const roll = g.int(0, 99)
  if (roll < 50) return { param: v }
  if (roll < 75) return { sqlLit: v }
  return { text: typeof v === 'number' ? String(v) : `'${v.replace(/'/g, "''")}'` }
}

/** `<column> <op> <value>` over a plaintext column. */
function atom(g: Gen, scope: readonly Relation[], plain: readonly Plain[]): RawPart[] {
  const p = g.pick(plain)
  const name = nameParts(g, scope, p)
  const op = g.pick(['=', '=', '<>', '<', '>=', 'is null', 'is not null', 'in'])
  if (op === 'is null' || op === 'is not null') return [name, { text: ` ${op}` }]
  if (op === 'in')
    return [name, { text: ' in (' }, valuePart(g, p[1]), { text: ', ' }, valuePart(g, p[1]), { text: ')' }]
  return [name, { text: ` ${op} ` }, valuePart(g, p[1])]
}

/** A comment's text: mostly no name of the schema; rarely an encrypted column's (refused by design). */
export function commentText(g: Gen): string {
  if (!g.chance(5)) return 'fz note'
  // The raw text check matches words in comments too (src/plugin/raw-operands.ts): it may refuse.
  g.touches = true
  g.feature('raw comment naming a column')
  return 'by email'
}

/** Sometimes a trailing `-- comment` (the plugin must end the fragment with a line break). */
export function trailingComment(g: Gen, parts: RawPart[], percent = 15): RawPart[] {
  if (!g.chance(percent)) return parts
  g.feature('raw sql ending in a comment')
  return [...parts, { text: ' ' }, { comment: commentText(g) }]
}

/**
 * A condition written as raw SQL: `true`, `1 = 1`, or one to three comparisons of plaintext
 * columns joined by `or`/`and` (the shape whose meaning parentheses decide beside other
 * conditions), sometimes with a `-- comment`: at the end only where the raw SQL is an operand of
 * AND/OR/NOT (there the plugin sends it in parentheses ending in a line break; a comment ending
 * a whole WHERE comments out what follows on both copies and in plain Kysely alike).
 */
export function rawCondition(g: Gen, scope: readonly Relation[], operand: boolean): Chain {
  g.feature('raw sql')
  const plain = plainColumns(scope)
  const roll = g.int(0, 99)
  let parts: RawPart[]
  if (plain.length === 0 || roll < 8) parts = [{ text: 'true' }]
  else if (roll < 16) parts = [{ text: g.pick(['1 = 1', '1 = 0']) }]
  else {
    parts = atom(g, scope, plain)
    const n = roll < 40 ? 0 : roll < 85 ? 1 : 2
    for (let i = 0; i < n; i++) {
      const join = i === 0 || g.chance(50) ? 'or' : 'and'
      if (g.chance(15)) parts.push({ text: ' ' }, { comment: commentText(g) }, { text: join })
      else parts.push({ text: ` ${join}` })
      parts.push({ text: ' ' }, ...atom(g, scope, plain))
    }
  }
  if (g.chance(15)) {
    const text = commentText(g)
    if (operand && g.chance(70)) parts.push({ text: ' ' }, { comment: text })
    else parts.unshift({ comment: text })
  }
  return rawChain({ parts, condition: true })
}

/**
 * `where(column, op, sql\`…\`)`: a raw value compared with a column. Mostly a plaintext column (a
 * parameter, `sql.lit`, arithmetic, another column, a list; or text that goes on past the value,
 * `sql\`'v' or name = 'w'\``, which both copies send as written); sometimes an encrypted column
 * compared with `sql\`${v}\``, which the plugin reads as the value itself (src/plugin/nodes.ts,
 * `nodeValue`) and searches by its blind index, or else must refuse, never sending `v`.
 */
export function rawValueComparison(g: Gen, scope: readonly Relation[]): Chain | undefined {
  const plain = plainColumns(scope)
  if (g.chance(20) || plain.length === 0) {
    const [r, c] = anyColumn(g, scope)
    if (!c.encrypted) return undefined
    const v = valueFor(g, c)
    if (!('lit' in v) || (typeof v.lit !== 'string' && typeof v.lit !== 'number')) return undefined
    g.use(c)
    g.feature('raw sql')
    // Ending in a comment, it is no longer the value alone: refused.
    const raw = rawChain({ parts: trailingComment(g, [{ param: v.lit }], 10), condition: false })
    return onParam(call('', nm(refIn(g, scope, r, c)), lit(g.pick(['=', '<>'])), chainArg(raw)))
  }
  g.feature('raw sql')
  const [r, c] = g.pick(plain)
  // A column the plugin cannot look into named like an encrypted one (a raw relation's): it may
  // refuse a value beside it.
  if (c.lookalike) g.touches = true
  const left = nm(refIn(g, scope, r, c))
  const roll = g.int(0, 99)
  if (roll < 15) {
    const list: RawPart[] = [{ text: '(' }, valuePart(g, c), { text: ', ' }, valuePart(g, c), { text: ')' }]
    return compare(g, left, g.pick(['in', 'not in']), list)
  }
  if (roll < 22 && c.kind === 'int') return compare(g, left, g.pick(['in', 'not in']), rawSubquery(g))
  const op = g.pick(['=', '=', '<>', '<', '>='])
  if (roll < 45) return compare(g, left, op, [valuePart(g, c)])
  if (roll < 60)
    return compare(
      g,
      left,
      op,
      c.kind === 'int'
        ? [valuePart(g, c), { text: ' + 0' }]
        : [{ text: 'lower(' }, valuePart(g, c), { text: ')' }],
    )
  if (roll < 75) {
    const same = plain.filter(([, x]) => x.kind === c.kind)
    return compare(g, left, op, [nameParts(g, scope, g.pick(same))])
  }
  // In an UPDATE that binds ciphertexts to a row context, text going on past the value may take
  // the WHERE out of the tenant its other where() fixes; the plugin still writes that tenant's
  // rows only (its context guard), plain Kysely every tenant's: no oracle for it.
  if (g.contextWrite) return compare(g, left, op, [valuePart(g, c)])
  g.feature('raw value going on past the value')
  return compare(g, left, op, [
    valuePart(g, c),
    { text: ` ${g.pick(['or', 'and'])} ` },
    ...atom(g, scope, plain),
  ])
}

/**
 * `(select id from ${sql.table('{orders}')} o where o.item = 'x')`: raw SQL that reads a table
 * itself. Every fuzz table has encrypted columns, so the plugin must refuse it, never sending a
 * value of it (src/plugin/raw-operands.ts, `refuseRawRead`).
 */
function rawSubquery(g: Gen): RawPart[] {
  g.feature('raw subquery reading a table')
  g.touches = true
  const table = g.pick(TABLE_NAMES)
  const cols = tableColumns(table)
  const alias = g.pick(['', ' x', ' as x'])
  const out = g.chance(50) && cols.some((c) => c.name === 'user_id') ? 'user_id' : 'id'
  const parts: RawPart[] = [
    { text: `(select ${alias === '' ? '' : 'x.'}${out} from ` },
    g.chance(50) ? { table: `{${table}}` } : { rawName: `{${table}}` },
    { text: alias },
  ]
  if (g.chance(70)) {
    // A column whose pool holds strings or numbers (valuePart writes them as SQL).
    const c = g.pick(cols.filter((x) => x.kind === 'int' || x.kind === 'text' || x.kind === 'num'))
    parts.push({ text: ` where ${alias === '' || g.chance(30) ? '' : 'x.'}${c.name} = ` }, valuePart(g, c))
  }
  parts.push({ text: ')' })
  return parts
}

function compare(g: Gen, left: Arg, op: string, parts: RawPart[]): Chain {
  const raw = rawChain({ parts: trailingComment(g, parts), condition: false })
  return onParam(call('', left, lit(op), chainArg(raw)))
}

/**
 * A raw value for `set({ col: sql\`…\` })` of column `c` of `own`: a parameter, `sql.lit`, the
 * column plus one, `lower(…)`. For an encrypted column `sql\`${v}\``, which the plugin reads as
 * the value itself and encrypts, or else must refuse, never sending `v`.
 */
export function rawSetValue(g: Gen, own: Relation, c: ScopeColumn): Arg {
  g.feature('raw sql')
  if (c.encrypted) {
    const v = valueFor(g, c)
    // Ending in a comment, it is no longer the value alone: refused.
    if ('lit' in v && (typeof v.lit === 'string' || typeof v.lit === 'number'))
      return chainArg(rawChain({ parts: trailingComment(g, [{ param: v.lit }], 10), condition: false }))
    return v
  }
  const roll = g.int(0, 99)
  let parts: RawPart[]
  if (roll < 50) parts = [valuePart(g, c)]
  else if (c.kind === 'int') parts = [{ ref: `${own.q}.${c.name}` }, { text: ' + 1' }]
  else parts = [{ text: 'lower(' }, valuePart(g, c), { text: ')' }]
  return chainArg(rawChain({ parts: trailingComment(g, parts), condition: false }))
}
