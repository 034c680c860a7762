import type { ColumnUpdateNode, InsertQueryNode, OperationNode } from 'kysely'
import {
  type MappedPass,
  mappedIn,
  type Relation,
  refuseCaseVariant,
  refuseWrittenPlaintext,
  renamed,
  rowValue,
} from './migrated-nodes.js'
import { columnName, columnNode, nodeValue, rebuild, valueNode } from './nodes.js'

/**
 * The writes of a column stored under another name, in its phase's form (see migrated-columns.ts):
 * INSERT column lists and rows, SET items; and the check of a tree the plugin did not write.
 */

/** The column list and rows of an INSERT: each mapped column written in its phase's form. */
export function insertValues(
  pass: MappedPass,
  node: InsertQueryNode,
  rel: Relation,
): Record<string, unknown> {
  const columns = [...(node.columns ?? [])]
  const names = columns.map((c) => columnName(c))
  for (const name of names) refuseCaseVariant(name, rel)
  const values = node.values
  if (values === undefined) return {}
  if (values.kind !== 'ValuesNode') {
    // INSERT … SELECT: the analyzer refuses it into the encrypted column, named as such.
    return {
      columns: Object.freeze(columns.map((c) => pass.plain(c, rel))),
      values: pass.plain(values, rel),
    }
  }
  type Row = { kind: string; values: readonly unknown[] }
  let rows = (values as unknown as { values: readonly Row[] }).values.map((r) => ({
    ...r,
    values: [...r.values],
  }))
  for (const m of rel.mappings) {
    const at = names.indexOf(m.name)
    if (at === -1) continue
    if (names.includes(m.stored)) {
      // A tree this pass rewrote before (or the application writing both itself).
      if (m.nullPlaintext) for (const r of rows) refuseWrittenPlaintext(m, rowValue(r, at))
      continue
    }
    if (m.form === 'both') {
      columns.push(columnNode(m.stored))
      for (const r of rows) r.values.push(r.values[at])
      continue
    }
    columns[at] = columnNode(m.stored)
    if (m.nullPlaintext) {
      columns.push(columnNode(m.name))
      for (const r of rows) r.values.push(r.kind === 'PrimitiveValueListNode' ? null : valueNode(null))
    }
  }
  rows = rows.map((r) => ({
    ...r,
    values:
      r.kind === 'PrimitiveValueListNode'
        ? r.values
        : r.values.map((v) => pass.plain(v as OperationNode, rel)),
  }))
  return {
    columns: Object.freeze(columns),
    values: Object.freeze({
      ...values,
      values: Object.freeze(rows.map((r) => Object.freeze({ ...r, values: Object.freeze(r.values) }))),
    }),
  }
}

/** SET items: a mapped column written in its phase's form. */
export function setItems(
  pass: MappedPass,
  items: ReadonlyArray<ColumnUpdateNode>,
  rel: Relation,
): ReadonlyArray<ColumnUpdateNode> {
  const out: ColumnUpdateNode[] = []
  const written = new Set(items.map((u) => columnName(u.column)))
  for (const u of items) {
    const m = mappedIn(u.column, rel)
    if (m === undefined) {
      out.push(rebuild(u, { value: pass.plain(u.value, rel) }))
      continue
    }
    if (written.has(m.stored)) {
      if (m.nullPlaintext) refuseWrittenPlaintext(m, nodeValue(u.value))
      out.push(u)
      continue
    }
    const encrypted = Object.freeze({
      kind: 'ColumnUpdateNode',
      column: renamed(u.column, m),
      value: pass.plain(u.value, rel),
    }) as ColumnUpdateNode
    if (m.form === 'both') out.push(u, encrypted)
    else {
      out.push(encrypted)
      if (m.nullPlaintext) out.push(rebuild(u, { value: valueNode(null) }))
    }
  }
  return Object.freeze(out)
}

/** After cut-over, every value an INSERT writes to a plaintext column must be NULL. @throws QueryRefusedError `PLAINTEXT_WRITE` */
export function checkInsert(node: InsertQueryNode, rel: Relation): void {
  const names = (node.columns ?? []).map((c) => columnName(c))
  for (const name of names) refuseCaseVariant(name, rel)
  const values = node.values as unknown as {
    kind: string
    values: ReadonlyArray<{ kind: string; values: readonly unknown[] }>
  }
  for (const m of rel.mappings) {
    const at = names.indexOf(m.name)
    if (!m.nullPlaintext || at === -1 || values?.kind !== 'ValuesNode') continue
    for (const r of values.values) refuseWrittenPlaintext(m, rowValue(r, at))
  }
  if (node.onConflict?.updates) checkSets(node.onConflict.updates, rel)
  if (node.onDuplicateKey) checkSets(node.onDuplicateKey.updates, rel)
}

/** After cut-over, every value a SET item writes to a plaintext column must be NULL. @throws QueryRefusedError `PLAINTEXT_WRITE` */
export function checkSets(items: ReadonlyArray<ColumnUpdateNode> | undefined, rel: Relation): void {
  for (const u of items ?? []) {
    const m = mappedIn(u.column, rel)
    if (m?.nullPlaintext) refuseWrittenPlaintext(m, nodeValue(u.value))
  }
}
