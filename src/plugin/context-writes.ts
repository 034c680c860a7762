import type { ColumnUpdateNode, OperationNode } from 'kysely'
import type { QueryRefusedError } from '../errors.js'
import { contextValue } from '../fields/context-values.js'
import { camelCase } from '../schema/camel-case.js'
import { contextMissing } from '../schema/row-context.js'
import type { TableInfo } from '../schema/schema.js'
import type { DeferredValue } from './deferred-value.js'
import { columnName, DEFAULT, EXPRESSION, LITERAL, nodeValue } from './nodes.js'
import { tableName } from './table-names.js'

/**
 * The row context of writes to a table with a `context` option: which values the ciphertexts of
 * an inserted or updated row are bound to. The plugin takes them from the statement itself (an
 * INSERT's values, an UPDATE's SET items and WHERE equalities), never from the database, so a
 * write it cannot bind exactly is refused (`CONTEXT_MISSING`) before anything is sent.
 */

/** True when a statement's column name is context column `name` (or its camelCase spelling). */
export function isColumn(written: string, name: string): boolean {
  return written === name || written === camelCase(name)
}

/** Why a written value cannot be a context value, or `undefined` with the canonical value. */
function canonical(value: unknown): { value: string } | { why: string } {
  if (value === DEFAULT)
    return { why: 'is DEFAULT: the database would generate it after the ciphertexts are made' }
  if (value === EXPRESSION || value === LITERAL)
    return { why: 'is an expression, not a plain value: its stored value is not known before the query runs' }
  const v = contextValue(value)
  return v === undefined ? { why: 'is NULL or neither a string nor an integer' } : { value: v }
}

/**
 * The canonical context values of one inserted row.
 *
 * @param table - The table inserted into (its `context` is non-empty).
 * @param columns - The INSERT's column names, in order.
 * @param items - The row's values (plain values of a primitive list, else value nodes).
 * @param primitive - Whether `items` are plain values.
 * @throws QueryRefusedError `CONTEXT_MISSING` when a context column is not in the column list, or
 *   its value is DEFAULT, NULL, an expression, or neither a string nor an integer.
 */
export function insertRowContext(
  table: TableInfo,
  columns: readonly string[],
  items: readonly unknown[],
  primitive: boolean,
): string[] {
  return table.context.map((name) => {
    const at = columns.findIndex((c) => isColumn(c, name))
    if (at === -1) throw contextMissing(table, name, 'is not in the statement', 'insert')
    const item = items[at]
    const found = canonical(
      primitive ? item : item === undefined ? undefined : nodeValue(item as OperationNode),
    )
    if ('why' in found) throw contextMissing(table, name, found.why, 'insert')
    return found.value
  })
}

/**
 * The canonical context values every row an UPDATE writes must have: each context column is set
 * by the statement to a plain value, or fixed by an equality with a plain value (`col = v`, or
 * `col in (v)`) in the WHERE's top-level conjunction (`a = 1 and (b = 2 and …)`), on the updated
 * relation. Under OR or NOT an equality does not fix anything.
 *
 * @param table - The table updated (its `context` is non-empty).
 * @param relation - The name the statement gives it (alias or table name).
 * @param where - The WHERE clause (`WhereNode`), if any.
 * @param sets - The statement's SET items of plain columns: column name → value node.
 * @returns The values, in the table's context order.
 * @throws QueryRefusedError `CONTEXT_MISSING` naming the first context column neither set nor fixed.
 */
export function updateRowContext(
  table: TableInfo,
  relation: string,
  where: OperationNode | undefined,
  sets: ReadonlyMap<string, OperationNode>,
): string[] {
  const fixed = new Map<string, unknown>()
  for (const conjunct of conjuncts(where)) {
    const eq = equality(conjunct, relation)
    if (eq !== undefined && !fixed.has(eq.column)) fixed.set(eq.column, eq.value)
  }
  return table.context.map((name) => {
    const set = [...sets].find(([c]) => isColumn(c, name))?.[1]
    const value = set !== undefined ? nodeValue(set) : [...fixed].find(([c]) => isColumn(c, name))?.[1]
    if (value === undefined && set === undefined) throw unfixed(table, name)
    const found = canonical(value)
    if ('why' in found) throw contextMissing(table, name, found.why, 'update')
    return found.value
  })
}

function unfixed(table: TableInfo, name: string): QueryRefusedError {
  const error = contextMissing(
    table,
    name,
    "is not fixed by the statement: an update that writes encrypted columns must name each row context column by equality in its WHERE (e.g. .where('tenant_id', '=', t).where('id', '=', id)), so every row it writes gets ciphertexts bound to that row",
    'update',
  )
  return error
}

/**
 * The conditions joined by top-level AND of a WHERE: through parentheses, or (`throughParens`
 * false) not, as in the chain guardUpdate writes.
 */
export function conjuncts(node: OperationNode | undefined, throughParens = true): OperationNode[] {
  if (node === undefined) return []
  const n = node as unknown as {
    kind: string
    where?: OperationNode
    node?: OperationNode
    left?: OperationNode
    right?: OperationNode
  }
  if (n.kind === 'WhereNode') return conjuncts(n.where, throughParens)
  if (n.kind === 'ParensNode' && throughParens) return conjuncts(n.node, throughParens)
  if (n.kind === 'AndNode') return [...conjuncts(n.left, throughParens), ...conjuncts(n.right, throughParens)]
  return [node]
}

/** `col = v` or `col in (v)` on `relation` (qualified by it, or unqualified). */
export function equality(
  node: OperationNode,
  relation: string,
): { column: string; value: unknown } | undefined {
  if (node.kind !== 'BinaryOperationNode') return undefined
  const b = node as unknown as {
    leftOperand: OperationNode
    operator: OperationNode
    rightOperand: OperationNode
  }
  const op = (b.operator as unknown as { operator?: string }).operator
  const left = b.leftOperand
  if (left.kind !== 'ColumnNode' && left.kind !== 'ReferenceNode') return undefined
  if (left.kind === 'ReferenceNode') {
    const ref = left as unknown as { table?: OperationNode; column: OperationNode }
    if (ref.column.kind !== 'ColumnNode') return undefined
    if (ref.table !== undefined && !sameTable(ref.table, relation)) return undefined
  }
  const right = b.rightOperand
  if (op === '=') return { column: columnName(left), value: nodeValue(right) }
  if (op === 'in') {
    const values =
      right.kind === 'PrimitiveValueListNode'
        ? (right as unknown as { values: readonly unknown[] }).values
        : right.kind === 'ValueListNode'
          ? (right as unknown as { values: readonly OperationNode[] }).values.map(nodeValue)
          : undefined
    if (values?.length === 1) return { column: columnName(left), value: values[0] }
  }
  return undefined
}

function sameTable(table: OperationNode, relation: string): boolean {
  return table.kind === 'TableNode' && tableName(table as never).name === relation
}

/**
 * A deferred ciphertext met in a tree the plugin rewrote before (or the verify pass): it must be
 * bound to the context of the row it is written in, or it would be written into another row.
 *
 * @param value - The deferred value found in the statement.
 * @param context - The row's context values (undefined: the table binds none).
 * @throws QueryRefusedError `CONTEXT_MISSING` when the two differ
 */
export function checkBoundTo(value: DeferredValue, context: readonly string[] | undefined): void {
  if (value.kind !== 'encrypt') return
  const bound = value.context
  const same =
    (bound?.length ?? 0) === (context?.length ?? 0) && (bound ?? []).every((v, i) => v === context?.[i])
  if (same) return
  const table = value.column.table
  throw contextMissing(
    table,
    table.context.join(', '),
    'differs from the row context the value was encrypted for (the statement was changed after the plugin rewrote it)',
    'write',
  )
}

/**
 * The SET items of an UPDATE that write plain (not encrypted, not blind-index) columns of
 * `table`, by column name: where {@link updateRowContext} finds context columns the statement sets.
 */
export function plainSets(
  items: ReadonlyArray<ColumnUpdateNode>,
  table: TableInfo,
): ReadonlyMap<string, OperationNode> {
  const out = new Map<string, OperationNode>()
  for (const u of items) {
    const name = columnName(u.column)
    if (name === '' || table.column(name) !== undefined || table.indexColumn(name) !== undefined) continue
    out.set(name, u.value)
  }
  return out
}
