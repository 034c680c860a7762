import { DecryptionError, FieldEncryptionError } from '../errors.js'
import { decryptValue } from '../fields/field-cipher.js'
import { headerKeyVersion, looksLikeCiphertext } from '../fields/format.js'
import type { KeyMaterial } from '../keys/key-material.js'
import type { KeyRef } from '../keys/key-provider.js'
import type { KeyRing } from '../keys/key-ring.js'
import { rowKeyName } from '../schema/key-scope.js'
import { contextRecord, contextSuffix, readContext, rowAad } from '../schema/row-context.js'
import type { ColumnInfo } from '../schema/schema.js'
import { type DecryptStats, finishRows } from './finish-rows.js'
import type { PlanOutput, QueryPlan } from './plan.js'
import { evictedWhileLoading } from './resolve-values.js'

export type { DecryptStats } from './finish-rows.js'

/** What decrypting rows asks of the key ring (a stream's narrows `key`, see dialect-wrapper.ts). */
export type RowKeys = Pick<KeyRing, 'peekKey' | 'key'>

/**
 * Decrypts the annotated columns of result rows in place, following the plan, then removes
 * search-index false positives and the hidden columns that carried their ciphertexts, and, under
 * `omitBlindIndexes`, the index columns of the tables whose encrypted columns the rows carry.
 *
 * Keys: one lookup per distinct (table, key version) in the batch, from the cache synchronously
 * when it holds them, else through `slow` (one provider call per missing key), never per row.
 * Synchronous when every key is cached (the steady state): one pass, no promise.
 *
 * @returns the rows to hand back (the same array when nothing was filtered)
 * @throws DecryptionError `NOT_CIPHERTEXT`, `DECRYPT_AUTH_FAILED`, `WRONG_KEY`, … with table and column
 */
export function decryptRows<R extends Record<string, unknown>>(
  ring: RowKeys,
  plan: QueryPlan,
  rows: R[],
  stats: DecryptStats,
  slow: <T>(fn: () => Promise<T>) => Promise<T>,
): R[] | Promise<R[]> {
  if (rows.length === 0 || plan.outputs.length === 0) return rows
  const keys = new VersionMap<KeyMaterial>()
  const stop = decryptFrom(ring, keys, plan, rows, stats, 0)
  if (stop === undefined) return finishRows(plan, rows, stats)
  // A key the cache could not serve: load every key the rest of the batch needs, then go on.
  return loadMissing(ring, keys, missingFrom(ring, keys, plan, rows, stop), slow).then(() => {
    if (decryptFrom(ring, keys, plan, rows, stats, stop) !== undefined) throw evictedWhileLoading()
    return finishRows(plan, rows, stats)
  })
}

/**
 * Decrypts values in place from flat position `start` (row × outputs + output) on.
 * @returns the position of the first value whose key is neither in `keys` nor cached, or
 *   `undefined` when every value is done
 */
function decryptFrom(
  ring: RowKeys,
  keys: VersionMap<KeyMaterial>,
  plan: QueryPlan,
  rows: Record<string, unknown>[],
  stats: DecryptStats,
  start: number,
): number | undefined {
  const outputs = plan.outputs
  const width = outputs.length
  const first = Math.floor(start / width)
  for (let r = first; r < rows.length; r++) {
    const row = rows[r] as Record<string, unknown>
    for (let o = r === first ? start % width : 0; o < width; o++) {
      const output = outputs[o] as PlanOutput
      const { name, column } = output
      const value = row[name]
      if (value === null || value === undefined) continue
      const bytes = asBytes(value)
      if (bytes === undefined || !looksLikeCiphertext(bytes)) {
        row[name] = notCiphertext(column, value, bytes, stats, row, outputs)
        continue
      }
      const context = output.context === undefined ? undefined : rowContext(output, row)
      const table = column.table.keyScope === undefined ? column.table.logical : keyNameOf(column, context)
      const version = headerKeyVersion(bytes) // the header was just checked by looksLikeCiphertext
      let key = keys.get(table, version)
      // A key wiped since it was found (evicted while another loaded) counts as not found.
      if (key === undefined || key.destroyed) {
        key = ring.peekKey({ logicalTable: table, purpose: 'data', version })
        if (key === undefined) return r * width + o
        keys.set(table, version, key)
      }
      row[name] =
        context === undefined
          ? decryptOne(column, bytes, key, stats)
          : decryptInContext(column, context, bytes, key, stats)
    }
  }
  return undefined
}

/** The keys the values from flat position `start` on need that neither `keys` nor the cache hold. */
function missingFrom(
  ring: RowKeys,
  keys: VersionMap<KeyMaterial>,
  plan: QueryPlan,
  rows: readonly Record<string, unknown>[],
  start: number,
): VersionMap<KeyRef> {
  const missing = new VersionMap<KeyRef>()
  const width = plan.outputs.length
  for (let p = start; p < rows.length * width; p++) {
    const output = plan.outputs[p % width] as PlanOutput
    const { name, column } = output
    const row = rows[Math.floor(p / width)] as Record<string, unknown>
    const bytes = asBytes(row[name])
    if (bytes === undefined || !looksLikeCiphertext(bytes)) continue
    const table =
      column.table.keyScope === undefined ? column.table.logical : keyNameOf(column, rowContext(output, row))
    const version = headerKeyVersion(bytes)
    const known = keys.get(table, version)
    if ((known !== undefined && !known.destroyed) || missing.get(table, version) !== undefined) continue
    const ref: KeyRef = { logicalTable: table, purpose: 'data', version }
    const cached = ring.peekKey(ref)
    if (cached !== undefined) keys.set(table, version, cached)
    else missing.set(table, version, ref)
  }
  return missing
}

/** Loads the keys the cache could not serve into `keys`. */
async function loadMissing(
  ring: RowKeys,
  keys: VersionMap<KeyMaterial>,
  missing: VersionMap<KeyRef>,
  slow: <T>(fn: () => Promise<T>) => Promise<T>,
): Promise<void> {
  for (let attempt = 0; missing.size > 0; attempt++) {
    if (attempt === 3) throw evictedWhileLoading()
    const refs = missing.values()
    const loaded = await slow(() => Promise.all(refs.map(async (ref) => [ref, await ring.key(ref)] as const)))
    // A key held across the awaits above may have been evicted (and wiped) meanwhile: fetch again.
    for (const [ref, key] of loaded) {
      if (key.destroyed) continue
      keys.set(ref.logicalTable, ref.version, key)
      missing.delete(ref.logicalTable, ref.version)
    }
  }
}

/**
 * Values by (logical table, key version), without building a string key per value. The first
 * entry lives in fields of its own, and maps are made only for a second one: a batch usually
 * holds one table and one key version, so most queries (a lookup) allocate no map at all.
 */
class VersionMap<V> {
  #firstTable: string | undefined
  #firstVersion = -1
  #first: V | undefined
  #byTable: Map<string, Map<number, V>> | undefined
  size = 0

  get(table: string, version: number): V | undefined {
    if (version === this.#firstVersion && table === this.#firstTable) return this.#first
    return this.#byTable?.get(table)?.get(version)
  }

  set(table: string, version: number, value: V): void {
    if (version === this.#firstVersion && table === this.#firstTable) {
      this.#first = value
      return
    }
    const known = this.#byTable?.get(table)
    if (known?.has(version)) {
      known.set(version, value)
      return
    }
    this.size++
    if (this.#firstTable === undefined) {
      this.#firstTable = table
      this.#firstVersion = version
      this.#first = value
      return
    }
    this.#byTable ??= new Map()
    let versions = known
    if (versions === undefined) {
      versions = new Map()
      this.#byTable.set(table, versions)
    }
    versions.set(version, value)
  }

  delete(table: string, version: number): void {
    if (version === this.#firstVersion && table === this.#firstTable) {
      this.#firstTable = undefined
      this.#firstVersion = -1
      this.#first = undefined
      this.size--
    } else if (this.#byTable?.get(table)?.delete(version)) this.size--
  }

  values(): V[] {
    const out: V[] = this.#firstTable === undefined ? [] : [this.#first as V]
    for (const versions of this.#byTable?.values() ?? []) out.push(...versions.values())
    return out
  }
}

/**
 * The canonical context values of one result row, for an output of a table with a row context.
 * @throws DecryptionError `CONTEXT_MISSING` when a value is NULL or unusable
 */
function rowContext(output: PlanOutput, row: Record<string, unknown>): readonly string[] {
  const names = output.context as readonly string[]
  return readContext(output.column.table, output.column, (i) => row[names[i] as string]) as string[]
}

/** The key name of a value of a table with per-tenant keys: its row's tenant's. */
function keyNameOf(column: ColumnInfo, context: readonly string[] | undefined): string {
  // Present: a table with a key scope binds a row context, which every plan output carries.
  return rowKeyName(column.table, context) as string
}

/** A stored value that is not a ciphertext: legacy plaintext while migrating, else an error. */
function notCiphertext(
  column: ColumnInfo,
  value: unknown,
  bytes: Uint8Array | undefined,
  stats: DecryptStats,
  row: Record<string, unknown>,
  outputs: readonly PlanOutput[],
): unknown {
  if (column.spec.migratingFromPlaintext) {
    stats.plaintextReads += 1
    return legacyPlaintext(column, value, bytes)
  }
  throw new DecryptionError(
    'NOT_CIPHERTEXT',
    `Column ${column.table.physical}.${column.physical} holds a value that is not a kysely-field-encryption ciphertext${rowKey(column, row, outputs)}. ` +
      'If the column held plaintext before it was annotated, declare it migratingFromPlaintext: true (docs/guide.md §1): ' +
      'legacy values are then returned as they are until rewritten through the plugin. Otherwise the value was written around the plugin.',
    { ...column.aad, cause: undefined },
  )
}

/** Longest primary-key string quoted in a message. */
const KEY_TEXT_MAX = 64

/**
 * ` (result row with id = 42)`: the row's primary key, when the query selected it, so the row
 * can be found. Empty when a key column is missing, is annotated (its value is never shown), is
 * the name of an encrypted output of the query (`select('email as id')`: decrypted in place, or
 * a legacy plaintext, by now), or holds something other than a number or a short string.
 */
function rowKey(column: ColumnInfo, row: Record<string, unknown>, outputs: readonly PlanOutput[]): string {
  const table = column.table
  const parts: string[] = []
  for (const key of table.primaryKey) {
    if (table.column(key) !== undefined || table.indexColumn(key) !== undefined) return ''
    for (const output of outputs) if (output.name === key) return ''
    const value = row[key]
    if (typeof value === 'number' || typeof value === 'bigint') parts.push(`${key} = ${value}`)
    else if (typeof value === 'string' && value.length <= KEY_TEXT_MAX)
      parts.push(`${key} = ${JSON.stringify(value)}`)
    else return ''
  }
  return parts.length === 0 ? '' : ` (result row with ${parts.join(', ')})`
}

/**
 * Decrypts a value of a table with a row context: the AAD carries the row's context values, and a
 * failure names them (they are plaintext columns), so the tampered row can be found.
 * @throws DecryptionError `CONTEXT_MISSING` when a context value is NULL or unusable;
 *   `DECRYPT_AUTH_FAILED` (with `rowContext`) when the value belongs to another row or context
 */
function decryptInContext(
  column: ColumnInfo,
  values: readonly string[],
  bytes: Uint8Array,
  key: KeyMaterial,
  stats: DecryptStats,
): unknown {
  try {
    return decryptOne(column, bytes, key, stats, rowAad(column, values))
  } catch (error) {
    if (!(error instanceof DecryptionError) || error.rowContext !== undefined) throw error
    throw new DecryptionError(error.code, `${error.message}${contextSuffix(column.table, values)}`, {
      table: error.table,
      column: error.column,
      cause: error,
      rowContext: contextRecord(column.table, values),
    })
  }
}

function decryptOne(
  column: ColumnInfo,
  bytes: Uint8Array,
  key: KeyMaterial,
  stats: DecryptStats,
  aad = column.aad,
): unknown {
  try {
    const plain = decryptValue(column.spec.codec, bytes, key, aad)
    stats.decrypted += 1
    return plain
  } catch (error) {
    if (error instanceof FieldEncryptionError) throw error
    throw new DecryptionError(
      'DECRYPT_AUTH_FAILED',
      `Could not decrypt ${column.table.physical}.${column.physical}.`,
      { ...column.aad, cause: error },
    )
  }
}

function legacyPlaintext(column: ColumnInfo, value: unknown, bytes: Uint8Array | undefined): unknown {
  if (bytes !== undefined && column.spec.codec.kind === 'text') return Buffer.from(bytes).toString('utf8')
  return value
}

/** Drivers return bytea/VARBINARY as Buffer (pg, mysql2) or Uint8Array (PGlite). */
function asBytes(value: unknown): Uint8Array | undefined {
  return value instanceof Uint8Array ? value : undefined
}
