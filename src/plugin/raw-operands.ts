import type { OperationNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import {
  CHAIN,
  declaresRelations,
  fragmentsOf,
  IDENT,
  nameOnly,
  operandText,
  PART,
  parametersOf,
  starText,
  unquote,
} from './raw-text.js'
import { encryptedIn, type Relation, Scope } from './scope.js'
import { rawWholeRowColumn, wholeRowError } from './whole-row.js'

/**
 * Raw SQL inside a query that reads an encrypted table: `where(sql\`email\`, '=', v)`,
 * `sql\`first_name in (${sql.join(list)})\``. The plugin cannot see which parameter meets which
 * column, so a plaintext would be sent (and match nothing). The fragment's SQL text is matched
 * word by word against the names in scope: one that names an encrypted column (bare, or
 * qualified by a relation that carries it) or a relation with encrypted columns as a whole-row
 * value is refused. Over-matching (a string literal's words are skipped, comments are not) only
 * refuses; raw SQL naming plain columns of the same tables passes.
 */

/** Words after which a name is a table being read or locked, not a whole-row value. */
const TABLE_CONTEXT = new Set(['from', 'join', 'of', 'update', 'into', 'table', 'using', 'as'])

/**
 * @throws QueryRefusedError `QUERY_REFUSED` when the raw SQL text names an encrypted column in
 *   scope, or a relation carrying one as a whole-row value
 */
export function checkRawText(outer: Scope, node: OperationNode): void {
  // Value parameters stand as `?`, names given as sql.id/sql.table as written; string literals
  // hold no names.
  const text = operandText(node).replace(/'(?:[^']|'')*'/g, "''")
  if (/^[\s?]*$/.test(text)) return
  // Comments blanked: `from /* note */ users` reads users.
  const scope = declaresRelations(node) ? readLevel(outer, starText(node)) : outer
  if (text.includes('*')) checkStars(scope, node)
  let previous = ''
  // Where the last name read as a table ended: a name right after it is its alias (or a keyword).
  let tableEnd = -1
  for (const match of text.matchAll(CHAIN)) {
    const parts = [...match[0].matchAll(PART)].map((p) => unquote(p[0]))
    const start = match.index ?? 0
    const after = text.slice(start + match[0].length)
    const word = previous
    previous = parts.length === 1 ? (parts[0] as string).toLowerCase() : ''
    const alias = tableEnd >= 0 && /^\s+$/.test(text.slice(tableEnd, start))
    tableEnd = TABLE_CONTEXT.has(word) ? start + match[0].length : -1
    if (/^\s*\(/.test(after)) continue // a function's name
    const last = parts[parts.length - 1] as string
    if (/^\s*\.\s*\*/.test(after)) continue // `q.*`: checkStars
    if (parts.length === 1) {
      const column = unqualifiedColumn(scope, last)
      if (column !== undefined) throw rawOperandError(column, last)
      if (TABLE_CONTEXT.has(word) || alias) continue
      const info = rawWholeRowColumn(scope, last)
      if (info !== undefined) throw wholeRowError(info, last, `${last} as a value in raw SQL`)
      continue
    }
    const qualifier = parts[parts.length - 2] as string
    // Ignoring case too: PostgreSQL folds an unquoted `R.email` to `r.email`.
    const relation = scope.relationNamed(qualifier) ?? relationIgnoringCase(scope, qualifier)
    const column =
      relation !== undefined
        ? columnOf(relation, last)
        : (scope.schema.table(qualifier) ?? scope.schema.tableIgnoringCase(qualifier))?.columnIgnoringCase(
            last,
          )
    if (column !== undefined) throw rawOperandError(column, `${qualifier}.${last}`)
  }
}

/** Words after which raw SQL names a table it reads itself (see {@link readLevel}). */
const READ_CONTEXT = new Set(['from', 'join', 'update', 'into', 'using', 'table'])

/** Words that may follow a table's name in raw SQL and are not its alias. */
const NOT_ALIAS = new Set(
  'where on using join inner left right full outer cross natural straight_join lateral group order limit offset fetch for union intersect except having window set values select returning partition tablesample force use ignore with and or into'.split(
    ' ',
  ),
)

/** `[as] alias` after a table's name. */
const ALIAS_AFTER = new RegExp(String.raw`^\s+(?:as\s+)?(${IDENT})`, 'iu')

/**
 * `scope` with a level under it for each encrypted table raw SQL with a FROM or JOIN reads itself
 * (`where('id', 'in', sql\`(select id from users u where u.email = ${v})\`)`), named by its alias
 * when the text gives one: the text's names are then read against its columns as against the
 * query's own relations. Without it, a search of that table in the text sent its plaintext (and a
 * table given by `sql.table()` was refused as a whole-row value, even in a FROM). One level per
 * table, so that two of one name do not clash.
 */
function readLevel(scope: Scope, text: string): Scope {
  let level = scope
  let previous = ''
  for (const match of text.matchAll(CHAIN)) {
    const word = previous
    const parts = [...match[0].matchAll(PART)].map((p) => unquote(p[0]))
    previous = parts.length === 1 ? (parts[0] as string).toLowerCase() : ''
    if (!READ_CONTEXT.has(word)) continue
    const name = parts[parts.length - 1] as string
    const schemaName = parts.length > 1 ? parts[parts.length - 2] : undefined
    const table = scope.schema.table(name, schemaName) ?? scope.schema.tableIgnoringCase(name, schemaName)
    if (table === undefined || table.columns.size === 0) continue
    const written = ALIAS_AFTER.exec(text.slice((match.index ?? 0) + match[0].length))?.[1]
    const alias = written === undefined ? undefined : unquote(written)
    level = new Scope(scope.schema, level)
    level.relations.push({
      name: alias !== undefined && !NOT_ALIAS.has(alias.toLowerCase()) ? alias : name,
      table,
      derived: undefined,
      base: { schema: schemaName, name },
    })
  }
  return level
}

/**
 * The parameters of raw SQL that are a table's name (`sql.table()`, `sql.raw('users')`, see
 * nameOnly) where a table is read or locked (`from ${sql.table('users')}`): not whole-row values.
 * {@link checkRawText} reads them in the text. A parameter given twice counts only if every place
 * is such.
 */
export function tablesRead(node: OperationNode): ReadonlySet<OperationNode> {
  const fragments = fragmentsOf(node)
  const read = new Set<OperationNode>()
  const valued = new Set<OperationNode>()
  parametersOf(node).forEach((p, i) => {
    if (nameOnly(p) === undefined) return
    const word = /([\p{L}_]+)\s*$/u.exec(fragments[i] ?? '')?.[1]?.toLowerCase()
    ;(word !== undefined && TABLE_CONTEXT.has(word) ? read : valued).add(p)
  })
  for (const p of valued) read.delete(p)
  return read
}

/**
 * `*` and `q.*` in raw SQL, outside literals and comments (`count(*)` is neither): every column of
 * this level's relations, or of `q`, undecrypted. `q` is matched ignoring case too (see
 * {@link rawWholeRowColumn}): PostgreSQL reads an unquoted `R.*` as `r.*`.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `whole row`)
 */
function checkStars(scope: Scope, node: OperationNode): void {
  const text = starText(node)
  // `select(sql\`*\`)`, `returning(sql\`*\`)`.
  if (/(?:^|,)\s*\*\s*(?:,|$)/.test(text)) {
    const carried = scope.relations.find((r) => !r.qualifiedOnly && encryptedIn(r) !== undefined)
    if (carried !== undefined)
      throw wholeRowError(encryptedIn(carried) as ColumnInfo, carried.name, '* in raw SQL')
  }
  for (const match of text.matchAll(QUALIFIED_STAR)) {
    const parts = [...(match[1] as string).matchAll(PART)].map((p) => unquote(p[0]))
    const last = parts[parts.length - 1] as string
    const info = rawWholeRowColumn(scope, last, parts.length > 1 ? parts[parts.length - 2] : undefined)
    if (info !== undefined) throw wholeRowError(info, last, `${last}.* in raw SQL`)
  }
}

/** `q.*`, `s.q.*`, `"q" . *`: a dotted chain of identifiers, then `.` and `*`. */
const QUALIFIED_STAR = new RegExp(String.raw`(${CHAIN.source})\s*\.\s*\*`, 'gu')

/** A relation in scope named `name` ignoring case, innermost level first. */
function relationIgnoringCase(scope: Scope, name: string): Relation | undefined {
  const folded = name.toLowerCase()
  for (let s: Scope | undefined = scope; s !== undefined; s = s.parent) {
    const relation = s.relations.find((r) => r.name.toLowerCase() === folded)
    if (relation !== undefined) return relation
  }
  return undefined
}

/** An encrypted column named `name` (ignoring case) of a relation reachable without a qualifier. */
function unqualifiedColumn(scope: Scope, name: string): ColumnInfo | undefined {
  for (let s: Scope | undefined = scope; s !== undefined; s = s.parent) {
    for (const relation of s.relations) {
      if (relation.qualifiedOnly) continue
      const hit = columnOf(relation, name)
      if (hit !== undefined) return hit
    }
  }
  return undefined
}

/** The encrypted column `relation` exposes as `name` (ignoring case), if any. */
function columnOf(relation: Relation, name: string): ColumnInfo | undefined {
  if (relation.table !== undefined)
    return relation.table.columnIgnoringCase(name) ?? cutOver(relation.table, name)
  const folded = name.toLowerCase()
  for (const [output, source] of relation.derived ?? []) {
    if (source.kind === 'column' && output.toLowerCase() === folded) return source.info
  }
  return undefined
}

function rawOperandError(info: ColumnInfo, written: string): QueryRefusedError {
  return new QueryRefusedError(
    'QUERY_REFUSED',
    `Refused raw sql naming encrypted column ${info.table.physical}.${info.physical} ("${written}"): the plugin cannot tell which parameter meets it, so a plaintext would be sent. Nothing was sent.`,
    {
      table: info.table.logical,
      column: info.logical,
      operator: 'raw sql',
      hint: `Use the query builder (where('${info.physical}', '=', value) or 'in'), or compare the blind index column yourself with bytes from encryption.indexOf('${info.table.logical}', '${info.logical}', value).`,
    },
  )
}

/**
 * A column stored under another name (`storedAs`) and read from its ciphertext only (from cut-over
 * on, or mapped for good) whose query name is `name` (ignoring case): raw SQL naming it reads or
 * searches the plaintext column, which no longer holds the value (or no longer exists).
 */
function cutOver(table: TableInfo, name: string): ColumnInfo | undefined {
  const folded = name.toLowerCase()
  for (const c of table.columns.values()) {
    const mapped = c.mapped
    if (mapped === undefined || mapped.name.toLowerCase() !== folded) continue
    if (mapped.phase !== 'dual-writing' && mapped.phase !== 'backfilled') return c
  }
  return undefined
}
