import type { OperationNode, QueryCompiler, RootOperationNode } from 'kysely'
import { computeBlindIndex } from '../blindindex/compute-blind-index.js'
import { normalizeValue } from '../blindindex/normalizers.js'
import { encryptValue } from '../fields/field-cipher.js'
import type { KeyMaterial } from '../keys/key-material.js'
import type { KeyRing } from '../keys/key-ring.js'
import type { ColumnInfo, IndexInfo } from '../schema/schema.js'
import { type DeferredValue, isDeferred } from './deferred-value.js'
import { mapChildren } from './node-utils.js'

/** The bytes an index is computed over: normalized (strings), then codec-encoded. */
export function indexInput(index: IndexInfo, value: unknown): Buffer {
  const codec = index.column.spec.codec
  const normalized = typeof value === 'string' ? normalizeValue(index.spec, value) : value
  return codec.encode(normalized as never)
}

/** The blind index of `value` under one index key version. */
export function indexValue(key: KeyMaterial, index: IndexInfo, value: unknown): Buffer {
  return computeBlindIndex(key, index.column.table.logical, index.spec, [indexInput(index, value)])
}

/** The ciphertext of `value` for `column` under a data key. */
export function encryptColumn(key: KeyMaterial, column: ColumnInfo, value: unknown): Buffer {
  return encryptValue(column.spec.codec, value as never, key, {
    table: column.table.logical,
    column: column.logical,
  })
}

/**
 * Replaces every deferred value of a compiled query with its ciphertext or blind index.
 *
 * Keys are fetched first (one cache lookup per table and purpose, so one provider call per
 * missing key, never per row); the crypto then runs synchronously. A probe with several live
 * index versions becomes several values, which changes the SQL (`in ($1)` → `in ($1, $2)`), so
 * the tree is expanded and compiled again with the dialect's own compiler.
 *
 * @returns the parameters to send, and the SQL when it had to change
 */
export async function resolveDeferred(
  ring: KeyRing,
  query: RootOperationNode,
  parameters: readonly unknown[],
  compiler: () => QueryCompiler,
  queryId: { queryId: string },
): Promise<{ sql?: string; parameters: readonly unknown[] }> {
  const deferred = parameters.filter(isDeferred)
  const dataTables = new Set<string>()
  const indexTables = new Set<string>()
  const probeTables = new Set<string>()
  for (const d of deferred) {
    const table = d.column.table.logical
    if (d.kind === 'encrypt') dataTables.add(table)
    else if (d.kind === 'index') indexTables.add(table)
    else probeTables.add(table)
  }
  const [dataKeys, indexKeys, searchKeys] = await Promise.all([
    keyMap(dataTables, (t) => ring.activeKey(t, 'data')),
    keyMap(indexTables, (t) => ring.activeKey(t, 'index')),
    keyMap(probeTables, (t) => ring.searchKeys(t, 'index')),
  ])
  const probes = new Map<DeferredValue, Buffer[]>()
  let expand = false
  const resolved = parameters.map((p) => {
    if (!isDeferred(p)) return p
    const table = p.column.table.logical
    switch (p.kind) {
      case 'encrypt':
        return encryptColumn(dataKeys.get(table)!, p.column, p.reveal())
      case 'index':
        return indexValue(indexKeys.get(table)!, p.index!, p.reveal())
      default: {
        const values = dedupe(searchKeys.get(table)!.map((k) => indexValue(k, p.index!, p.reveal())))
        probes.set(p, values)
        if (values.length !== 1) expand = true
        return values[0]
      }
    }
  })
  if (!expand) return { parameters: resolved }
  // Several live index versions: every probe stands for one value per version.
  const expanded = expandProbes(query, probes)
  const compiled = compiler().compileQuery(expanded, queryId as never)
  const again = await resolveDeferred(ring, expanded, compiled.parameters, compiler, queryId)
  return { sql: compiled.sql, parameters: again.parameters }
}

async function keyMap<T>(
  tables: ReadonlySet<string>,
  get: (table: string) => Promise<T>,
): Promise<Map<string, T>> {
  const entries = await Promise.all([...tables].map(async (t) => [t, await get(t)] as const))
  return new Map(entries)
}

function dedupe(values: Buffer[]): Buffer[] {
  return values.filter((v, i) => values.findIndex((w) => w.equals(v)) === i)
}

function expandProbes(
  node: RootOperationNode,
  probes: ReadonlyMap<DeferredValue, Buffer[]>,
): RootOperationNode {
  const visit = (n: OperationNode): OperationNode => {
    if (n.kind === 'ValueListNode') {
      const list = n as unknown as { values: ReadonlyArray<OperationNode> }
      let changed = false
      const values = list.values.flatMap((v) => {
        const value = (v as unknown as { value?: unknown }).value
        const hit = v.kind === 'ValueNode' && isDeferred(value) ? probes.get(value) : undefined
        if (hit === undefined) return [visit(v)]
        changed = true
        return hit.map((b) => Object.freeze({ kind: 'ValueNode', value: b }) as OperationNode)
      })
      return changed ? Object.freeze({ ...n, values: Object.freeze(values) }) : n
    }
    return mapChildren(n, visit)
  }
  return visit(node) as RootOperationNode
}
