import { timingSafeEqual } from 'node:crypto'
import { DecryptionError, FieldEncryptionError } from '../errors.js'
import { decryptValue } from '../fields/field-cipher.js'
import { headerKeyVersion, looksLikeCiphertext } from '../fields/format.js'
import type { KeyMaterial } from '../keys/key-material.js'
import type { KeyRef } from '../keys/key-provider.js'
import type { KeyRing } from '../keys/key-ring.js'
import type { ColumnInfo } from '../schema/schema.js'
import type { QueryPlan } from './plan.js'
import { evictedWhileLoading, indexInput } from './resolve-values.js'

/** Counters the wrapper keeps; exposed by `encryption.stats()`. */
export interface DecryptStats {
  /** Values decrypted. */
  decrypted: number
  /** Rows dropped as search-index false positives. */
  falsePositives: number
  /** Legacy plaintext values returned from columns declared `migratingFromPlaintext`. */
  plaintextReads: number
}

/**
 * Decrypts the annotated columns of result rows in place, following the plan, then removes
 * search-index false positives and the hidden columns that carried their ciphertexts.
 *
 * Keys: one lookup per distinct (table, key version) in the batch, from the cache synchronously
 * when it holds them, else through `slow` (one provider call per missing key), never per row.
 * Synchronous when every key is cached (the steady state): no promise is made then.
 *
 * @returns the rows to hand back (the same array when nothing was filtered)
 * @throws DecryptionError `NOT_CIPHERTEXT`, `DECRYPT_AUTH_FAILED`, `WRONG_KEY`, … with table and column
 */
export function decryptRows<R extends Record<string, unknown>>(
  ring: KeyRing,
  plan: QueryPlan,
  rows: R[],
  stats: DecryptStats,
  slow: <T>(fn: () => Promise<T>) => Promise<T>,
): R[] | Promise<R[]> {
  if (rows.length === 0 || plan.outputs.length === 0) return rows
  // Per batch: key versions seen → key, and those the cache could not serve synchronously.
  const keys = new VersionMap<KeyMaterial>()
  let missing: VersionMap<KeyRef> | undefined
  for (const row of rows) {
    for (const { name, column } of plan.outputs) {
      const bytes = asBytes(row[name])
      if (bytes === undefined || !looksLikeCiphertext(bytes)) continue
      const keyVersion = headerKeyVersion(bytes) // the header was just checked by looksLikeCiphertext
      const table = column.table.logical
      if (keys.get(table, keyVersion) !== undefined || missing?.get(table, keyVersion) !== undefined) continue
      const ref: KeyRef = { logicalTable: table, purpose: 'data', version: keyVersion }
      const cached = ring.peekKey(ref)
      if (cached !== undefined) keys.set(table, keyVersion, cached)
      else {
        missing ??= new VersionMap()
        missing.set(table, keyVersion, ref)
      }
    }
  }
  if (missing === undefined) return decryptWith(keys, plan, rows, stats)
  return loadMissing(ring, keys, missing, slow).then(() => decryptWith(keys, plan, rows, stats))
}

/** Loads the keys the cache could not serve into `keys`. */
async function loadMissing(
  ring: KeyRing,
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

/** The decryption proper, every key at hand; then the false-positive filter. */
function decryptWith<R extends Record<string, unknown>>(
  keys: VersionMap<KeyMaterial>,
  plan: QueryPlan,
  rows: R[],
  stats: DecryptStats,
): R[] {
  for (const row of rows) {
    for (const { name, column } of plan.outputs) {
      const value = row[name]
      if (value === null || value === undefined) continue
      ;(row as Record<string, unknown>)[name] = decryptOne(column, value, keys, stats)
    }
  }
  if (plan.postFilters.length === 0) return rows
  const wanted = plan.postFilters.map((f) => f.probes.map((p) => indexInput(f.index, p.reveal())))
  const kept = rows.filter((row) =>
    plan.postFilters.every((filter, i) => {
      const stored = row[filter.hidden]
      if (stored === null || stored === undefined) return false
      const actual = indexInput(filter.index, stored)
      const match = wanted[i]!.some((w) => w.length === actual.length && timingSafeEqual(w, actual))
      actual.fill(0)
      return match
    }),
  )
  for (const list of wanted) for (const w of list) w.fill(0)
  stats.falsePositives += rows.length - kept.length
  for (const row of kept) for (const filter of plan.postFilters) delete row[filter.hidden]
  return kept
}

/**
 * Values by (logical table, key version), without building a string key per value. Remembers
 * the last hit: a batch usually holds one table and one key version.
 */
class VersionMap<V> {
  readonly #byTable = new Map<string, Map<number, V>>()
  #lastTable: string | undefined
  #lastVersion = -1
  #last: V | undefined
  size = 0

  get(table: string, version: number): V | undefined {
    if (version === this.#lastVersion && table === this.#lastTable) return this.#last
    const value = this.#byTable.get(table)?.get(version)
    if (value !== undefined) {
      this.#lastTable = table
      this.#lastVersion = version
      this.#last = value
    }
    return value
  }

  set(table: string, version: number, value: V): void {
    let versions = this.#byTable.get(table)
    if (versions === undefined) {
      versions = new Map()
      this.#byTable.set(table, versions)
    }
    if (!versions.has(version)) this.size++
    versions.set(version, value)
    if (table === this.#lastTable && version === this.#lastVersion) this.#last = value
  }

  delete(table: string, version: number): void {
    if (this.#byTable.get(table)?.delete(version)) this.size--
    if (table === this.#lastTable && version === this.#lastVersion) this.#lastTable = undefined
  }

  values(): V[] {
    return [...this.#byTable.values()].flatMap((m) => [...m.values()])
  }
}

function decryptOne(
  column: ColumnInfo,
  value: unknown,
  keys: VersionMap<KeyMaterial>,
  stats: DecryptStats,
): unknown {
  const where = column.aad
  const bytes = asBytes(value)
  if (bytes === undefined || !looksLikeCiphertext(bytes)) {
    if (column.spec.migratingFromPlaintext) {
      stats.plaintextReads += 1
      return legacyPlaintext(column, value, bytes)
    }
    throw new DecryptionError(
      'NOT_CIPHERTEXT',
      `Column ${column.table.physical}.${column.physical} holds a value that is not a kysely-field-encryption ciphertext.`,
      { ...where, cause: undefined },
    )
  }
  const key = keys.get(column.table.logical, headerKeyVersion(bytes))!
  try {
    const plain = decryptValue(column.spec.codec, bytes, key, where)
    stats.decrypted += 1
    return plain
  } catch (error) {
    if (error instanceof FieldEncryptionError) throw error
    throw new DecryptionError(
      'DECRYPT_AUTH_FAILED',
      `Could not decrypt ${column.table.physical}.${column.physical}.`,
      { ...where, cause: error },
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
