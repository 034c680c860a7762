import type { InsertQueryNode, OperationNode, ReferenceNode } from 'kysely'
import type { EncryptedSchema } from '../schema/schema.js'
import { type DeferredValue, isDeferred } from './deferred-value.js'
import { someChild } from './node-utils.js'
import { RELATION_HOLDERS, rawTableItem, tableReadIn } from './raw-text.js'
import { identifierName, tableName, unparsedAlias } from './table-names.js'

/**
 * Functions known to compute one row's value from that row alone. Any other function in the
 * select list of a query with a search-index condition may combine rows (an aggregate such as
 * `json_arrayagg` or `bit_or`, a window function) before the false positives are removed.
 */
const ROW_FUNCTIONS = new Set([
  'abs',
  'btrim',
  'ceil',
  'ceiling',
  'char_length',
  'character_length',
  'coalesce',
  'concat',
  'concat_ws',
  'date',
  'date_trunc',
  'floor',
  'greatest',
  'if',
  'ifnull',
  'least',
  'left',
  'length',
  'lower',
  'lpad',
  'ltrim',
  'mod',
  'now',
  'nullif',
  'octet_length',
  'position',
  'power',
  'replace',
  'reverse',
  'right',
  'round',
  'rpad',
  'rtrim',
  'sign',
  'sqrt',
  'strpos',
  'substr',
  'substring',
  'to_char',
  'trim',
  'trunc',
  'truncate',
  'upper',
])

export const DEFAULT = Symbol('default')

export const EXPRESSION = Symbol('expression')

export const LITERAL = Symbol('literal')

export const DEFAULT_NODE = Object.freeze({ kind: 'DefaultInsertValueNode' }) as OperationNode

/** The JS value a value node carries, or a marker for what it is instead. */
export function nodeValue(node: OperationNode): unknown {
  switch (node.kind) {
    case 'ValueNode': {
      const v = node as unknown as { value: unknown; immediate?: boolean }
      if (v.immediate && v.value !== null) return LITERAL
      return v.value
    }
    case 'DefaultInsertValueNode':
      return DEFAULT
    case 'RawNode': {
      // sql.lit(v) is a raw node around one immediate value.
      const raw = node as unknown as { sqlFragments: readonly string[]; parameters: readonly OperationNode[] }
      const only = raw.parameters.length === 1 ? raw.parameters[0] : undefined
      if (only?.kind === 'ValueNode' && raw.sqlFragments.every((f) => f === '')) return nodeValue(only)
      return EXPRESSION
    }
    default:
      return EXPRESSION
  }
}

/** The values of a right-hand side: one value, a value list, or undefined for an expression. */
export function listValues(node: OperationNode): unknown[] | undefined {
  if (node.kind === 'ValueNode') return [nodeValue(node)]
  if (node.kind === 'RawNode') {
    const v = nodeValue(node)
    return v === EXPRESSION ? undefined : [v]
  }
  if (node.kind === 'PrimitiveValueListNode') return [...(node as unknown as { values: unknown[] }).values]
  if (node.kind === 'ValueListNode')
    return (node as unknown as { values: OperationNode[] }).values.map(nodeValue)
  return undefined
}

/**
 * True when a select list or ORDER BY may combine several rows of the query into one value: an
 * aggregate or window function, a function not known to work row by row, or raw SQL (opaque).
 * In a subquery, an aggregate combines the subquery's own rows, unless an argument may name a
 * column of the query around it (qualified by a relation the subquery does not declare, or
 * unqualified): SQL then evaluates it over the outer query's rows.
 */
export function mayCombineRows(nodes: ReadonlyArray<OperationNode>): boolean {
  for (let i = 0; i < nodes.length; i++) if (combinesRows(nodes[i] as OperationNode, undefined)) return true
  return false
}

/** {@link mayCombineRows} of one node; `locals`: the relation names of the subqueries around it. */
function combinesRows(n: OperationNode, locals: ReadonlySet<string> | undefined): boolean {
  if (n.kind === 'SelectQueryNode') {
    const declared = new Set(locals)
    for (const name of declaredRelations(n)) declared.add(name)
    return someChild(n, combinesRows, declared)
  }
  if (combinesItself(n) && (locals === undefined || mayNameOuter(n, locals))) return true
  // Kysely gives a sort direction as raw SQL (`asc`, `desc`): a word, not an expression.
  if (
    n.kind === 'OrderByItemNode' &&
    isPlainDirection((n as unknown as { direction?: OperationNode }).direction)
  ) {
    const item = n as unknown as { orderBy: OperationNode; collation?: OperationNode }
    return (
      combinesRows(item.orderBy, locals) ||
      (item.collation !== undefined && combinesRows(item.collation, locals))
    )
  }
  // No closure per node: this walk runs on the select list of every root select.
  return someChild(n, combinesRows, locals)
}

/** A sort direction that is the raw word `asc` or `desc` (any case), with nothing else in it. */
function isPlainDirection(direction: OperationNode | undefined): boolean {
  if (direction?.kind !== 'RawNode') return false
  const raw = direction as unknown as { sqlFragments: readonly string[]; parameters: readonly unknown[] }
  return (
    raw.parameters.length === 0 &&
    raw.sqlFragments.length === 1 &&
    /^(asc|desc)$/i.test(raw.sqlFragments[0] ?? '')
  )
}

/** An aggregate, a window, raw SQL, or a function not known to work row by row. */
function combinesItself(n: OperationNode): boolean {
  return (
    n.kind === 'AggregateFunctionNode' ||
    n.kind === 'OverNode' ||
    n.kind === 'RawNode' ||
    (n.kind === 'FunctionNode' && !ROW_FUNCTIONS.has((n as unknown as { func: string }).func.toLowerCase()))
  )
}

/** Table names and aliases a query's own FROM and JOINs declare (not those of its subqueries). */
function declaredRelations(query: OperationNode): string[] {
  const q = query as unknown as {
    from?: { froms: ReadonlyArray<OperationNode> }
    joins?: ReadonlyArray<{ table: OperationNode }>
  }
  const names: string[] = []
  for (const item of [...(q.from?.froms ?? []), ...(q.joins ?? []).map((j) => j.table)]) {
    if (item.kind === 'AliasNode')
      names.push(identifierName((item as unknown as { alias: OperationNode }).alias))
    else if (item.kind === 'TableNode') names.push(tableName(item).name)
  }
  return names
}

/** True when a column reference inside `node` is unqualified, or qualified by a name not in `locals`. */
function mayNameOuter(node: OperationNode, locals: ReadonlySet<string>): boolean {
  const outer = (n: OperationNode): boolean => {
    if (n.kind === 'ColumnNode' || n.kind === 'RawNode') return true
    if (n.kind === 'ReferenceNode') {
      const ref = n as ReferenceNode
      return (
        ref.column.kind === 'ColumnNode' &&
        (ref.table === undefined || !locals.has(tableName(ref.table).name))
      )
    }
    return someChild(n, outer)
  }
  return outer(node)
}

export function labelOf(node: OperationNode, outer: string): string {
  switch (node.kind) {
    case 'FunctionNode':
      return `function ${(node as unknown as { func: string }).func}`
    case 'AggregateFunctionNode':
      return `aggregate ${(node as unknown as { func: string }).func}`
    case 'CastNode':
      return 'cast'
    case 'RawNode':
      return outer === 'expression' ? 'raw sql' : outer
    case 'OrderByItemNode':
      return 'order by'
    case 'JSONReferenceNode':
    case 'JSONPathNode':
      return 'json path'
    case 'CaseNode':
      return 'case'
    case 'BinaryOperationNode':
    case 'UnaryOperationNode':
      return (node as unknown as { operator: { operator?: string } }).operator.operator ?? outer
    default:
      return outer
  }
}

/** Every deferred value in a tree (value nodes and primitive value lists). */
export function collectDeferred(node: OperationNode, into: Set<DeferredValue>): void {
  const visit = (n: OperationNode): boolean => {
    if (n.kind === 'ValueNode') {
      const v = (n as unknown as { value: unknown }).value
      if (isDeferred(v)) into.add(v)
    } else if (n.kind === 'PrimitiveValueListNode') {
      for (const v of (n as unknown as { values: unknown[] }).values) if (isDeferred(v)) into.add(v)
    } else someChild(n, visit)
    return false
  }
  visit(node)
}

/** Maps a frozen list of nodes; returns the list itself when nothing changed. */
export function rebuildList<T extends OperationNode>(
  list: ReadonlyArray<T>,
  fn: (n: T) => OperationNode,
): ReadonlyArray<T> {
  // A copy only from the first changed element on: most lists come back unchanged.
  let next: T[] | undefined
  for (let i = 0; i < list.length; i++) {
    const n = list[i] as T
    const r = fn(n) as T
    if (next === undefined) {
      if (r === n) continue
      next = list.slice(0, i)
    }
    next.push(r)
  }
  return next === undefined ? list : Object.freeze(next)
}

/** A frozen copy of `node` with `patch` applied, or `node` itself when every patched value is identical. */
export function rebuild<T extends OperationNode>(node: T, patch: Record<string, unknown>): T {
  const record = node as unknown as Record<string, unknown>
  // for…in over the patch (an object literal): no array of its keys per call.
  for (const key in patch) {
    if (record[key] !== patch[key]) return Object.freeze({ ...node, ...patch }) as T
  }
  return node
}

export function columnName(node: OperationNode): string {
  if (node.kind === 'ColumnNode') return identifierName((node as unknown as { column: OperationNode }).column)
  if (node.kind === 'ReferenceNode') {
    const col = (node as ReferenceNode).column
    return col.kind === 'ColumnNode' ? identifierName(col.column) : '*'
  }
  return ''
}

export function identifier(name: string): OperationNode {
  return Object.freeze({ kind: 'IdentifierNode', name }) as OperationNode
}

export function columnNode(name: string) {
  return Object.freeze({
    kind: 'ColumnNode',
    column: identifier(name),
  }) as unknown as InsertQueryNode['columns'] extends ReadonlyArray<infer C> | undefined ? C : never
}

export function tableNode(name: string): ReferenceNode['table'] {
  return Object.freeze({
    kind: 'TableNode',
    table: Object.freeze({ kind: 'SchemableIdentifierNode', identifier: identifier(name) }),
  }) as ReferenceNode['table']
}

export function referenceNode(column: string, table: ReferenceNode['table']): ReferenceNode {
  // Two literals rather than a spread of a conditional object (one allocation, one shape each).
  if (table === undefined)
    return Object.freeze({ kind: 'ReferenceNode', column: columnNode(column) }) as ReferenceNode
  return Object.freeze({ kind: 'ReferenceNode', column: columnNode(column), table }) as ReferenceNode
}

export function valueNode(value: unknown): OperationNode {
  return Object.freeze({ kind: 'ValueNode', value }) as OperationNode
}

/**
 * True when the tree names a table of the schema (or holds a deferred value). A walk without
 * allocation: the fast path that lets queries on other tables pass untouched.
 */
export function mentionsSchemaTable(root: OperationNode, schema: EncryptedSchema): boolean {
  if (namesSchemaTableFirst(root, schema)) return true
  const stack: object[] = [root]
  while (stack.length > 0) {
    const node = stack.pop() as Record<string, unknown>
    if (isDeferred(node)) return true
    if (RELATION_HOLDERS.has(node.kind as string) && rawTableItem(node as unknown as OperationNode, schema))
      return true
    // Raw SQL in a query that reads an encrypted table itself: refused (raw-operands.ts). Not a
    // raw statement, which is sent as written.
    if (
      node.kind === 'RawNode' &&
      node !== (root as object) &&
      tableReadIn(node as unknown as OperationNode, schema) !== undefined
    )
      return true
    if (node.kind === 'TableNode') {
      const { schema: s, name } = tableName(node as unknown as OperationNode)
      // A name that differs only in case, or holds an alias Kysely left unparsed, goes to the
      // analyzer too, which refuses it.
      if (schema.table(name, s) !== undefined || schema.tableIgnoringCase(name, s) !== undefined) return true
      const unparsed = unparsedAlias(name)
      if (unparsed !== undefined && schema.tableIgnoringCase(unparsed) !== undefined) return true
      continue
    }
    for (const key in node) {
      const value = node[key]
      if (typeof value !== 'object' || value === null) continue
      if (Array.isArray(value)) {
        for (const item of value) {
          if (
            typeof item === 'object' &&
            item !== null &&
            typeof (item as { kind?: unknown }).kind === 'string'
          )
            stack.push(item)
        }
      } else if (typeof (value as { kind?: unknown }).kind === 'string') {
        stack.push(value)
      }
    }
  }
  return false
}

/**
 * The common case without a walk: the query's own table (FROM, INSERT INTO, UPDATE) is annotated.
 * Only ever answers "yes" early; "no" leaves the decision to the full walk.
 */
function namesSchemaTableFirst(root: OperationNode, schema: EncryptedSchema): boolean {
  const r = root as unknown as {
    from?: { froms?: readonly OperationNode[] }
    into?: OperationNode
    table?: OperationNode
  }
  const first =
    root.kind === 'InsertQueryNode' ? r.into : root.kind === 'UpdateQueryNode' ? r.table : r.from?.froms?.[0]
  if (first === undefined) return false
  const table = first.kind === 'AliasNode' ? (first as unknown as { node: OperationNode }).node : first
  if (table.kind !== 'TableNode') return false
  const { schema: s, name } = tableName(table)
  return schema.table(name, s) !== undefined
}
