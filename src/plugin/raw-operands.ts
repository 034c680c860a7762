import type { OperationNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import {
  CHAIN,
  IDENT,
  operandText,
  PART,
  readsTables,
  starText,
  tableReadIn,
  unqualifyingWords,
  unquote,
} from './raw-text.js'
import { encryptedIn, type Relation, type Scope } from './scope.js'
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
export function checkRawText(scope: Scope, node: OperationNode): void {
  // Value parameters stand as `?`, names given as sql.id/sql.table as written; string literals
  // hold no names.
  const text = operandText(node).replace(/'(?:[^']|'')*'/g, "''")
  if (/^[\s?]*$/.test(text)) return
  if (text.includes('*')) checkStars(scope, node)
  let previous = ''
  for (const match of text.matchAll(CHAIN)) {
    const parts = [...match[0].matchAll(PART)].map((p) => unquote(p[0]))
    const after = text.slice((match.index ?? 0) + match[0].length)
    const word = previous
    previous = parts.length === 1 ? (parts[0] as string).toLowerCase() : ''
    if (/^\s*\(/.test(after)) continue // a function's name
    const last = parts[parts.length - 1] as string
    if (/^\s*\.\s*\*/.test(after)) continue // `q.*`: checkStars
    if (parts.length === 1) {
      const column = unqualifiedColumn(scope, last)
      if (column !== undefined) throw rawOperandError(column, last)
      if (TABLE_CONTEXT.has(word)) continue
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

/**
 * Raw SQL in a query that reads an encrypted table itself (see raw-text.ts `tableReadIn`):
 * `where('id', 'in', sql\`(select id from users u where u.email = ${v})\`)`. Its names are not
 * the query's, so the plugin could neither rewrite a search of that table's columns nor decrypt
 * them, and a word-by-word reading of them (aliases, comments, quoting, nested raw SQL) would have
 * holes; a subquery written with the query builder is read and rewritten.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `raw sql`)
 */
export function refuseRawRead(scope: Scope, node: OperationNode): void {
  if (!readsTables(node)) return
  const info = tableReadIn(node, scope.schema)?.columns.values().next().value ?? cteRead(scope, node)
  if (info === undefined) return
  throw new QueryRefusedError(
    'QUERY_REFUSED',
    `Refused raw sql that reads encrypted table ${info.table.physical} itself: the plugin cannot tell what it does with the table's encrypted columns, so it could send a plaintext or return ciphertexts. Nothing was sent.`,
    {
      table: info.table.logical,
      column: info.logical,
      operator: 'raw sql',
      hint: `Write the subquery with the query builder (where('id', 'in', db.selectFrom('${info.table.logical}').select('id')…), eb.exists(…)): the plugin reads and rewrites it.`,
    },
  )
}

/**
 * An alias given as raw SQL that is more than a name (`select(sql\`1\`.as(sql\`one, (email =
 * ${v}) as m\`))`): raw SQL in the select list or FROM like any other (helper-133). A name
 * alone (`.as(sql\`y\`)`, `.as(sql.id('y'))`) is a name.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` (see {@link refuseRawRead}, {@link checkRawText})
 */
export function checkRawAlias(scope: Scope, alias: OperationNode): void {
  if (alias.kind !== 'RawNode' || ONE_NAME.test(operandText(alias))) return
  refuseRawRead(scope, alias)
  checkRawText(scope, alias)
}

const ONE_NAME = new RegExp(String.raw`^\s*${IDENT}\s*$`, 'u')

/**
 * An encrypted column a CTE of the query passes on, when raw SQL names the CTE
 * (`with('cu', () => db.selectFrom('users').select(['id', 'email']))` then
 * `sql\`(select id from cu where email = ${v})\``): the CTE stands for the table (helper-133).
 */
function cteRead(scope: Scope, node: OperationNode): ColumnInfo | undefined {
  // A qualifier (`cu.id`) reads a relation in scope, whose names checkRawText reads.
  for (const word of unqualifyingWords(node)) {
    const source = scope.cteSource(word)
    if (source !== undefined) return source.kind === 'column' ? source.info : source.info.column
  }
  return undefined
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
