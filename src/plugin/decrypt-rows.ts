import { timingSafeEqual } from 'node:crypto'
import { DecryptionError, FieldEncryptionError } from '../errors.js'
import { decryptValue } from '../fields/field-cipher.js'
import { looksLikeCiphertext, readHeader } from '../fields/format.js'
import type { KeyMaterial } from '../keys/key-material.js'
import type { KeyRing } from '../keys/key-ring.js'
import type { ColumnInfo } from '../schema/schema.js'
import type { QueryPlan } from './plan.js'
import { indexInput } from './resolve-values.js'

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
 * Keys: one lookup per distinct (table, key version) in the batch, fetched before any row is
 * decrypted, so a batch costs no more provider calls than it has key versions.
 *
 * @returns the rows to hand back (the same array when nothing was filtered)
 * @throws DecryptionError `NOT_CIPHERTEXT`, `DECRYPT_AUTH_FAILED`, `WRONG_KEY`, … with table and column
 */
export async function decryptRows<R extends Record<string, unknown>>(
  ring: KeyRing,
  plan: QueryPlan,
  rows: R[],
  stats: DecryptStats,
): Promise<R[]> {
  if (rows.length === 0 || plan.outputs.size === 0) return rows
  const outputs = [...plan.outputs]
  // Gather the key versions this batch needs.
  const needed = new Map<string, { table: string; version: number }>()
  for (const row of rows) {
    for (const [key, column] of outputs) {
      const bytes = asBytes(row[key])
      if (bytes === undefined || !looksLikeCiphertext(bytes)) continue
      const { keyVersion } = readHeader(bytes, { table: column.table.logical, column: column.logical })
      needed.set(`${column.table.logical}\0${keyVersion}`, {
        table: column.table.logical,
        version: keyVersion,
      })
    }
  }
  const keys = new Map<string, KeyMaterial>()
  await Promise.all(
    [...needed].map(async ([id, ref]) => {
      keys.set(id, await ring.key({ logicalTable: ref.table, purpose: 'data', version: ref.version }))
    }),
  )
  for (const row of rows) {
    for (const [key, column] of outputs) {
      const value = row[key]
      if (value === null || value === undefined) continue
      ;(row as Record<string, unknown>)[key] = decryptOne(column, value, keys, stats)
    }
  }
  if (plan.postFilters.length === 0) return rows
  const kept = rows.filter((row) => {
    for (const filter of plan.postFilters) {
      const stored = row[filter.hidden]
      if (stored === null || stored === undefined) return false
      const actual = indexInput(filter.index, stored)
      const match = filter.probes.some((p) => {
        const wanted = indexInput(filter.index, p.reveal())
        return wanted.length === actual.length && timingSafeEqual(wanted, actual)
      })
      if (!match) return false
    }
    return true
  })
  stats.falsePositives += rows.length - kept.length
  for (const row of kept) for (const filter of plan.postFilters) delete row[filter.hidden]
  return kept
}

function decryptOne(
  column: ColumnInfo,
  value: unknown,
  keys: ReadonlyMap<string, KeyMaterial>,
  stats: DecryptStats,
): unknown {
  const where = { table: column.table.logical, column: column.logical }
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
  const { keyVersion } = readHeader(bytes, where)
  const key = keys.get(`${column.table.logical}\0${keyVersion}`)!
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
