import type { InsertQueryNode, OperationNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import { type IndexInfo, indexColumnNames, type TableInfo } from '../schema/schema.js'
import type { AnalysisContext, StatementAnalysis } from './analysis-context.js'
import { whereNode } from './analyze-conditions.js'
import { modifiers, opaque, statementExtras } from './analyze-expressions.js'
import { refuseRawTable, statementScope } from './analyze-from.js'
import { returning } from './analyze-selections.js'
import { mismatchedIndex, updates } from './analyze-set-items.js'
import { exact, refuseDottedName, sourceIn } from './column-rules.js'
import { conflictTarget } from './conflict-target.js'
import { checkBoundTo, insertRowContext } from './context-writes.js'
import { DeferredValue, isDeferred } from './deferred-value.js'
import {
  columnName,
  columnNode,
  DEFAULT,
  DEFAULT_NODE,
  EXPRESSION,
  LITERAL,
  nodeValue,
  rebuild,
  valueNode,
} from './nodes.js'
import { refuse } from './refusal.js'
import { firstEncryptedColumn } from './relation-names.js'
import type { Scope, Source } from './scope.js'
import { identifierName, unparsedAlias } from './table-names.js'
import { markUnmodelled, noteNamed } from './unlisted-columns.js'

/**
 * How an INSERT is analyzed: plaintext written to an encrypted column becomes a deferred
 * ciphertext and each of the column's blind indexes is written beside it (values, multi-row
 * values); `insert … select` may fill plain columns only; ON CONFLICT targets the unique blind
 * index, and its DO UPDATE and ON DUPLICATE KEY UPDATE are SET items (analyze-set-items.ts)
 * that may read the proposed row as `excluded`. RETURNING makes its outputs.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`, `AMBIGUOUS_COLUMN`, `PLAINTEXT_WRITE`
 * @throws CodecError `CODEC_INVALID_VALUE` for a value of the wrong type
 */
export const analyzeInsert: StatementAnalysis<InsertQueryNode> = (a, node, parent, role, ctes = parent) => {
  const { scope, patch } = statementScope(a, node, parent, ctes)
  const relation = node.into ? scope.addTable(node.into, true) : undefined
  if (node.into !== undefined && relation === undefined) refuseRawTable(a, node.into)
  if (relation !== undefined && relation.table === undefined) refuseUnparsedAlias(a, relation.name)
  const table = relation?.table
  if (table === undefined) {
    // No encrypted column to write: the values (and subqueries in them) are walked like any expression.
    if (node.values) patch.values = a.query(node.values, scope, 'opaque').node
  } else {
    insertValues(a, node, scope, table, patch)
    // A column spelt like an encrypted one that the table may not have (`values({ emial: v })`).
    for (const c of node.columns ?? []) noteNamed(a, relation, identifierName(c.column))
  }
  if (node.onDuplicateKey && node.values && node.values.kind !== 'ValuesNode') {
    // MySQL's ON DUPLICATE KEY UPDATE of an INSERT … SELECT sees the SELECT's tables too, which
    // this scope does not model: refused when the SELECT reads an encrypted table, and no
    // unqualified name there is taken for a misspelling (helper-126).
    markUnmodelled(scope)
    const read =
      firstEncryptedColumn(node.values, scope.schema) ??
      (node.with === undefined ? undefined : firstEncryptedColumn(node.with, scope.schema))
    if (read !== undefined) {
      throw refuse(read, 'on duplicate key update', 'of an insert … select that reads an encrypted table')
    }
  }
  // ON CONFLICT … DO UPDATE may read the proposed row as `excluded`.
  scope.relations.push({ name: 'excluded', table, derived: undefined, qualifiedOnly: true })
  if (node.onConflict) {
    const oc = node.onConflict
    const ocPatch: Record<string, unknown> = {}
    if (oc.columns && table !== undefined) ocPatch.columns = conflictTarget(a, oc.columns, table)
    // `oc.expression(…)`: a conflict target like any expression (helper-133: raw SQL there was
    // sent as written, its parameters too).
    if (oc.indexExpression) ocPatch.indexExpression = opaque(a, oc.indexExpression, scope, 'on conflict')
    if (oc.updates) ocPatch.updates = updates(a, oc.updates, scope, relation)
    if (oc.updateWhere)
      ocPatch.updateWhere = whereNode(a, oc.updateWhere, scope, {
        pending: undefined,
        positive: true,
        place: 'on conflict',
      })
    if (oc.indexWhere)
      ocPatch.indexWhere = whereNode(a, oc.indexWhere, scope, {
        pending: undefined,
        positive: true,
        place: 'on conflict',
      })
    patch.onConflict = rebuild(oc, ocPatch)
  }
  if (node.onDuplicateKey) {
    // MySQL's upsert takes every UNIQUE index as its conflict target, a unique blind index
    // included: refused during an index-key rotation, as ON CONFLICT on it (conflict-target.ts).
    // Not one with a rotation slot, whose complete UNIQUE column every write fills in each phase.
    if (
      table !== undefined &&
      [...table.indexColumns.values()].some(
        (i) => i.spec.kind === 'unique' && i.spec.rotationSlot === undefined,
      )
    )
      a.noteIndexComparison(table.logical)
    patch.onDuplicateKey = rebuild(node.onDuplicateKey, {
      updates: updates(a, node.onDuplicateKey.updates, scope, relation),
    })
  }
  modifiers(a, node, scope, patch)
  statementExtras(a, node, scope, patch)
  return returning(a, node, scope, role, patch)
}

/**
 * `insertInto('users as u')`: Kysely takes the whole string for the table's name (an INSERT has
 * no alias there), so the plugin would not see the encrypted table and the database would get
 * the values, unencrypted, for a table it then does not find.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`
 */
function refuseUnparsedAlias(a: AnalysisContext, name: string): void {
  const unparsed = unparsedAlias(name)
  const info =
    unparsed === undefined ? undefined : a.schema.tableIgnoringCase(unparsed)?.columns.values().next().value
  if (info !== undefined)
    throw refuse(info, 'insert', `"${name}" is one table name to Kysely: insertInto takes no alias`)
}

/** The column list and values of an INSERT into a table with encrypted columns. */
function insertValues(
  a: AnalysisContext,
  node: InsertQueryNode,
  scope: Scope,
  table: TableInfo,
  patch: Record<string, unknown>,
): void {
  const columns = (node.columns ?? []).map((c) => identifierName(c.column))
  for (const c of columns) refuseDottedName(table, c)
  const sources = columns.map((c) => sourceIn(exact(table, c), table.indexColumn(c)))
  const annotated = sources.flatMap((s, i) => (s?.kind === 'column' ? [{ info: s.info, at: i }] : []))
  if (node.values && node.values.kind !== 'ValuesNode') {
    // Without a column list, INSERT … SELECT fills every column, encrypted ones included; a
    // blind index column would get whatever the SELECT yields.
    const index = sources.find((x) => x?.kind === 'index')
    const first =
      annotated[0]?.info ??
      (index?.kind === 'index' ? index.info.column : undefined) ??
      (node.columns === undefined ? table.columns.values().next().value : undefined)
    if (first !== undefined) throw refuse(first, 'insert … select')
    // Into plain columns only: the SELECT is a query like any other (its conditions rewritten),
    // and it may not pass an encrypted column on.
    patch.values = a.query(node.values, scope, 'opaque').node
    return
  }
  // Index columns to add beside each annotated column (absent on the first pass only), and those
  // the statement already writes beside it (checked to hold that column's own index values).
  const added: Array<{ index: IndexInfo; from: number }> = []
  const paired: Array<{ index: IndexInfo; from: number; at: number }> = []
  for (const { info, at: from } of annotated) {
    for (const spec of info.spec.indexes) {
      // Both columns of an index with a rotation slot: the wrapper fills each or writes NULL.
      for (const name of indexColumnNames(spec)) {
        const index = table.indexColumn(name)!
        const at = columns.indexOf(index.physical)
        if (at === -1) added.push({ index, from })
        else paired.push({ index, from, at })
      }
    }
  }
  // A row context: every row's ciphertexts are bound to the context values it inserts.
  const rowContext =
    table.context.length === 0
      ? undefined
      : (items: readonly unknown[], primitive: boolean) => insertRowContext(table, columns, items, primitive)
  if (node.values?.kind === 'ValuesNode') {
    const values = node.values as unknown as { values: ReadonlyArray<OperationNode> }
    patch.values = rebuild(node.values, {
      values: values.values.map((row) => insertRow(a, row, sources, { added, paired }, scope, rowContext)),
    })
  }
  if (added.length > 0) {
    patch.columns = Object.freeze([
      ...(node.columns ?? []),
      ...added.map((x) => columnNode(x.index.physical)),
    ])
  }
}

export function insertRow(
  a: AnalysisContext,
  row: OperationNode,
  sources: ReadonlyArray<Source | undefined>,
  indexes: {
    /** Index columns the plugin adds, each computed from the column at `from`. */
    readonly added: ReadonlyArray<{ index: IndexInfo; from: number }>
    /** Index columns the statement writes at `at` beside their column at `from`. */
    readonly paired: ReadonlyArray<{ index: IndexInfo; from: number; at: number }>
  },
  scope: Scope,
  rowContext?: (items: readonly unknown[], primitive: boolean) => readonly string[],
): OperationNode {
  const { added, paired } = indexes
  const primitive = row.kind === 'PrimitiveValueListNode'
  const values = (row as unknown as { values: ReadonlyArray<unknown> }).values
  // Sized once, with room for the index columns added at the end: a copy grown by a `push`
  // is reallocated (V8 grows an array by half its length plus 16 slots).
  const items: unknown[] = new Array(values.length + added.length)
  for (let i = 0; i < values.length; i++) items[i] = values[i]
  // The row's context values, read (and checked) on its first ciphertext only (see
  // {@link contextOf}: not a closure per row, which under tsx also costs a `__name` call).
  let context: readonly string[] | undefined
  // The plaintexts encrypted in this row, by position: only an added index column reads them.
  const plaintexts: unknown[] | undefined = added.length > 0 ? new Array(sources.length) : undefined
  let changed = false
  for (let i = 0; i < sources.length; i++) {
    const source = sources[i]
    const item = items[i]
    if (source === undefined) {
      // A plain column's value. A node may hold a subquery whose conditions need rewriting (a
      // primitive row holds plain values only).
      if (!primitive && item !== undefined) {
        const walked = opaque(a, item as OperationNode, scope, 'expression')
        if (walked !== item) {
          items[i] = walked
          changed = true
        }
      }
      continue
    }
    const value = primitive ? item : nodeValue(item as OperationNode)
    if (source.kind === 'index') {
      // Beside its column, checked below against the column's value; on its own, here.
      if (paired.length === 0 || !paired.some((p) => p.at === i))
        checkIndexWrite(a, source.info, item, primitive)
      continue
    }
    if (isDeferred(value)) {
      context = contextOf(rowContext, items, primitive, context)
      checkBoundTo(value, context)
      a.note(value)
      continue
    }
    if (value === DEFAULT || value === null || value === undefined) continue
    if (value === EXPRESSION) throw refuse(source.info, 'expression', 'only plain values can be written')
    if (value === LITERAL) throw refuse(source.info, 'sql.lit')
    context = contextOf(rowContext, items, primitive, context)
    const deferred = a.encrypt(source.info, value, context)
    if (plaintexts !== undefined) plaintexts[i] = value
    items[i] = primitive ? deferred : valueNode(deferred)
    changed = true
  }
  for (const { index, from, at } of paired) {
    const column = primitive ? items[from] : nodeValue(items[from] as OperationNode)
    const written = primitive ? items[at] : nodeValue(items[at] as OperationNode)
    const matches = isDeferred(column)
      ? isDeferred(written) &&
        written.kind === 'index' &&
        written.index === index &&
        written.keyName === column.keyName &&
        written.reveal() === column.reveal()
      : column === DEFAULT
        ? written === DEFAULT || written === null || written === undefined
        : (column === null || column === undefined) && (written === null || written === undefined)
    if (!matches) throw mismatchedIndex(index)
    if (isDeferred(written)) a.note(written)
  }
  for (let k = 0; k < added.length; k++) {
    const { index, from } = added[k]!
    const item = items[from]
    const current = primitive ? item : nodeValue(item as OperationNode)
    const plaintext = plaintexts?.[from]
    if (plaintext === undefined && isDeferred(current)) {
      // A ciphertext the plugin made, without the index it adds beside it: bypassed or undone.
      throw new QueryRefusedError(
        'PLAINTEXT_WRITE',
        `Insert into ${index.column.table.physical}.${index.column.physical} lacks its blind index ${index.physical}.`,
        {
          table: index.column.table.logical,
          column: index.column.logical,
          hint: 'Do not remove the index columns the plugin adds.',
        },
      )
    }
    let next: unknown
    if (plaintext !== undefined) {
      context = contextOf(rowContext, items, primitive, context)
      next = a.note(new DeferredValue('index', index.column, plaintext, index, context))
    } else if (current === DEFAULT) next = DEFAULT
    else next = null
    items[values.length + k] = primitive ? next : next === DEFAULT ? DEFAULT_NODE : valueNode(next)
    changed = true
  }
  if (!changed) return row
  return Object.freeze({ ...row, values: Object.freeze(items) })
}

/**
 * A row's context values: `known` once read, else read from the row's `items` (and checked)
 * through `rowContext`; `undefined` for a table without a row context.
 */
function contextOf(
  rowContext: ((items: readonly unknown[], primitive: boolean) => readonly string[]) | undefined,
  items: readonly unknown[],
  primitive: boolean,
  known: readonly string[] | undefined,
): readonly string[] | undefined {
  if (known !== undefined || rowContext === undefined) return known
  return rowContext(items, primitive)
}

export function checkIndexWrite(
  a: AnalysisContext,
  index: IndexInfo,
  item: unknown,
  primitive: boolean,
): void {
  const value = primitive ? item : nodeValue(item as OperationNode)
  if (value === null || value === undefined || value === DEFAULT || value instanceof Uint8Array) return
  if (isDeferred(value)) {
    a.note(value)
    return
  }
  if (value === EXPRESSION && !primitive && isSameIndexRef(item as OperationNode, index)) return
  throw refuse(index.column, 'write to blind index column', `${index.physical} is maintained by the plugin`)
}

function isSameIndexRef(node: OperationNode, index: IndexInfo): boolean {
  return node.kind === 'ReferenceNode' && columnName(node) === index.physical
}
