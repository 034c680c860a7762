import type { OperationNode, ReferenceNode, SelectionNode, WithNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import { camelCase } from '../schema/camel-case.js'
import type { ColumnInfo } from '../schema/schema.js'
import { someChild } from './node-utils.js'
import { columnName, columnNode, DEFAULT, identifier, nodeValue, referenceNode } from './nodes.js'
import { tableName } from './table-names.js'

/**
 * The pieces the migration pass (migrated-columns.ts) shares with its conditions
 * (migrated-conditions.ts) and writes (migrated-writes.ts): what a mapped column is, the one
 * table of a statement, and the nodes the pass builds.
 */

/** What the pass's functions need of it. */
export interface MappedPass {
  /**
   * Any part of a statement not rewritten as such: a mapped column under the encrypted column's
   * name (the analyzer refuses what it must); a nested query naming the table or column refused.
   */
  plain(node: OperationNode, rel: Relation): OperationNode
  /** The nodes the pass wrote that a second pass must leave alone (idempotence). */
  readonly produced: WeakSet<OperationNode>
}

export interface Mapping {
  /** The name queries use (the plaintext column while it exists). */
  readonly name: string
  /** The column holding the ciphertext. */
  readonly stored: string
  /** The view's encrypted column. */
  readonly info: ColumnInfo
  /** `both`: the plaintext column is still read and written; `encrypted`: only the ciphertext. */
  readonly form: 'both' | 'encrypted'
  /** `cut-over`: a write of the column sets its plaintext column to NULL. */
  readonly nullPlaintext: boolean
}

/** The statement's one (mapped) table: the names that qualify its columns, and its mappings. */
export interface Relation {
  readonly names: ReadonlySet<string>
  readonly mappings: readonly Mapping[]
}

export const EQUALITY = new Set(['=', '==', '!=', '<>', 'in', 'not in'])

export function isNullValue(node: OperationNode): boolean {
  return node.kind === 'ValueNode' && (node as unknown as { value: unknown }).value === null
}

/** A value, or a list of values (the right side of `in`). */
export function isValues(node: OperationNode): boolean {
  return node.kind === 'ValueNode' || node.kind === 'ValueListNode' || node.kind === 'PrimitiveValueListNode'
}

export function rowValue(row: { kind: string; values: readonly unknown[] }, at: number): unknown {
  const v = row.values[at]
  return row.kind === 'PrimitiveValueListNode'
    ? v
    : v === undefined
      ? undefined
      : nodeValue(v as OperationNode)
}

/** After cut-over the plaintext column takes NULL only: anything else is a plaintext sent for it. */
export function refuseWrittenPlaintext(m: Mapping, value: unknown): void {
  if (value === null || value === undefined || value === DEFAULT) return
  throw new QueryRefusedError(
    'PLAINTEXT_WRITE',
    `${m.info.table.physical}.${m.name} is cut over to ${m.stored}: its plaintext column takes only NULL; nothing was sent.`,
    {
      table: m.info.table.logical,
      column: m.info.logical,
      hint: `Write ${m.name} only (the plugin writes ${m.stored} and sets ${m.name} to NULL).`,
    },
  )
}

export function selection(node: OperationNode, alias: string): SelectionNode {
  return Object.freeze({
    kind: 'SelectionNode',
    selection: Object.freeze({ kind: 'AliasNode', node, alias: identifier(alias) }),
  }) as SelectionNode
}

export function and(left: OperationNode, right: OperationNode): OperationNode {
  return Object.freeze({ kind: 'AndNode', left, right }) as OperationNode
}

/**
 * The ORs a phase's search is rewritten into (`(email is not null and email = $1) or (email is
 * null and email_bidx in ($2))`): each branch tests the plaintext's NULL, so exactly one applies
 * to a row, and a tenant named in the enclosing conjunction still scopes the blind-index branch.
 */
export const PHASE_ORS = new WeakSet<OperationNode>()

export function or(left: OperationNode, right: OperationNode): OperationNode {
  return Object.freeze({ kind: 'OrNode', left, right }) as OperationNode
}

export function parens(node: OperationNode): OperationNode {
  return Object.freeze({ kind: 'ParensNode', node }) as OperationNode
}

export function nullTest(ref: OperationNode, op: 'is' | 'is not'): OperationNode {
  return Object.freeze({
    kind: 'BinaryOperationNode',
    leftOperand: ref,
    operator: Object.freeze({ kind: 'OperatorNode', operator: op }),
    // As kysely writes `is null`: the keyword, not a parameter (`is $1` is a syntax error).
    rightOperand: Object.freeze({ kind: 'ValueNode', value: null, immediate: true }),
  }) as OperationNode
}

/** The mapping a column reference of the statement's table names, if any. */
export function mappedIn(node: OperationNode, rel: Relation): Mapping | undefined {
  if (node.kind !== 'ColumnNode' && node.kind !== 'ReferenceNode') return undefined
  if (node.kind === 'ReferenceNode') {
    const ref = node as ReferenceNode
    if (ref.column.kind !== 'ColumnNode') return undefined
    if (ref.table !== undefined && !rel.names.has(tableName(ref.table).name)) return undefined
  }
  const name = columnName(node)
  const m = rel.mappings.find((m) => m.name === name)
  if (m === undefined) refuseCaseVariant(name, rel)
  return m
}

/**
 * A name that matches a column stored under another name only when case is ignored (as MySQL
 * matches column names) is refused: the database would take it for that column, which this pass
 * would not rewrite. @throws QueryRefusedError `AMBIGUOUS_COLUMN`
 */
export function refuseCaseVariant(name: string, rel: Relation): void {
  const lower = name.toLowerCase()
  const near = rel.mappings.find((m) => m.name !== name && m.name.toLowerCase() === lower)
  if (near === undefined) return
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `"${name}" differs only in case from column ${near.name}, which is stored encrypted in ${near.stored}.`,
    { table: near.info.table.logical, column: near.info.logical, hint: `Spell it exactly "${near.name}".` },
  )
}

/** `node` (a column or reference) under the encrypted column's name, with its qualifier. */
export function renamed(node: OperationNode, m: Mapping): OperationNode {
  if (node.kind === 'ColumnNode') return columnNode(m.stored)
  return referenceNode(m.stored, (node as ReferenceNode).table)
}

/**
 * A CTE of the statement's WITH named like its one table (or but for case: MySQL matches CTE
 * names so): FROM, or the written table, then names the CTE, where this pass would take it for
 * the table under migration and rewrite its column (`email = $1` into the phase's search, or
 * into `email_encrypted = $1`), leaving the value a plaintext the database receives. SQL never
 * writes a CTE: a write is as ambiguous (scope.ts refuses it too).
 * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
 */
export function refuseCteNamedLike(root: OperationNode, name: string, mappings: readonly Mapping[]): void {
  const ctes = (root as { with?: WithNode }).with?.expressions
  if (ctes === undefined) return
  const folded = name.toLowerCase()
  const cte = ctes.find((c) => tableName(c.name.table).name.toLowerCase() === folded)
  if (cte === undefined) return
  const m = mappings[0] as Mapping
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `The statement names ${name}, which is both a CTE of this query ("${tableName(cte.name.table).name}") and table ${m.info.table.physical}, whose column ${m.name} is under migration (stored as ${m.stored}).`,
    { table: m.info.table.logical, column: m.info.logical, hint: `Give the CTE another name than ${name}.` },
  )
}

/**
 * True when `found` holds for the name of a column or reference node of `root`; with `targets`
 * false, the targets of SET items and an INSERT's column list are not visited.
 */
function someReference(root: OperationNode, targets: boolean, found: (name: string) => boolean): boolean {
  const visit = (n: OperationNode): boolean => {
    if (targets) {
      if (n.kind === 'ColumnNode' || n.kind === 'ReferenceNode') return found(columnName(n))
      return someChild(n, visit)
    }
    if (n.kind === 'ColumnUpdateNode') return visit((n as unknown as { value: OperationNode }).value)
    if (n.kind === 'InsertQueryNode') {
      const { columns: _, ...rest } = n as unknown as Record<string, unknown>
      return someChild(rest as unknown as OperationNode, visit)
    }
    if (n.kind === 'ColumnNode' || n.kind === 'ReferenceNode') return found(columnName(n))
    return someChild(n, visit)
  }
  return visit(root)
}

/**
 * A column under migration spelt in camelCase (`contactEmail` for `contact_email`: CamelCasePlugin
 * placed after `encryption.plugin`): this pass matches the declared spelling only, so such a query
 * would search or read the plaintext column. Refused until the pass matches both spellings.
 * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
 */
export function refuseCamelSpelling(root: OperationNode, rel: Relation): void {
  const spelled = new Map<string, Mapping>()
  for (const m of rel.mappings) {
    for (const name of [m.name, m.stored]) if (camelCase(name) !== name) spelled.set(camelCase(name), m)
  }
  if (spelled.size === 0) return
  let hit: [string, Mapping] | undefined
  someReference(root, true, (name) => {
    const m = spelled.get(name)
    if (m !== undefined) hit = [name, m]
    return m !== undefined
  })
  if (hit === undefined) return
  const [name, m] = hit
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `"${name}" spells ${m.name} (stored encrypted in ${m.stored}, under migration) in camelCase, which the migration pass does not match.`,
    {
      table: m.info.table.logical,
      column: m.info.logical,
      hint: `Put CamelCasePlugin before encryption.plugin in the plugins list, or spell the column "${m.name}".`,
    },
  )
}

/**
 * The wrapper's check of a tree the plugin did not produce, once a column is read only from its
 * ciphertext (cut-over on): a reference to its plaintext column other than a write of it (checked
 * on its own) reads or searches what is no longer kept, with a plaintext value if it searches.
 * @throws QueryRefusedError `PLAINTEXT_SEARCH`
 */
export function refusePlaintextReference(root: OperationNode, rel: Relation): void {
  const cut = new Map(rel.mappings.filter((m) => m.form === 'encrypted').map((m) => [m.name, m]))
  if (cut.size === 0) return
  let hit: Mapping | undefined
  someReference(root, false, (name) => {
    hit = cut.get(name)
    return hit !== undefined
  })
  if (hit === undefined) return
  throw new QueryRefusedError(
    'PLAINTEXT_SEARCH',
    `${hit.info.table.physical}.${hit.name} is read from ${hit.stored} only (under migration), but this query, which did not come through encryption.plugin, names ${hit.name}; nothing was sent.`,
    {
      table: hit.info.table.logical,
      column: hit.info.logical,
      hint: 'The query bypassed the plugin (withoutPlugins(), another plugin, or a query compiled elsewhere): add encryption.plugin.',
    },
  )
}
