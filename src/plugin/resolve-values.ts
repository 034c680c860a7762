import type { OperationNode, QueryCompiler, ReferenceNode, RootOperationNode } from 'kysely'
import { computeBlindIndex, computeTextBlindIndex } from '../blindindex/compute-blind-index.js'
import { normalizeValue } from '../blindindex/normalizers.js'
import { CodecError, KeyError, QueryRefusedError } from '../errors.js'
import { encryptValue } from '../fields/field-cipher.js'
import { ciphertextLength } from '../fields/format.js'
import type { KeyMaterial } from '../keys/key-material.js'
import type { KeyRing } from '../keys/key-ring.js'
import { tenantRequired } from '../schema/key-scope.js'
import { contextMissing, rowAad } from '../schema/row-context.js'
import { type ColumnInfo, type IndexInfo, slotOfVersion } from '../schema/schema.js'
import { type DeferredValue, isDeferred } from './deferred-value.js'
import { mapChildren } from './node-utils.js'
import { columnName, referenceNode } from './nodes.js'

/** The bytes an index is computed over: normalized (strings), then codec-encoded. */
export function indexInput(index: IndexInfo, value: unknown): Buffer {
  const codec = index.column.spec.codec
  const normalized = typeof value === 'string' ? normalizeValue(index.spec, value) : value
  return codec.encode(normalized as never)
}

/** The blind index of `value` under one index key version. */
export function indexValue(key: KeyMaterial, index: IndexInfo, value: unknown): Buffer {
  const codec = index.column.spec.codec
  if (codec.canonicalText !== undefined) {
    const normalized = typeof value === 'string' ? normalizeValue(index.spec, value) : value
    return computeTextBlindIndex(
      key,
      index.column.table.logical,
      index.spec,
      codec.canonicalText(normalized as never),
    )
  }
  const input = indexInput(index, value)
  try {
    return computeBlindIndex(key, index.column.table.logical, index.spec, [input])
  } finally {
    input.fill(0) // encoded plaintext: do not leave it in memory
  }
}

/**
 * Refuses a search whose value normalizes to the empty string (`digits` of `'abc'`): it would
 * match every stored value that normalizes to empty too, i.e. rows that have nothing in common.
 * @throws QueryRefusedError `QUERY_REFUSED` naming the table, column and index.
 */
export function refuseEmptySearch(index: IndexInfo, value: unknown): void {
  if (typeof value !== 'string' || index.spec.normalize.length === 0) return
  if (normalizeValue(index.spec, value) !== '') return
  throw new QueryRefusedError(
    'QUERY_REFUSED',
    `A search on ${index.column.table.physical}.${index.column.physical} through blind index ${index.spec.name} was refused: the value is empty once normalized, and would match every value that normalizes to empty.`,
    {
      table: index.column.table.logical,
      column: index.column.logical,
      operator: '=',
      hint: 'Validate the search input before the query (for a digits-only index, a value with at least one digit).',
    },
  )
}

/**
 * The ciphertext of `value` for `column` under a data key.
 * @param context - The row's canonical context values, when the table binds a row context.
 * @param enforceMaxBytes - Refuse a value longer than the column's `maxBytes` (false: a stored
 *   value moved to another key, which the declaration must not strand on its old one).
 * @throws QueryRefusedError `CONTEXT_MISSING` when the table binds a row context and none is given
 * @throws CodecError `CODEC_INVALID_VALUE` when the value is longer than `maxBytes` once encoded
 */
export function encryptColumn(
  key: KeyMaterial,
  column: ColumnInfo,
  value: unknown,
  context?: readonly string[],
  enforceMaxBytes = true,
): Buffer {
  if (column.table.context.length !== 0 && context?.length !== column.table.context.length) {
    // A deferred value built without its row's context: never encrypt it unbound.
    throw contextMissing(
      column.table,
      column.table.context.join(', '),
      'has no value for this write',
      'write',
    )
  }
  const ciphertext = encryptValue(column.spec.codec, value as never, key, rowAad(column, context))
  const max = column.spec.maxBytes
  // The declared largest plaintext (it sizes MySQL's VARBINARY): refused on every engine, before
  // anything is sent, so that a value MySQL would refuse or truncate (non-strict sql_mode: a
  // ciphertext cut short, never to decrypt again) is caught wherever it is first written.
  if (enforceMaxBytes && max !== undefined && ciphertext.length > ciphertextLength(max, key.ref.version)) {
    ciphertext.fill(0)
    throw new CodecError(
      'CODEC_INVALID_VALUE',
      `A value of ${column.table.physical}.${column.physical} is longer than its maxBytes (${max} bytes once encoded); nothing was written. Raise maxBytes (and widen the column) if such values are valid.`,
      { table: column.table.logical, column: column.logical },
    )
  }
  return ciphertext
}

/** Keys by logical table: a Map, or {@link TableKeys} on the steady-state path. */
export interface KeysByTable<V> {
  get(table: string): V | undefined
}

/** The keys the deferred values of one query need, by logical table. */
export interface QueryKeys {
  readonly data: KeysByTable<KeyMaterial>
  readonly index: KeysByTable<KeyMaterial>
  readonly search: KeysByTable<KeyMaterial[]>
}

const NO_KEYS: KeysByTable<never> = new Map<string, never>()

/**
 * Keys by logical table for one query, from the cache: the first table in fields of its own, a
 * Map only for a second one. Nearly every query names one table, so a lookup or an insert makes
 * no Map here (one per kind of key per query before; docs/benchmarks.md).
 */
class TableKeys<V> implements KeysByTable<V> {
  readonly #firstTable: string
  readonly #first: V
  #more: Map<string, V> | undefined

  constructor(table: string, value: V) {
    this.#firstTable = table
    this.#first = value
  }

  get(table: string): V | undefined {
    return table === this.#firstTable ? this.#first : this.#more?.get(table)
  }

  /** Adds a table (never the first one again: callers check {@link TableKeys.get} first). */
  add(table: string, value: V): void {
    this.#more ??= new Map()
    this.#more.set(table, value)
  }
}

/**
 * The keys from the cache alone, synchronously: the steady-state path (no promise, no I/O, and
 * only the maps the query needs).
 * @returns `undefined` when any key or key list is not cached and fresh
 */
export function cachedKeys(ring: KeyRing, deferred: readonly DeferredValue[]): QueryKeys | undefined {
  let data: TableKeys<KeyMaterial> | undefined
  let index: TableKeys<KeyMaterial> | undefined
  let search: TableKeys<KeyMaterial[]> | undefined
  for (let i = 0; i < deferred.length; i++) {
    const d = deferred[i] as DeferredValue
    const table = keyNameOf(d)
    if (d.kind === 'encrypt') {
      if (data?.get(table) !== undefined) continue
      const k = ring.peekActiveKey(table, 'data')
      if (k === undefined) return undefined
      if (data === undefined) data = new TableKeys(table, k)
      else data.add(table, k)
    } else {
      // A write to an index with a rotation slot fills every live version's slot (search keys);
      // a search on one probes the active version's slot (active key).
      const slotted = d.index?.slot !== undefined
      if ((d.kind === 'index' || slotted) && index?.get(table) === undefined) {
        const k = ring.peekActiveKey(table, 'index')
        if (k === undefined) return undefined
        if (index === undefined) index = new TableKeys(table, k)
        else index.add(table, k)
      }
      if ((d.kind === 'probe' || slotted) && search?.get(table) === undefined) {
        const k = ring.peekSearchKeys(table, 'index')
        if (k === undefined) return undefined
        if (search === undefined) search = new TableKeys(table, k)
        else search.add(table, k)
      }
    }
  }
  return { data: data ?? NO_KEYS, index: index ?? NO_KEYS, search: search ?? NO_KEYS }
}

/**
 * The keys through the key ring: one provider call per missing key, never per row. A key fetched
 * early is held across the later awaits, where the cache may evict (and wipe) it when `max` is
 * smaller than what one query needs: then the set is fetched again, a bounded number of times.
 * @throws KeyError `KEY_NOT_FOUND` when the cache keeps wiping keys before they can be used
 */
export async function loadKeys(ring: KeyRing, deferred: readonly DeferredValue[]): Promise<QueryKeys> {
  const needs = { data: new Set<string>(), index: new Set<string>(), search: new Set<string>() }
  for (const d of deferred) {
    const table = keyNameOf(d)
    if (d.kind === 'encrypt') needs.data.add(table)
    else {
      const slotted = d.index?.slot !== undefined // see cachedKeys
      if (d.kind === 'index' || slotted) needs.index.add(table)
      if (d.kind === 'probe' || slotted) needs.search.add(table)
    }
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    const [data, index, search] = await Promise.all([
      keyMap(needs.data, (t) => ring.writeKey(t, 'data')),
      keyMap(needs.index, (t) => ring.writeKey(t, 'index')),
      keyMap(needs.search, (t) => ring.searchKeys(t, 'index')),
    ])
    const all = [...data.values(), ...index.values(), ...[...search.values()].flat()]
    if (all.every((k) => !k.destroyed)) return { data, index, search }
  }
  throw evictedWhileLoading()
}

/**
 * The logical key name of a deferred value (its table's, or its tenant's).
 * @throws QueryRefusedError `TENANT_REQUIRED` when its table has a key scope and it names no tenant
 */
export function keyNameOf(d: DeferredValue): string {
  const name = d.keyName
  if (name !== undefined) return name
  throw tenantRequired(d.column.table, d.column.logical, `${d.toString()}`, d.kind)
}

/** The error when keys are wiped between their fetch and their use. */
export function evictedWhileLoading(): KeyError {
  return new KeyError(
    'KEY_NOT_FOUND',
    'Keys this query needs were evicted from the key cache while they were loaded: raise cache.max.',
  )
}

/**
 * Replaces every deferred value of a compiled query with its ciphertext or blind index, with
 * keys already at hand (synchronous: the crypto is one cipher or HMAC call per value).
 *
 * A probe with several live index versions becomes several values, which changes the SQL
 * (`in ($1)` → `in ($1, $2)`), so the tree is expanded and compiled again with the dialect's
 * own compiler.
 *
 * @returns the parameters to send, and the SQL when it had to change
 */
export function resolveDeferred(
  keys: QueryKeys,
  query: RootOperationNode,
  parameters: readonly unknown[],
  compiler: () => QueryCompiler,
  queryId: { queryId: string },
): { sql?: string; parameters: readonly unknown[] } {
  let probes: Map<DeferredValue, Buffer[]> | undefined
  let expand = false
  // A loop, not `map` with a closure: this runs once per query that writes or searches. A copy
  // of the parameters (packed, as `map` makes, and of its final size: one grown by `push` is
  // reallocated and copied as it grows, thousands of values on a large insert), each deferred
  // value replaced in place.
  const resolved = parameters.slice()
  for (let i = 0; i < parameters.length; i++) {
    const p = parameters[i]
    if (!isDeferred(p)) continue
    const table = keyNameOf(p)
    let value: unknown
    switch (p.kind) {
      case 'encrypt':
        value = encryptColumn(keys.data.get(table)!, p.column, p.reveal(), p.context)
        break
      case 'index':
        value =
          p.index!.slot !== undefined
            ? slotValue(keys, table, p.index!, p.reveal())
            : indexValue(keys.index.get(table)!, p.index!, p.reveal())
        break
      default: {
        refuseEmptySearch(p.index!, p.reveal())
        if (p.index!.slot !== undefined) {
          // Only the active version's slot is probed: it is complete (activation waits for it).
          const active = keys.index.get(table)!
          value = indexValue(active, p.index!, p.reveal())
          if (slotOfVersion(active.ref.version) === p.index!.slot) break
          probes ??= new Map()
          probes.set(p, [value as Buffer])
          expand = true
          break
        }
        const live = keys.search.get(table)!
        // One live index version (no rotation under way): one value, no list to build.
        if (live.length === 1) {
          value = indexValue(live[0]!, p.index!, p.reveal())
          break
        }
        const values = dedupe(live.map((k) => indexValue(k, p.index!, p.reveal())))
        probes ??= new Map()
        probes.set(p, values)
        if (values.length !== 1) expand = true
        value = values[0]
      }
    }
    resolved[i] = value
  }
  if (!expand || probes === undefined) return { parameters: resolved }
  // Several live index versions: every probe stands for one value per version.
  const expanded = expandProbes(query, probes)
  const compiled = compiler().compileQuery(expanded, queryId as never)
  const again = resolveDeferred(keys, expanded, compiled.parameters, compiler, queryId)
  return { sql: compiled.sql, parameters: again.parameters }
}

async function keyMap<T>(
  tables: ReadonlySet<string>,
  get: (table: string) => Promise<T>,
): Promise<Map<string, T>> {
  const entries = await Promise.all([...tables].map(async (t) => [t, await get(t)] as const))
  return new Map(entries)
}

/**
 * The value of one column of an index with a rotation slot: the blind index under the live
 * version (staged, active or decrypt-only) that lives in this slot, or NULL when none does.
 * @throws KeyError `INDEX_SLOT_CONFLICT` when two live versions share the slot (a third version
 *   staged before the oldest was retired): writing either would break uniqueness
 */
function slotValue(keys: QueryKeys, table: string, index: IndexInfo, plaintext: unknown): Buffer | null {
  const here = keys.search.get(table)!.filter((k) => slotOfVersion(k.ref.version) === index.slot)
  if (here.length > 1) {
    throw new KeyError(
      'INDEX_SLOT_CONFLICT',
      `Index versions ${here.map((k) => k.ref.version).join(' and ')} of ${table} are both live and share rotation slot ${index.physical}: writes are refused. Retire the older one (or the newer staged one).`,
      { table: index.column.table.logical, column: index.column.logical },
    )
  }
  return here[0] === undefined ? null : indexValue(here[0], index, plaintext)
}

/** The other column of an index with a rotation slot. */
function otherSlot(index: IndexInfo): string {
  return index.slot === 0 ? index.spec.rotationSlot! : index.spec.name
}

function dedupe(values: Buffer[]): Buffer[] {
  return values.filter((v, i) => values.findIndex((w) => w.equals(v)) === i)
}

function expandProbes(
  node: RootOperationNode,
  probes: ReadonlyMap<DeferredValue, Buffer[]>,
): RootOperationNode {
  const visit = (n: OperationNode): OperationNode => {
    if (n.kind === 'BinaryOperationNode') {
      // A probe of an index with a rotation slot whose active version lives in the other column:
      // `email_bidx in ($1)` becomes `email_bidx_next in ($1)`.
      const b = n as unknown as { leftOperand: OperationNode; rightOperand: OperationNode }
      const slotted = slottedProbe(b.rightOperand, probes)
      if (slotted !== undefined) {
        const left = b.leftOperand
        if (left.kind !== 'ReferenceNode' || columnName(left) !== slotted.physical) {
          throw new QueryRefusedError(
            'QUERY_REFUSED',
            `A search on ${slotted.column.table.physical}.${slotted.column.physical} through ${slotted.physical} (an index with a rotation slot) names the index column under another name; it cannot be moved to ${otherSlot(slotted)}.`,
            {
              table: slotted.column.table.logical,
              column: slotted.column.logical,
              operator: 'in',
              hint: 'Search the table directly, or select both index columns under their own names in the derived table.',
            },
          )
        }
        const moved = referenceNode(otherSlot(slotted), (left as ReferenceNode).table)
        return Object.freeze({
          ...n,
          leftOperand: moved,
          rightOperand: visit(b.rightOperand),
        }) as OperationNode
      }
    }
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

function slottedProbe(
  node: OperationNode,
  probes: ReadonlyMap<DeferredValue, Buffer[]>,
): IndexInfo | undefined {
  if (node.kind !== 'ValueListNode') return undefined
  for (const v of (node as unknown as { values: ReadonlyArray<OperationNode> }).values) {
    const value = (v as unknown as { value?: unknown }).value
    if (v.kind === 'ValueNode' && isDeferred(value) && probes.has(value) && value.index?.slot !== undefined)
      return value.index
  }
  return undefined
}
