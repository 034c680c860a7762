import type { ColumnUpdateNode, OperationNode, ReferenceNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import { type ColumnInfo, type IndexInfo, indexColumnNames } from '../schema/schema.js'
import type { AnalysisContext } from './analysis-context.js'
import { opaque, reference } from './analyze-expressions.js'
import { exact, exposedName, isValuesCall, refuseDottedName } from './column-rules.js'
import { checkBoundTo } from './context-writes.js'
import { DeferredValue, isDeferred } from './deferred-value.js'
import {
  columnName,
  columnNode,
  DEFAULT,
  EXPRESSION,
  LITERAL,
  nodeValue,
  rebuild,
  referenceNode,
  valueNode,
} from './nodes.js'
import { refuseRawRead } from './raw-operands.js'
import { refuse } from './refusal.js'
import type { Relation, Scope } from './scope.js'
import { tableName } from './table-names.js'
import { noteNamed, noteUnqualified } from './unlisted-columns.js'

/**
 * SET items, of UPDATE, ON CONFLICT DO UPDATE and ON DUPLICATE KEY UPDATE: plaintext written to
 * an encrypted column becomes a deferred ciphertext, and each of the column's blind indexes is
 * written beside it, from the same value.
 */

/** The relation and annotated column (or index column) a SET target names, if any. */
export function setTarget(
  a: AnalysisContext,
  column: OperationNode,
  scope: Scope,
  target: Relation | undefined,
): { relation: Relation; info?: ColumnInfo; index?: IndexInfo } | undefined {
  let relation: Relation | undefined
  let name: string
  if (column.kind === 'ColumnNode') {
    name = columnName(column)
    const written = target?.table ?? scope.relations.find((r) => r.table !== undefined)?.table
    if (written !== undefined) refuseDottedName(written, name)
    relation = target
    if (relation === undefined) {
      const hit = scope.resolve(name, undefined)
      // A multi-table update (MySQL): a plain column no annotation resolves may still be a
      // context column of one of the tables, which the context check must see.
      relation = hit?.relation ?? contextOwner(scope, name)
    }
  } else if (column.kind === 'ReferenceNode' && (column as ReferenceNode).column.kind === 'ColumnNode') {
    const ref = column as ReferenceNode
    name = columnName(ref)
    // Through the analyzer: a qualifier out of scope, or differing only in case, is refused.
    const hit = reference(a, ref, scope)
    if (hit !== undefined && hit.relation.table === undefined) {
      // A derived table's (or CTE's) output that carries an encrypted column: not a table to write.
      const info = hit.source.kind === 'column' ? hit.source.info : hit.source.info.column
      throw refuse(info, 'update', `${hit.relation.name} is a derived table, not a table to write`)
    }
    // A qualified plain column (`set('a.tenant_id', v)`, MySQL) belongs to the relation it names:
    // the context check must see it.
    relation =
      hit?.relation ??
      (ref.table === undefined
        ? (target ?? contextOwner(scope, name))
        : scope.relationNamed(tableName(ref.table).name))
  } else {
    // A raw SET target: refuse it on any table with encrypted columns, since we cannot tell.
    const annotated = scope.relations.find((r) => r.table !== undefined)
    const first = annotated?.table?.columns.values().next().value
    if (first !== undefined) throw refuse(first, 'raw sql', 'a SET target that is not a plain column name')
    // On a table with none, raw SQL that reads an encrypted table (helper-133).
    refuseRawRead(scope, column)
    return undefined
  }
  // A target spelt like an encrypted column but no column of its table (`set({ 'email ': v })`):
  // noted for the wrapper's catalog check; a qualified one was noted as a reference.
  const qualified = column.kind === 'ReferenceNode' && (column as ReferenceNode).table !== undefined
  const table = relation?.table
  if (relation === undefined || table === undefined) {
    if (!qualified && target === undefined) noteUnqualified(a, scope, name)
    return undefined
  }
  const info = exact(table, name)
  const index = table.indexColumn(name)
  if (!qualified && info === undefined && index === undefined) noteNamed(a, relation, name)
  return { relation, info, index }
}

/**
 * In a multi-table update (MySQL), the relation whose table binds its ciphertexts to a context
 * column named `name`, for an unqualified SET target no annotation resolves: the context check
 * must see a write of it. The first such relation, when several have one of that name.
 */
function contextOwner(scope: Scope, name: string): Relation | undefined {
  // Ignoring case (MySQL's rule for column names): `exact` then refuses a spelling in another case.
  const lower = name.toLowerCase()
  return scope.relations.find((r) => r.table?.context.some((c) => c.toLowerCase() === lower))
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
  a: AnalysisContext,
  updates: ReadonlyArray<ColumnUpdateNode>,
  scope: Scope,
  target: Relation | undefined,
  rowContext?: (relation: Relation) => readonly string[],
): ReadonlyArray<OperationNode> {
  const targets = updates.map((u) => setTarget(a, u.column, scope, target))
  checkContextColumns(updates, targets, rowContext !== undefined)
  // The context of a write into a table with a row context: only an UPDATE of one table knows it.
  const contextFor = (info: ColumnInfo, relation: Relation) => (): readonly string[] | undefined => {
    if (info.table.context.length === 0) return undefined
    if (rowContext === undefined) {
      throw refuse(
        info,
        'row context',
        `${info.table.physical} binds its ciphertexts to (${info.table.context.join(', ')}), which this statement does not fix`,
        'Write encrypted columns of this table with an insert, or an update of this one table whose WHERE fixes every context column by equality.',
      )
    }
    return rowContext(relation)
  }
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
    const write = columnWrite(a, u, hit.info, scope, contextFor(hit.info, hit.relation))
    for (const spec of hit.info.spec.indexes) {
      for (const name of indexColumnNames(spec)) {
        const index = hit.relation.table.indexColumn(name)!
        const pos = position.get(key(hit.relation, index.physical))
        if (pos !== undefined) owners.set(pos, { write, index })
      }
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
      out.push(rebuild(u, { value: opaque(a, u.value, scope, 'update') }))
      continue
    }
    out.push(write.item)
    const table = hit.relation.table
    for (const i of hit.info.spec.indexes.flatMap((spec) =>
      indexColumnNames(spec).map((n) => table.indexColumn(n)!),
    )) {
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
function columnWrite(
  a: AnalysisContext,
  u: ColumnUpdateNode,
  info: ColumnInfo,
  scope: Scope,
  context: () => readonly string[] | undefined,
): ColumnWrite {
  const value = nodeValue(u.value)
  if (value === null) {
    return { item: u, index: () => valueNode(null), matches: (_i, v) => nodeValue(v) === null }
  }
  if (value === EXPRESSION && info.table.context.length !== 0) {
    // A ciphertext copied from another row (excluded.col, t.col, values(col)) is bound to that row.
    throw refuse(
      info,
      'expression',
      `${info.table.physical} binds its ciphertexts to their row (${info.table.context.join(', ')}): a value copied from another row would not decrypt`,
      'Write a plain value (the plugin encrypts it for this row), or NULL.',
    )
  }
  if (isDeferred(value)) {
    checkBoundTo(value, context())
    // A tree the plugin rewrote before: its index items hold deferred index values of the same plaintext.
    a.note(value)
    return {
      item: u,
      index: () => valueNode(null), // never used: a missing index update is refused
      matches: (i, v) => {
        const d = nodeValue(v)
        return (
          isDeferred(d) &&
          d.kind === 'index' &&
          d.index === i &&
          d.keyName === value.keyName &&
          d.reveal() === value.reveal()
        )
      },
    }
  }
  if (value === EXPRESSION && isValuesCall(u.value, info, (n) => reference(a, n, scope))) {
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
    const ref = reference(a, u.value, scope)
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
        const r = reference(a, v, scope)
        return r?.relation === from && r.source.kind === 'index' && r.source.info === i
      },
    }
  }
  if (value === LITERAL || value === DEFAULT) throw refuse(info, value === LITERAL ? 'sql.lit' : 'expression')
  // A plaintext: encrypted here, its indexes computed from the same plaintext. No index the
  // statement already sets can be that value.
  const bound = context()
  return {
    item: rebuild(u, { value: valueNode(a.encrypt(info, value, bound)) }),
    index: (i) => valueNode(a.note(new DeferredValue('index', info, value, i, bound))),
    matches: () => false,
  }
}

/**
 * A SET item of a blind index column whose encrypted column the statement does not write: only
 * index bytes (`encryption.indexOf`), or the index itself (a no-op), can keep the two in step.
 */
function checkLoneIndexWrite(
  a: AnalysisContext,
  index: IndexInfo,
  node: OperationNode,
  relation: Relation,
  scope: Scope,
): void {
  const value = nodeValue(node)
  if (value instanceof Uint8Array) return
  if (value === EXPRESSION) {
    const r = reference(a, node, scope)
    if (r?.relation === relation && r.source.kind === 'index' && r.source.info === index) return
  }
  throw refuse(
    index.column,
    'write to blind index column',
    `${index.physical} is maintained by the plugin: write ${index.column.physical} instead, or index bytes from encryption.indexOf`,
  )
}

/** A blind index set in the same statement as its column, to another value than the column's own. */
export function mismatchedIndex(index: IndexInfo): QueryRefusedError {
  return refuse(
    index.column,
    'write to blind index column',
    `${index.physical} is maintained by the plugin; it is written with ${index.column.physical}, from the same value`,
  )
}

/**
 * SET items of a context column (`context` table option) move the row to another context, to
 * which its ciphertexts are not bound: allowed only in an UPDATE of one table that rewrites every
 * encrypted column of the table in the same statement (to a value or NULL).
 *
 * @throws QueryRefusedError `QUERY_REFUSED` naming the context column and a missing encrypted column
 */
function checkContextColumns(
  items: ReadonlyArray<ColumnUpdateNode>,
  targets: ReadonlyArray<{ relation: Relation; info?: ColumnInfo; index?: IndexInfo } | undefined>,
  rewritable: boolean,
): void {
  for (const [at, hit] of targets.entries()) {
    const table = hit?.relation.table
    if (hit === undefined || table === undefined || table.context.length === 0) continue
    if (hit.info !== undefined || hit.index !== undefined) continue
    const name = columnName(items[at]!.column)
    if (!table.context.includes(name)) continue
    const written = new Set(
      targets.flatMap((t) => (t?.relation === hit.relation && t.info !== undefined ? [t.info] : [])),
    )
    const missing = [...table.columns.values()].find((c) => !written.has(c))
    if (rewritable && missing === undefined) continue
    const first = missing ?? (table.columns.values().next().value as ColumnInfo)
    throw refuse(
      first,
      'row context',
      `the statement sets context column ${table.physical}.${name}, to which the row's ciphertexts are bound, without rewriting ${missing === undefined ? 'them in an update of this one table' : `encrypted column ${missing.physical}`}`,
      `Rewrite every encrypted column of ${table.physical} (${[...table.columns.keys()].join(', ')}) in the same update, to its value or NULL, with a WHERE that fixes the other context columns.`,
    )
  }
}
