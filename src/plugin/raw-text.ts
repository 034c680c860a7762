import type { OperationNode } from 'kysely'
import type { EncryptedSchema, TableInfo } from '../schema/schema.js'
import { identifierName, tableName } from './table-names.js'

/**
 * The words of raw SQL (`sql\`…\``) as the plugin reads them: what raw-operands.ts matches against
 * the names in scope, and which relation names raw SQL declares (analyzer.ts). Never a parser:
 * over-matching may only make the plugin refuse more.
 */

/** One identifier: "quoted" (`""` inside), `quoted`, or bare (any letter, digit, `_`, `$`). */
export const IDENT = String.raw`(?:"(?:[^"]|"")+"|\x60(?:[^\x60]|\x60\x60)+\x60|[\p{L}_][\p{L}\p{N}_$]*)`
/** A dotted chain of identifiers (`schema.table.column`). */
export const CHAIN = new RegExp(String.raw`${IDENT}(?:\s*\.\s*${IDENT})*`, 'gu')
/** One identifier of a chain. */
export const PART = new RegExp(IDENT, 'gu')

/** An identifier as the database reads it: quotes removed, doubled quotes made single. */
export function unquote(part: string): string {
  if (part.startsWith('"')) return part.slice(1, -1).replaceAll('""', '"')
  if (part.startsWith('`')) return part.slice(1, -1).replaceAll('``', '`')
  return part
}

/** The SQL fragments of a raw node. */
export function fragmentsOf(node: OperationNode): readonly string[] {
  return (node as unknown as { sqlFragments: readonly string[] }).sqlFragments
}

/**
 * Whether a raw node's own text has a FROM or JOIN (anywhere: in a literal or comment too): a
 * query spliced into it may then read the columns of relations only the text declares.
 */
export function declaresRelations(node: OperationNode): boolean {
  return /\b(?:from|join)\b/i.test(fragmentsOf(node).join(' '))
}

/**
 * Raw SQL with a line break after it when its text, raw SQL nested in it included, holds `--` or
 * `#` (a line comment on PostgreSQL or MySQL, or in a literal: the break is added either way, and
 * is harmless at the end of raw SQL). Kysely prints a statement on one line, so
 * `sql\`'v' -- note\`` as a SET value, a compared value or an alias commented out everything
 * after it: the WHERE, the row-context guards, and on PostgreSQL the unused parameters went
 * unnoticed. Only raw SQL whose end is not inside other raw SQL is ended (opaque's `insideRaw`):
 * a break appended to raw SQL spliced into a quoted string of the raw SQL around it
 * (`sql\`'${sql.raw('C#')}'\``) would be stored in the string. Raw SQL without such a mark is
 * sent unchanged.
 */
export function endLine(node: OperationNode): OperationNode {
  if (node.kind !== 'RawNode') return node
  const fragments = fragmentsOf(node)
  const last = fragments.length - 1
  if (last < 0 || fragments[last]!.endsWith('\n')) return node
  const text = fullText(node)
  if (!text.includes('--') && !text.includes('#')) return node
  const ended = [...fragments]
  ended[last] = `${ended[last]}\n`
  return Object.freeze({ ...node, sqlFragments: Object.freeze(ended) }) as OperationNode
}

/** An alias given as raw SQL (`.as(sql\`o -- note\`)`) ended as {@link endLine} ends raw SQL. */
export function endAliasLine(node: OperationNode): OperationNode {
  if (node.kind !== 'AliasNode') return node
  const alias = (node as unknown as { alias: OperationNode }).alias
  const ended = endLine(alias)
  return ended === alias ? node : (Object.freeze({ ...node, alias: ended }) as OperationNode)
}

/**
 * The text of raw SQL with nested raw SQL inlined and each other parameter as `other` prints it
 * (`?` by default).
 */
export function fullText(
  node: OperationNode,
  other: (parameter: OperationNode) => string = () => '?',
): string {
  const fragments = fragmentsOf(node)
  const parameters = parametersOf(node)
  let text = fragments[0] ?? ''
  for (let i = 0; i < parameters.length; i++) {
    const p = parameters[i]!
    text += (p.kind === 'RawNode' ? fullText(p, other) : other(p)) + (fragments[i + 1] ?? '')
  }
  return text
}

/** Literals, quoted identifiers and comments, as {@link rawText} reads them. */
const TOKENS =
  /"(?:[^"]|"")*"|`(?:[^`]|``)*`|\$([\p{L}\p{N}_]*)\$[\s\S]*?\$\1\$|'(?:[^'\\]|''|\\.)*'|--[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\//gu

/**
 * The text of a raw node with a `?` where each parameter stands, and string literals (`'…'`,
 * `$tag$…$tag$`) and comments (`-- …`, `/* … *\/`) blanked, read left to right (a quoted
 * identifier is kept whole, so a quote inside it starts nothing). For {@link rawWords}, whose
 * every word lets a reference through: blanking too much is the safe side (a backslash is taken
 * to escape a quote, as on MySQL).
 */
function rawText(node: OperationNode): string {
  return fragmentsOf(node)
    .join(' ? ')
    .replace(TOKENS, (m) => (m.startsWith('"') || m.startsWith('`') ? m : ' '))
}

/**
 * Adds to `into` every identifier (lower-cased) the raw SQL of `node` itself holds outside
 * literals and comments, and the names `sql.id(…)` parameters stand for: the names raw SQL may
 * declare a relation by (`… as agg` in Kysely's MySQL `jsonArrayFrom`, `audit a`,
 * `` sql`unnest(${list}) as ${sql.id('x')}(n)` ``). A raw alias (`.as(sql\`t(email)\`)`) is a
 * raw node too.
 */
export function rawWords(node: OperationNode, into: Set<string>): void {
  if (node.kind !== 'RawNode') return
  for (const m of rawText(node).matchAll(PART)) into.add(unquote(m[0]).toLowerCase())
  for (const p of parametersOf(node)) {
    const name = identifierOf(p)
    if (name !== undefined) into.add(name.toLowerCase())
  }
}

export function parametersOf(node: OperationNode): readonly OperationNode[] {
  return (node as unknown as { parameters: readonly OperationNode[] }).parameters
}

/** The name `sql.id(…)` (its last part) or a bare identifier stands for, if `node` is one. */
export function identifierOf(node: OperationNode): string | undefined {
  if (node.kind === 'IdentifierNode') return identifierName(node)
  if (node.kind !== 'RawNode') return undefined
  const parts = parametersOf(node)
  const last = parts[parts.length - 1]
  if (last === undefined || last.kind !== 'IdentifierNode') return undefined
  return fragmentsOf(node).every((f) => f === '' || f === '.') ? identifierName(last) : undefined
}

/**
 * The whole text of a raw node as sent: its fragments with each parameter's own text between
 * them (`sql.id`, `sql.ref`, `sql.table`, `sql.raw` and nested raw SQL by their names, any other
 * parameter as `?`). Nothing blanked.
 */
function sentText(node: OperationNode): string {
  return interleaved(node, namesOf)
}

/** A raw node's fragments with `paramText` of each parameter between them. */
function interleaved(node: OperationNode, paramText: (p: OperationNode) => string): string {
  const fragments = fragmentsOf(node)
  const parameters = parametersOf(node)
  let text = fragments[0] ?? ''
  for (let i = 0; i < parameters.length; i++) {
    text += `${paramText(parameters[i] as OperationNode)}${fragments[i + 1] ?? ''}`
  }
  return text
}

/** The text a parameter of raw SQL sends, as far as names go (a value is sent as `?`). */
function namesOf(p: OperationNode): string {
  switch (p.kind) {
    case 'IdentifierNode':
      return identifierName(p)
    case 'RawNode':
      return sentText(p)
    case 'TableNode': {
      const { schema, name } = tableName(p)
      return schema === undefined ? name : `${schema}.${name}`
    }
    case 'ColumnNode':
      return identifierName((p as unknown as { column: OperationNode }).column)
    case 'ReferenceNode': {
      const ref = p as unknown as { table?: OperationNode; column: OperationNode }
      return `${ref.table === undefined ? '' : `${namesOf(ref.table)}.`}${namesOf(ref.column)}`
    }
    default:
      return ' ? '
  }
}

/** An identifier quoted as PostgreSQL quotes it, for text the patterns above read back. */
function quoted(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/**
 * The text of a raw node as raw-operands.ts reads it: its fragments with `?` for each value
 * parameter, and the names `sql.id(…)`, `sql.table(…)` and a bare identifier put in their place,
 * quoted (`sql.id('users', 'email')` reads `"users"."email"`). Other nested raw SQL and
 * references stand as `?`: the walk reaches and checks them on their own.
 */
export function operandText(node: OperationNode): string {
  return interleaved(node, quotedName)
}

/**
 * {@link operandText} with string literals blanked to `''` and comments to a space, for the
 * `*` items raw-operands.ts looks for (`count(*)` is none; nor is a `*` in a literal or comment).
 * A quoted identifier is kept whole. Kept as text, since the engine runs or may run them:
 * MySQL's `/*! … *\/` and MariaDB's `/*M! … *\/`, and `--` not followed by a space (not a comment
 * on MySQL). Nested comments (PostgreSQL) end at the first `*\/`, which blanks less.
 */
export function starText(node: OperationNode): string {
  return operandText(node).replace(
    /"(?:[^"]|"")*"|`(?:[^`]|``)*`|'(?:[^']|'')*'|--(?=\s|$)[^\n]*|\/\*(?!M?!)[\s\S]*?\*\//gu,
    (m) => (m.startsWith('"') || m.startsWith('`') ? m : m.startsWith("'") ? "''" : ' '),
  )
}

/** A `*` item of a select list in raw SQL text: `*` or `q.*`, between commas or at an end. */
const STAR_ITEM = /(?:^|,|\.)\s*\*\s*(?:,|$)/

/**
 * True when the raw node `node`, or raw SQL nested in it, holds a `*` or `q.*` select-list item
 * outside literals and comments (see {@link starText}).
 */
export function hasStarItem(node: OperationNode): boolean {
  if (node.kind !== 'RawNode') return false
  return STAR_ITEM.test(starText(node)) || parametersOf(node).some(hasStarItem)
}

/** The quoted name a parameter of raw SQL stands for (see {@link operandText}), else `?`. */
function quotedName(p: OperationNode): string {
  if (p.kind === 'IdentifierNode') return quoted(identifierName(p))
  if (p.kind === 'TableNode') {
    const t = tableName(p)
    return t.schema === undefined ? quoted(t.name) : `${quoted(t.schema)}.${quoted(t.name)}`
  }
  if (p.kind === 'RawNode' && fragmentsOf(p).every((f) => f === '' || f === '.')) {
    const ids = parametersOf(p)
    if (ids.every((id) => id.kind === 'IdentifierNode'))
      return ids.map((id) => quoted(identifierName(id))).join('.')
  }
  return ' ? '
}

/** A run of identifier characters: the words {@link tableNamedIn} looks up. */
const WORD_SPLIT = /[^\p{L}\p{M}\p{N}_$]+/u

/**
 * An encrypted table whose name (exactly, after a schema name, or but for case) is a word of the
 * text raw node `node` sends (see {@link sentText}), if any. Generous on purpose: every word
 * counts, in literals and comments too, so raw SQL that reads an encrypted table as a FROM, JOIN,
 * CTE or written table reaches the analyzer (nodes.ts `mentionsSchemaTable`) and is refused
 * there (analyze-from.ts `refuseRawTable`); a raw FROM item that only mentions such a name is
 * refused too. Only called on raw nodes in those places.
 */
export function tableNamedIn(node: OperationNode, schema: EncryptedSchema): TableInfo | undefined {
  let previous: string | undefined
  for (const word of sentText(node).split(WORD_SPLIT)) {
    if (word === '') continue
    const table = schema.table(word, previous) ?? schema.tableIgnoringCase(word)
    if (table !== undefined) return table
    previous = word
  }
  return undefined
}

/** A word of SQL after which a table is named: what makes raw SQL read a table itself. */
const READS = /\b(?:from|join|update|into|using|table)\b/i

/**
 * The encrypted table raw SQL in a query reads itself, if any: its whole text as sent (nested raw
 * SQL inlined, literals and comments too) holds FROM, JOIN, UPDATE, INTO, USING or TABLE and
 * names a table of the schema ({@link tableNamedIn}). `where('id', 'in', sql\`(select id from
 * users where email = ${v})\`)`: the plugin cannot tell what such SQL does with the table's
 * columns, so the query is analyzed (nodes.ts `mentionsSchemaTable`) and refused
 * (raw-operands.ts `refuseRawRead`), however its own relations are named. Generous on purpose,
 * as {@link tableNamedIn} is.
 */
export function tableReadIn(node: OperationNode, schema: EncryptedSchema): TableInfo | undefined {
  if (!readsTables(node)) return undefined
  // A name used only as a qualifier (`users.tenant` in an upsert's `do update … where`) names a
  // relation of the statement, whose columns checkRawText reads; `public.users` still names users.
  const text = sentText(node)
  let previous: string | undefined
  for (const m of text.matchAll(WORD)) {
    const word = m[0]
    const end = (m.index ?? 0) + word.length
    QUALIFIES.lastIndex = end
    if (QUALIFIES.test(text)) {
      previous = word
      continue
    }
    const table = schema.table(word, previous) ?? schema.tableIgnoringCase(word)
    if (table !== undefined) return table
    previous = word
  }
  return undefined
}

const WORD = /[\p{L}\p{M}\p{N}_$]+/gu
/** What follows a qualifier: a dot, after a closing quote and spaces perhaps. */
const QUALIFIES = /["\x60]?\s*\./y

/** Whether raw SQL's whole text holds a word after which a table is named (see {@link tableReadIn}). */
export function readsTables(node: OperationNode): boolean {
  return READS.test(sentText(node))
}

/**
 * The words of raw SQL's whole text as sent (see {@link tableNamedIn}) that are no qualifier
 * (`cu` in `from cu`, not in `cu.id`): the names a relation may be read by.
 */
export function unqualifyingWords(node: OperationNode): string[] {
  // Literals and comments blanked (they name no relation), nested raw SQL inlined.
  const text = sentText(node).replace(TOKENS, (t) => (t.startsWith('"') || t.startsWith('`') ? t : ' '))
  return [...text.matchAll(UNQUALIFYING_WORD)].map((m) => m[0])
}

/** A word that is no qualifier (`cu.`) nor a function's name (`trim(`). */
const UNQUALIFYING_WORD =
  /(?<![\p{L}\p{M}\p{N}_$])[\p{L}\p{M}\p{N}_$]+(?![\p{L}\p{M}\p{N}_$]|["\x60]?\s*[.(])/gu

/** Nodes that hold FROM, JOIN, CTE or written-table items (see {@link rawTableItem}). */
export const RELATION_HOLDERS = new Set([
  'FromNode',
  'UsingNode',
  'JoinNode',
  'UpdateQueryNode',
  'CommonTableExpressionNode',
])

/**
 * True when one of the relation items `holder` holds is raw SQL (aliased or not) whose text names
 * an encrypted table (`selectFrom(sql\`users\`.as('u'))`, `with('c', () => sql\`select … from
 * users\`)`): the query goes to the analyzer, which refuses it (analyze-from.ts `refuseRawTable`).
 */
export function rawTableItem(holder: OperationNode, schema: EncryptedSchema): boolean {
  const h = holder as unknown as {
    froms?: readonly OperationNode[]
    tables?: readonly OperationNode[]
    table?: OperationNode
    expression?: OperationNode
  }
  const items =
    holder.kind === 'FromNode'
      ? h.froms
      : holder.kind === 'UsingNode'
        ? h.tables
        : holder.kind === 'CommonTableExpressionNode'
          ? [h.expression]
          : [h.table]
  for (const item of items ?? []) {
    const inner = item?.kind === 'AliasNode' ? (item as unknown as { node: OperationNode }).node : item
    if (inner?.kind === 'RawNode' && tableNamedIn(inner, schema) !== undefined) return true
  }
  return false
}

/**
 * Nodes that print their own parentheses around what they hold (raw SQL in them ends there), and
 * values, which hold the application's objects, not nodes (never walked: one may have a `kind`).
 */
const ENCLOSING = new Set([
  'ParensNode',
  'SelectQueryNode',
  'InsertQueryNode',
  'UpdateQueryNode',
  'DeleteQueryNode',
  'ValueNode',
  'PrimitiveValueListNode',
])

/**
 * Whether a condition holds raw SQL outside any parentheses of its own: a raw condition, a
 * comparison with a raw value (`where('id', '=', sql\`${v} or id <> 2\`)`), `exists` or
 * `between` over raw SQL, raw SQL in arithmetic. Its text may go on past the node: beside a
 * search, `a and id = v or id <> 2` is read as `(a and id = v) or id <> 2`, and the rows of the
 * OR failed the search's row check and were dropped, or an update wrote them (the fuzzer, seed
 * 20261213; helper-131). Such a condition goes in parentheses (analyze-conditions.ts, operand).
 * Parentheses where none were needed (a function's argument) change nothing.
 */
export function holdsRaw(node: OperationNode): boolean {
  if (node.kind === 'RawNode') return true
  if (ENCLOSING.has(node.kind)) return false
  for (const value of Object.values(node)) {
    if (Array.isArray(value)) {
      for (const item of value) if (isNode(item) && holdsRaw(item)) return true
    } else if (isNode(value) && holdsRaw(value)) return true
  }
  return false
}

function isNode(value: unknown): value is OperationNode {
  return typeof value === 'object' && value !== null && typeof (value as { kind?: unknown }).kind === 'string'
}
