import type { ColumnUpdateNode, InsertQueryNode, OperationNode, ReferenceNode, UpdateQueryNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, IndexInfo, TableInfo } from '../schema/schema.js'
import { whereNode } from './analyze-conditions.js'
import type { Analyzer } from './analyzer.js'
import { exact, exposedName, isValuesCall } from './column-rules.js'
import { conflictTarget } from './conflict-target.js'
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
  if (node.into !== undefined && relation === undefined) a.refuseRawTable(node.into)
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
    if (oc.columns && table !== undefined) ocPatch.columns = conflictTarget(a, oc.columns, table)
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
  // Index columns to add beside each annotated column (absent on the first pass only), and those
  // the statement already writes beside it (checked to hold that column's own index values).
  const added: Array<{ index: IndexInfo; from: number }> = []
  const paired: Array<{ index: IndexInfo; from: number; at: number }> = []
  for (const { info, at: from } of annotated) {
    for (const spec of info.spec.indexes) {
      const index = table.indexColumn(spec.name)!
      const at = columns.indexOf(index.physical)
      if (at === -1) added.push({ index, from })
      else paired.push({ index, from, at })
    }
  }
  if (node.values?.kind === 'ValuesNode') {
    const values = node.values as unknown as { values: ReadonlyArray<OperationNode> }
    patch.values = rebuild(node.values, {
      values: values.values.map((row) => insertRow(a, row, sources, { added, paired }, scope)),
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
  indexes: {
    /** Index columns the plugin adds, each computed from the column at `from`. */
    readonly added: ReadonlyArray<{ index: IndexInfo; from: number }>
    /** Index columns the statement writes at `at` beside their column at `from`. */
    readonly paired: ReadonlyArray<{ index: IndexInfo; from: number; at: number }>
  },
  scope: Scope,
): OperationNode {
  const { added, paired } = indexes
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
      // Beside its column, checked below against the column's value; on its own, here.
      if (paired.length === 0 || !paired.some((p) => p.at === i))
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
  for (const { index, from, at } of paired) {
    const column = primitive ? items[from] : nodeValue(items[from] as OperationNode)
    const written = primitive ? items[at] : nodeValue(items[at] as OperationNode)
    const matches = isDeferred(column)
      ? isDeferred(written) &&
        written.kind === 'index' &&
        written.index === index &&
        written.reveal() === column.reveal()
      : column === DEFAULT
        ? written === DEFAULT || written === null || written === undefined
        : (column === null || column === undefined) && (written === null || written === undefined)
    if (!matches) throw mismatchedIndex(index)
    if (isDeferred(written)) a.note(written)
  }
  for (const { index, from } of added) {
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
  if (node.where)
    patch.where = whereNode(a, node.where, scope, { pending: undefined, positive: true, place: 'update' })
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

/** How one SET item writes an encrypted column, and so what each of its blind indexes must get. */
interface ColumnWrite {
  /** The SET item to send for the column. */
  readonly item: ColumnUpdateNode
  /** The index value the plugin writes beside it. */
  readonly index: (i: IndexInfo) => OperationNode
  /** Whether a SET item already in the statement writes exactly that index value. */
  readonly matches: (i: IndexInfo, value: OperationNode) => boolean
}

/**
 * SET items of UPDATE, ON CONFLICT DO UPDATE and ON DUPLICATE KEY UPDATE. `target` is the one
 * table being written, when there is one; multi-table updates resolve each (qualified) target.
 *
 * Each write of an encrypted column writes each of its blind indexes too, with the value that
 * matches it: added by the plugin, or, when the statement already sets that index (a tree the
 * plugin rewrote before), checked to be that value. An index set on its own may only take index
 * bytes or itself.
 */
export function updates(
  a: Analyzer,
  updates: ReadonlyArray<ColumnUpdateNode>,
  scope: Scope,
  target: Relation | undefined,
): ReadonlyArray<OperationNode> {
  const targets = updates.map((u) => setTarget(a, u.column, scope, target))
  const key = (relation: Relation, column: string) => `${relation.name}\0${column}`
  const position = new Map<string, number>()
  targets.forEach((t, i) => {
    if (t !== undefined) position.set(key(t.relation, columnName(updates[i]!.column)), i)
  })
  // The column write each index SET item belongs to, by the index item's position.
  const owners = new Map<number, { write: ColumnWrite; index: IndexInfo }>()
  const writes = updates.map((u, at) => {
    const hit = targets[at]
    if (hit?.info === undefined || hit.relation.table === undefined) return undefined
    const write = columnWrite(a, u, hit.info, scope)
    for (const spec of hit.info.spec.indexes) {
      const index = hit.relation.table.indexColumn(spec.name)!
      const pos = position.get(key(hit.relation, index.physical))
      if (pos !== undefined) owners.set(pos, { write, index })
    }
    return write
  })
  const out: OperationNode[] = []
  for (const [at, u] of updates.entries()) {
    const hit = targets[at]
    const write = writes[at]
    if (hit?.index !== undefined) {
      const owner = owners.get(at)
      if (owner === undefined) checkLoneIndexWrite(a, hit.index, u.value, hit.relation, scope)
      else if (!owner.write.matches(owner.index, u.value)) throw mismatchedIndex(hit.index)
      out.push(u)
      continue
    }
    if (write === undefined || hit?.info === undefined || hit.relation.table === undefined) {
      out.push(rebuild(u, { value: a.opaque(u.value, scope, 'update') }))
      continue
    }
    out.push(write.item)
    const table = hit.relation.table
    for (const spec of hit.info.spec.indexes) {
      const i = table.indexColumn(spec.name)!
      if (position.has(key(hit.relation, i.physical))) continue
      if (a.mode === 'verify' || isDeferred(nodeValue(u.value))) {
        // The plugin adds every index update it needs: without one, it was bypassed or undone.
        throw new QueryRefusedError(
          'PLAINTEXT_WRITE',
          `Update of ${table.physical}.${hit.info.physical} lacks its blind index ${i.physical}.`,
          {
            table: table.logical,
            column: hit.info.logical,
            hint: 'Do not remove the index updates the plugin adds.',
          },
        )
      }
      out.push(
        Object.freeze({
          kind: 'ColumnUpdateNode',
          column:
            u.column.kind === 'ReferenceNode'
              ? referenceNode(i.physical, (u.column as ReferenceNode).table)
              : columnNode(i.physical),
          value: write.index(i),
        }) as ColumnUpdateNode,
      )
    }
  }
  return Object.freeze(out)
}

/** What a SET item of an encrypted column writes, and the index values that go with it. */
function columnWrite(a: Analyzer, u: ColumnUpdateNode, info: ColumnInfo, scope: Scope): ColumnWrite {
  const value = nodeValue(u.value)
  if (value === null) {
    return { item: u, index: () => valueNode(null), matches: (_i, v) => nodeValue(v) === null }
  }
  if (isDeferred(value)) {
    // A tree the plugin rewrote before: its index items hold deferred index values of the same plaintext.
    a.note(value)
    return {
      item: u,
      index: () => valueNode(null), // never used: a missing index update is refused
      matches: (i, v) => {
        const d = nodeValue(v)
        return isDeferred(d) && d.kind === 'index' && d.index === i && d.reveal() === value.reveal()
      },
    }
  }
  if (value === EXPRESSION && isValuesCall(u.value, info, (n) => a.reference(n, scope))) {
    // MySQL/MariaDB `values(col)` in ON DUPLICATE KEY UPDATE: the proposed row's ciphertext.
    const call = (i: IndexInfo) =>
      rebuild(u.value, { arguments: Object.freeze([referenceNode(i.physical, undefined)]) })
    return {
      item: u,
      index: call,
      matches: (i, v) =>
        v.kind === 'FunctionNode' &&
        (v as unknown as { func: string }).func.toLowerCase() === 'values' &&
        columnName((v as unknown as { arguments: ReadonlyArray<OperationNode> }).arguments[0]!) ===
          i.physical,
    }
  }
  if (value === EXPRESSION) {
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
    return {
      item: u,
      index: (i) => {
        const exposed = exposedName(from, { kind: 'index', info: i })
        if (exposed === undefined) {
          throw refuse(info, 'expression', `${from.name} must pass ${i.physical} on beside ${info.physical}`)
        }
        return referenceNode(exposed, qualifier)
      },
      matches: (i, v) => {
        const r = a.reference(v, scope)
        return r?.relation === from && r.source.kind === 'index' && r.source.info === i
      },
    }
  }
  if (value === LITERAL || value === DEFAULT) throw refuse(info, value === LITERAL ? 'sql.lit' : 'expression')
  // A plaintext: encrypted here, its indexes computed from the same plaintext. No index the
  // statement already sets can be that value.
  return {
    item: rebuild(u, { value: valueNode(a.encrypt(info, value)) }),
    index: (i) => valueNode(a.note(new DeferredValue('index', info, value, i))),
    matches: () => false,
  }
}

/**
 * A SET item of a blind index column whose encrypted column the statement does not write: only
 * index bytes (`encryption.indexOf`), or the index itself (a no-op), can keep the two in step.
 */
function checkLoneIndexWrite(
  a: Analyzer,
  index: IndexInfo,
  node: OperationNode,
  relation: Relation,
  scope: Scope,
): void {
  const value = nodeValue(node)
  if (value instanceof Uint8Array) return
  if (value === EXPRESSION) {
    const r = a.reference(node, scope)
    if (r?.relation === relation && r.source.kind === 'index' && r.source.info === index) return
  }
  throw refuse(
    index.column,
    'write to blind index column',
    `${index.physical} is maintained by the plugin: write ${index.column.physical} instead, or index bytes from encryption.indexOf`,
  )
}

/** A blind index set in the same statement as its column, to another value than the column's own. */
function mismatchedIndex(index: IndexInfo): QueryRefusedError {
  return refuse(
    index.column,
    'write to blind index column',
    `${index.physical} is maintained by the plugin; it is written with ${index.column.physical}, from the same value`,
  )
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
