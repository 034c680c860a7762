import { type Arg, type Call, call, chainArg, lit, type RawPart, rawChain } from './chain.js'
import { ALIASES, type Gen, type Relation, refIn, type ScopeColumn, tableColumns, valueFor } from './gen.js'
import { commentText, trailingComment, valuePart } from './generate-raw.js'
import { column, poolOf, TABLE_NAMES, type TableName } from './schema.js'

/**
 * Raw SQL outside WHERE in the fuzz generator (test/fuzz/generate.ts): select items, ORDER BY,
 * `modifyEnd`, insert values and FROM items. As in generate-raw.ts the text names plaintext
 * columns, except on purpose (an encrypted column, which the plugin must refuse). Each may end in
 * a `-- comment`, which the plugin must end with a line break (src/plugin/raw-text.ts, `endLine`)
 * and the oracle does (chain.ts, `Target.meaning`): plain Kysely prints a statement on one line.
 */

/** Names of encrypted columns (and their blind indexes) of the fuzz schema. */
const ENCRYPTED_NAMES = new Set(
  TABLE_NAMES.flatMap((t) =>
    tableColumns(t)
      .filter((c) => c.encrypted)
      .flatMap((c) => [c.name, `${c.name}_bidx`]),
  ),
)

/** `${sql.ref('r.c')}` or `r.c` as text. */
function name(g: Gen, scope: readonly Relation[], r: Relation, c: ScopeColumn): RawPart {
  const n = refIn(g, scope, r, c)
  return n.includes('{') || g.chance(50) ? { ref: n } : { text: n }
}

/** An expression over one column: itself, `c + 1`, `coalesce(c, …)`, `lower(c)`. */
function expression(g: Gen, scope: readonly Relation[], r: Relation, c: ScopeColumn): RawPart[] {
  const n = name(g, scope, r, c)
  const roll = g.int(0, 99)
  if (roll < 40) return [n]
  if (c.kind === 'int')
    return roll < 70 ? [n, { text: ' + 1' }] : [{ text: 'coalesce(' }, n, { text: ', 0)' }]
  if (c.kind === 'text')
    return roll < 70
      ? [{ text: 'lower(' }, n, { text: ')' }]
      : [{ text: 'coalesce(' }, n, { text: ", 'none')" }]
  return [n]
}

/**
 * `sql\`…\`.as(alias)` in a select list: an expression over a column of `scope`, mostly a
 * plaintext one (an encrypted one is refused by design: the plugin cannot decrypt what raw SQL
 * computes); sometimes a constant. Its output, for derived tables, ORDER BY and set operations.
 */
export function rawSelectItem(
  g: Gen,
  scope: readonly Relation[],
  name: string,
): { arg: Arg; out: ScopeColumn } {
  let alias = name
  g.feature('raw sql')
  g.feature('raw select item')
  // Sometimes an alias another column of the schema carries (email, name, …).
  if (g.chance(25)) alias = g.pick(ALIASES)
  const plain = scope.flatMap((r) => r.cols.filter((c) => !c.encrypted).map((c) => [r, c] as const))
  const all = scope.flatMap((r) => r.cols.map((c) => [r, c] as const))
  const as = call('as', lit(alias))
  if (plain.length === 0 || g.chance(10)) {
    const [t, n] = g.pick([
      ['users', 'id'],
      ['tags', 'label'],
    ] as const)
    const col = column(t, n)
    const parts = trailingComment(g, [{ sqlLit: g.pick(poolOf(t, col) as readonly (string | number)[]) }])
    const out = { name: alias, kind: col.kind, encrypted: false, origin: { table: t, column: col } }
    return { arg: chainArg(rawChain({ parts, condition: false }, as)), out }
  }
  const [r, c] = g.chance(85) ? g.pick(plain) : g.pick(all)
  g.use(c)
  const parts = trailingComment(g, expression(g, scope, r, c))
  return {
    arg: chainArg(rawChain({ parts, condition: false }, as)),
    out: { ...c, name: alias, encrypted: false },
  }
}

/** `orderBy(sql\`…\`, dir)`: an expression over a column, mostly plaintext (encrypted: refused). */
export function rawOrderBy(g: Gen, scope: readonly Relation[], r: Relation, c: ScopeColumn): Call {
  g.feature('raw sql')
  g.feature('raw order by')
  g.use(c)
  const parts = trailingComment(g, expression(g, scope, r, c), 25)
  return call('orderBy', chainArg(rawChain({ parts, condition: false })), lit(g.pick(['asc', 'desc'])))
}

/**
 * `orderBy(sql\`${sql.ref('c0')}\`, dir)` or `orderBy(sql\`c0\`, dir)`: an output name of the
 * select list, which may be an alias of an encrypted column (then it must be refused, as
 * `orderBy('c0')` is: sorting by a ciphertext is no order of the plaintexts).
 *
 * Open finding (docs/fuzzing.md, "Findings of the raw SQL generator"): the plugin refuses the
 * `sql.ref` form but sends the text form, `order by c0`, sorting by the ciphertext. The text form
 * is generated for plaintext outputs only, until the plugin refuses it.
 */
export function rawOrderByOutput(g: Gen, o: ScopeColumn): Call {
  g.feature('raw sql')
  g.feature('raw order by')
  const name = o.name
  const part: RawPart = g.chance(50) || o.encrypted ? { ref: name } : { text: name }
  // Raw text naming an encrypted column's name (a plaintext output aliased `email`) is refused by
  // the raw text check (src/plugin/raw-operands.ts) whatever it stands for; so is such a name
  // through sql.ref where a relation in scope has that encrypted column, though ORDER BY sorts by
  // the output (open finding, docs/fuzzing.md: orderBy('email') runs, this is refused).
  if (ENCRYPTED_NAMES.has(name)) g.touches = true
  return call(
    'orderBy',
    chainArg(rawChain({ parts: [part], condition: false })),
    lit(g.pick(['asc', 'desc'])),
  )
}

/**
 * `modifyEnd(sql\`…\`)`: a row lock (`for update`, …), or on the statement's own select (`top`)
 * also only a comment, or a lock ending in one. A derived table or CTE body gets no comment: the
 * plugin sends `modifyEnd` raw SQL as written, with no line break after a trailing comment, so it
 * swallows the `) as d1` after it and the database rejects the statement, as it does without the
 * plugin (docs/fuzzing.md, "Findings of the raw SQL generator").
 */
export function rawModifyEnd(g: Gen, top: boolean): Call {
  g.feature('raw sql')
  g.feature('raw modifyEnd')
  const locks =
    g.family === 'postgres'
      ? ['for update', 'for share', 'for no key update']
      : ['for update', 'lock in share mode']
  if (top && g.chance(30))
    return call('modifyEnd', chainArg(rawChain({ parts: [{ comment: commentText(g) }], condition: false })))
  const parts: RawPart[] = [{ text: g.pick(locks) }]
  return call(
    'modifyEnd',
    chainArg(rawChain({ parts: top ? trailingComment(g, parts, 25) : parts, condition: false })),
  )
}

/**
 * A raw value for column `c` of an inserted row: `sql\`${v}\`` (for an encrypted column the
 * plugin reads it as the value itself and encrypts it), `sql.lit`, `lower(…)`, `v + 0`, sometimes
 * ending in a comment (for an encrypted column no longer the value alone: refused). A context
 * column written as raw SQL counts as touching encrypted data (the row's ciphertexts are bound to
 * its value, which the plugin must read).
 */
export function rawInsertValue(g: Gen, c: ScopeColumn): Arg | undefined {
  const v = valueFor(g, c)
  if (!('lit' in v) || (typeof v.lit !== 'string' && typeof v.lit !== 'number')) return undefined
  g.feature('raw sql')
  g.feature('raw insert value')
  if (c.name === 'tenant_id') g.touches = true
  if (c.encrypted)
    return chainArg(rawChain({ parts: trailingComment(g, [{ param: v.lit }], 10), condition: false }))
  const roll = g.int(0, 99)
  let parts: RawPart[]
  if (roll < 40) parts = [valuePart(g, c)]
  else if (c.kind === 'int') parts = [valuePart(g, c), { text: ' + 0' }]
  else parts = [{ text: 'lower(' }, valuePart(g, c), { text: ')' }]
  return chainArg(rawChain({ parts: trailingComment(g, parts), condition: false }))
}

/** The columns of the raw relation of constants: plaintext values, one column named like an encrypted one. */
const CONSTANTS: readonly [string, TableName, string][] = [
  ['id', 'users', 'id'],
  ['user_id', 'orders', 'user_id'],
  ['label', 'tags', 'label'],
  // Named like users.email / orders.email, holding plaintext text (tags.label's pool).
  ['email', 'tags', 'label'],
]

const CONSTANT_ROWS =
  "select 1 as id, 1 as user_id, 'alpha' as label, 'beta' as email union all select 2, 4, 'beta', 'zeta'"

/**
 * A FROM or JOIN item written as raw SQL, aliased `a`:
 * - `sql\`${sql.table('{tags}')}\``: raw SQL that is only a table name, which the plugin reads as
 *   that table (encrypted columns and all);
 * - `sql\`(select 1 as id, … union all …)\``: a relation of constants the plugin sees but cannot
 *   look into; its `email` column is named like an encrypted column and holds plaintext. A value
 *   compared with it counts as touching encrypted data (the plugin may refuse a qualified column
 *   named like an encrypted one that it cannot follow, src/plugin/unseen-references.ts);
 * - `sql\`(select id, user_id from ${sql.table('{tags}')})\``: raw SQL reading an encrypted
 *   table, which the plugin must refuse (it could neither rewrite conditions on it nor decrypt).
 */
export function rawRelation(g: Gen, a: string): { arg: Arg; rel: Relation } {
  g.feature('raw sql')
  g.feature('raw from')
  const roll = g.int(0, 99)
  const as = call('as', lit(a))
  if (roll < 45) {
    const table = g.pick(TABLE_NAMES)
    const raw = rawChain({ parts: [{ table: `{${table}}` }], condition: false }, as)
    return { arg: chainArg(raw), rel: { q: a, cols: tableColumns(table), keyed: true } }
  }
  if (roll < 85) {
    const cols: ScopeColumn[] = CONSTANTS.map(([n, t, c]) => {
      const col = column(t, c)
      return {
        name: n,
        kind: col.kind,
        encrypted: false,
        origin: { table: t, column: col },
        ...(n === 'email' ? { lookalike: true as const } : {}),
      }
    })
    const raw = rawChain(
      { parts: trailingComment(g, [{ text: `(${CONSTANT_ROWS})` }]), condition: false },
      as,
    )
    return { arg: chainArg(raw), rel: { q: a, cols, keyed: true } }
  }
  g.touches = true
  const table = g.pick(TABLE_NAMES)
  const cols = tableColumns(table).filter((c) => c.name === 'id' || c.name === 'user_id')
  const parts: RawPart[] = [
    { text: '(select id' },
    { text: cols.length > 1 ? ', user_id from ' : ' from ' },
    { table: `{${table}}` },
    { text: ')' },
  ]
  return { arg: chainArg(rawChain({ parts, condition: false }, as)), rel: { q: a, cols, keyed: true } }
}
