import type { ColumnUpdateNode, InsertQueryNode, OperationNode, ReferenceNode, UpdateQueryNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, IndexInfo, TableInfo } from '../schema/schema.js'
import { whereNode } from './analyze-conditions.js'
import type { Analyzer } from './analyzer.js'
import { exact, exposedName, isValuesCall } from './column-rules.js'
import { DeferredValue, isDeferred } from './deferred-value.js'
import {
  columnName,
  columnNode,
  DEFAULT,
  DEFAULT_NODE,
  EXPRESSION,
  firstEncryptedColumn,
  LITERAL,
  nodeValue,
  rebuild,
  rebuildList,
  referenceNode,
  valueNode,
} from './nodes.js'
import { refuse } from './refusal.js'
import { identifierName, type Relation, type Scope, type Source } from './scope.js'

/**
 * The write side of the {@link Analyzer}: INSERT (values, ON CONFLICT, ON DUPLICATE KEY), UPDATE
 * (single and multi-table) and their SET items. Plaintext written to an encrypted column becomes
 * a deferred ciphertext, and each of the column's blind indexes is written beside it.
 */

export function insert(
  a: Analyzer,
  node: InsertQueryNode,
  scope: Scope,
  patch: Record<string, unknown>,
): void {
  const relation = node.into ? scope.addTable(node.into, true) : undefined
  const table = relation?.table
  if (table === undefined) {
    // No encrypted column to write: the values (and subqueries in them) are walked like any expression.
    if (node.values) patch.values = a.query(node.values, scope, 'opaque').node
  } else {
    insertValues(a, node, scope, table, patch)
  }
  if (node.onDuplicateKey && node.values && node.values.kind !== 'ValuesNode') {
    // MySQL's ON DUPLICATE KEY UPDATE of an INSERT … SELECT sees the SELECT's tables too, which
    // this scope does not model: refused when the SELECT reads an encrypted table.
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
    if (oc.updates) ocPatch.updates = updates(a, oc.updates, scope, relation)
    if (oc.updateWhere)
      ocPatch.updateWhere = whereNode(a, oc.updateWhere, scope, { pending: undefined, positive: true })
    if (oc.indexWhere)
      ocPatch.indexWhere = whereNode(a, oc.indexWhere, scope, { pending: undefined, positive: true })
    patch.onConflict = rebuild(oc, ocPatch)
  }
  if (node.onDuplicateKey) {
    patch.onDuplicateKey = rebuild(node.onDuplicateKey, {
      updates: updates(a, node.onDuplicateKey.updates, scope, relation),
    })
  }
}

/** The column list and values of an INSERT into a table with encrypted columns. */
function insertValues(
  a: Analyzer,
  node: InsertQueryNode,
  scope: Scope,
  table: TableInfo,
  patch: Record<string, unknown>,
): void {
  const columns = (node.columns ?? []).map((c) => identifierName(c.column))
  const sources = columns.map((c) => a.sourceIn(exact(table, c), table.indexColumn(c)))
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
  // Index columns to add beside each annotated column (absent on the first pass only).
  const present = new Set(columns)
  const added: Array<{ index: IndexInfo; from: number }> = []
  for (const { info, at } of annotated) {
    for (const spec of info.spec.indexes) {
      const index = table.indexColumn(spec.name)!
      if (!present.has(index.physical)) added.push({ index, from: at })
    }
  }
  if (node.values?.kind === 'ValuesNode') {
    const values = node.values as unknown as { values: ReadonlyArray<OperationNode> }
    patch.values = rebuild(node.values, {
      values: values.values.map((row) => insertRow(a, row, sources, added, scope)),
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
  a: Analyzer,
  row: OperationNode,
  sources: ReadonlyArray<Source | undefined>,
  added: ReadonlyArray<{ index: IndexInfo; from: number }>,
  scope: Scope,
): OperationNode {
  const primitive = row.kind === 'PrimitiveValueListNode'
  const items = [...(row as unknown as { values: ReadonlyArray<unknown> }).values]
  // The plaintexts encrypted in this row, by position: only an added index column reads them.
  const plaintexts: unknown[] | undefined = added.length > 0 ? [] : undefined
  let changed = false
  for (let i = 0; i < sources.length; i++) {
    const source = sources[i]
    const item = items[i]
    if (source === undefined) {
      // A plain column's value. A node may hold a subquery whose conditions need rewriting (a
      // primitive row holds plain values only).
      if (!primitive && item !== undefined) {
        const walked = a.opaque(item as OperationNode, scope, 'expression')
        if (walked !== item) {
          items[i] = walked
          changed = true
        }
      }
      continue
    }
    const value = primitive ? item : nodeValue(item as OperationNode)
    if (source.kind === 'index') {
      checkIndexWrite(a, source.info, item, primitive)
      continue
    }
    if (isDeferred(value)) {
      a.note(value)
      continue
    }
    if (value === DEFAULT || value === null || value === undefined) continue
    if (value === EXPRESSION) throw refuse(source.info, 'expression', 'only plain values can be written')
    if (value === LITERAL) throw refuse(source.info, 'sql.lit')
    const deferred = a.encrypt(source.info, value)
    if (plaintexts !== undefined) plaintexts[i] = value
    items[i] = primitive ? deferred : valueNode(deferred)
    changed = true
  }
  for (const { index, from } of added) {
    const item = items[from]
    const current = primitive ? item : nodeValue(item as OperationNode)
    const plaintext = plaintexts?.[from]
    let next: unknown
    if (plaintext !== undefined) next = a.note(new DeferredValue('index', index.column, plaintext, index))
    else if (current === DEFAULT) next = DEFAULT
    else next = null
    items.push(primitive ? next : next === DEFAULT ? DEFAULT_NODE : valueNode(next))
    changed = true
  }
  if (!changed) return row
  return Object.freeze({ ...row, values: Object.freeze(items) })
}

export function update(
  a: Analyzer,
  node: UpdateQueryNode,
  scope: Scope,
  parent: Scope | undefined,
  patch: Record<string, unknown>,
): void {
  if (node.table?.kind === 'ListNode') {
    // MySQL's multi-table UPDATE: `updateTable([a, b])`.
    const list = node.table as unknown as { items: ReadonlyArray<OperationNode> }
    patch.table = rebuild(node.table, { items: list.items.map((t) => a.fromItem(t, scope, parent, true)) })
  } else if (node.table) {
    patch.table = a.fromItem(node.table, scope, parent, true)
  }
  const single = node.table?.kind === 'ListNode' ? undefined : scope.relations[0]
  if (node.from) patch.from = a.froms(node.from, scope, parent)
  if (node.joins) patch.joins = rebuildList(node.joins, (j) => a.join(j, scope, parent))
  if (node.updates) patch.updates = updates(a, node.updates, scope, single)
  if (node.where) patch.where = whereNode(a, node.where, scope, { pending: undefined, positive: true })
  if (node.orderBy) patch.orderBy = a.opaque(node.orderBy, scope, 'order by')
}

/** The relation and annotated column (or index column) a SET target names, if any. */
export function setTarget(
  a: Analyzer,
  column: OperationNode,
  scope: Scope,
  target: Relation | undefined,
): { relation: Relation; info?: ColumnInfo; index?: IndexInfo } | undefined {
  let relation: Relation | undefined
  let name: string
  if (column.kind === 'ColumnNode') {
    name = columnName(column)
    relation = target
    if (relation === undefined) {
      const hit = scope.resolve(name, undefined)
      relation = hit?.relation
    }
  } else if (column.kind === 'ReferenceNode' && (column as ReferenceNode).column.kind === 'ColumnNode') {
    const ref = column as ReferenceNode
    name = columnName(ref)
    // Through the analyzer: a qualifier out of scope, or differing only in case, is refused.
    const hit = a.reference(ref, scope)
    relation = hit?.relation ?? (ref.table === undefined ? target : undefined)
  } else {
    // A raw SET target: refuse it on any table with encrypted columns, since we cannot tell.
    const annotated = scope.relations.find((r) => r.table !== undefined)
    const first = annotated?.table?.columns.values().next().value
    if (first !== undefined) throw refuse(first, 'raw sql', 'a SET target that is not a plain column name')
    return undefined
  }
  const table = relation?.table
  if (relation === undefined || table === undefined) return undefined
  return { relation, info: exact(table, name), index: table.indexColumn(name) }
}

/**
 * SET items of UPDATE, ON CONFLICT DO UPDATE and ON DUPLICATE KEY UPDATE. `target` is the one
 * table being written, when there is one; multi-table updates resolve each (qualified) target.
 */
export function updates(
  a: Analyzer,
  updates: ReadonlyArray<ColumnUpdateNode>,
  scope: Scope,
  target: Relation | undefined,
): ReadonlyArray<OperationNode> {
  const targets = updates.map((u) => setTarget(a, u.column, scope, target))
  const present = new Set(
    targets.flatMap((t, i) =>
      t === undefined ? [] : [`${t.relation.name}\0${columnName(updates[i]!.column)}`],
    ),
  )
  const out: OperationNode[] = []
  for (const [at, u] of updates.entries()) {
    const hit = targets[at]
    const table = hit?.relation.table
    const name = columnName(u.column)
    const info = hit?.info
    const index = hit?.index
    if (index !== undefined) {
      checkIndexWrite(a, index, u.value, false)
      out.push(u)
      continue
    }
    if (info === undefined || table === undefined || hit === undefined) {
      out.push(rebuild(u, { value: a.opaque(u.value, scope, 'update') }))
      continue
    }
    const qualifierOf = (n: OperationNode) =>
      n.kind === 'ReferenceNode' ? (n as ReferenceNode).table : undefined
    const value = nodeValue(u.value)
    let indexValue: (index: IndexInfo) => OperationNode
    if (value === null) {
      indexValue = () => valueNode(null)
      out.push(u)
    } else if (isDeferred(value)) {
      a.note(value)
      out.push(u)
      indexValue = () => valueNode(null) // only reached when the index update is missing: refused below
    } else if (value === EXPRESSION && isValuesCall(u.value, info, (n) => a.reference(n, scope))) {
      // MySQL/MariaDB `values(col)` in ON DUPLICATE KEY UPDATE: the proposed row's ciphertext.
      indexValue = (i) =>
        rebuild(u.value, { arguments: Object.freeze([referenceNode(i.physical, undefined)]) })
      out.push(u)
    } else if (value === EXPRESSION) {
      const ref = a.reference(u.value, scope)
      if (ref?.source.kind !== 'column' || ref.source.info !== info) {
        throw refuse(
          info,
          'expression',
          'only plain values, NULL, or the same column (e.g. excluded.col) can be written',
        )
      }
      // Copying the same logical column (excluded.email, or t.email) keeps AAD and keys valid;
      // its index comes from the same relation, under the name that relation gives it.
      const qualifier = (u.value as ReferenceNode).table
      const from = ref.relation
      indexValue = (i) => {
        const exposed = exposedName(from, { kind: 'index', info: i })
        if (exposed === undefined) {
          throw refuse(info, 'expression', `${from.name} must pass ${i.physical} on beside ${info.physical}`)
        }
        return referenceNode(exposed, qualifier)
      }
      out.push(u)
    } else if (value === LITERAL || value === DEFAULT) {
      throw refuse(info, value === LITERAL ? 'sql.lit' : 'expression')
    } else {
      out.push(rebuild(u, { value: valueNode(a.encrypt(info, value)) }))
      indexValue = (i) => valueNode(a.note(new DeferredValue('index', info, value, i)))
    }
    for (const spec of info.spec.indexes) {
      const i = table.indexColumn(spec.name)!
      if (present.has(`${hit.relation.name}\0${i.physical}`)) continue
      if (isDeferred(value)) {
        throw new QueryRefusedError(
          'PLAINTEXT_WRITE',
          `Update of ${table.physical}.${name} lacks its blind index ${i.physical}.`,
          {
            table: table.logical,
            column: info.logical,
            hint: 'Do not remove the index updates the plugin adds.',
          },
        )
      }
      out.push(
        Object.freeze({
          kind: 'ColumnUpdateNode',
          column:
            u.column.kind === 'ReferenceNode'
              ? referenceNode(i.physical, qualifierOf(u.column))
              : columnNode(i.physical),
          value: indexValue(i),
        }) as ColumnUpdateNode,
      )
    }
  }
  return Object.freeze(out)
}

export function checkIndexWrite(a: Analyzer, index: IndexInfo, item: unknown, primitive: boolean): void {
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
