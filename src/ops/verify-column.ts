import { timingSafeEqual } from 'node:crypto'
import { indexValue } from '../plugin/resolve-values.js'
import { migratingColumn } from '../schema/migration-ddl.js'
import type { MigrationPhase } from '../schema/migration-phase.js'
import { readState } from '../schema/migration-state.js'
import { plaintextValue } from '../schema/plaintext-value.js'
import { columnPages, type PageCursor, storedContext } from './column-pages.js'
import type { OpsContext } from './context.js'
import { PLAINTEXT_EXACT } from './plaintext-exact.js'
import { compareStored } from './plaintext-value.js'
import { keyColumn } from './primary-key.js'
import type { RunOptions } from './progress.js'
import { destroyKeySet } from './row-check.js'
import { scanKeys } from './tenant-key-sets.js'

/** One row that failed, by primary key; problems are `column: CODE`, never values. */
export interface VerifyFailure {
  readonly key: unknown
  readonly problems: readonly string[]
}

/** Options of `verifyColumn`. */
export interface VerifyColumnOptions extends RunOptions {
  /** Rows per query. @default 1000 */
  readonly pageSize?: number
  /** Failing rows listed in the result (all are counted). @default 100 */
  readonly maxListed?: number
  /** A table with per-tenant keys (`keyScope`): only this tenant's rows. @default every row */
  readonly tenant?: string | number | bigint | undefined
}

/** Outcome of `verifyColumn`: a column under migration, compared row by row with its plaintext. */
export interface VerifyColumnResult {
  readonly table: string
  readonly column: string
  readonly phase: MigrationPhase
  readonly rows: number
  /** Rows whose encrypted value decrypts to their plaintext and whose indexes match. */
  readonly equal: number
  /** Rows with a NULL plaintext: NULL in both, or written by a `cut-over` deploy (encrypted only, checked to decrypt). */
  readonly plaintextNull: number
  /** Rows with a plaintext value and no encrypted value (the backfill has not reached them). */
  readonly missing: number
  /**
   * Phases `cut-over` and `dropped` (before the drop step): rows whose encrypted value decrypts
   * while the plaintext beside it differs or is not a value of the codec: a `dropped` process
   * wrote the encrypted value alone, which is the one that counts from cut-over on. Not failures
   * (their blind indexes are checked by the table's own verify, not here).
   */
  readonly plaintextStale: number
  /** Rows whose encrypted value decrypts to another value, fails to decrypt, or whose index does not match. */
  readonly failed: number
  /** Failing and missing rows by primary key; problems are `column: CODE`, never values. */
  readonly failures: readonly VerifyFailure[]
  /** True when every row with a plaintext has its equal encrypted value and matching indexes. */
  readonly ok: boolean
  /** False when the plaintext column is gone (phase `dropped`): nothing to compare. */
  readonly compared: boolean
  readonly stopped: boolean
}

/**
 * Checks, row by row, that the encrypted value of a column under migration decrypts to the value
 * of its plaintext column (canonical encodings compared in constant time), bound to the row's
 * context values when the table has a row context, and that its blind
 * indexes equal their recomputation under one of the table's index key versions (a rotation may be under way). Read-only; pages by primary key
 * outside any transaction, so rows the application writes meanwhile may be seen either way.
 * Cost: one decryption and one HMAC per index per row.
 * @throws ConfigError `CONFIG_INVALID` when the column is not under migration
 * @example
 * ```ts
 * const r = await ops.verifyColumn('users', 'email')   // r.ok, r.missing, r.failed
 * ```
 */
export async function verifyColumn(
  ctx: OpsContext,
  tableName: string,
  columnName: string,
  options: VerifyColumnOptions = {},
): Promise<VerifyColumnResult> {
  const { info: table, col: column } = migratingColumn(ctx.schema, tableName, columnName)
  const phase = column.migration as MigrationPhase
  const state = await readState(ctx.db, table, column, phase)
  const base = { table: table.physical, column: column.physical, phase }
  if (!state.plaintextColumn || !state.encryptedColumns) {
    return {
      ...base,
      rows: 0,
      equal: 0,
      plaintextNull: 0,
      missing: 0,
      plaintextStale: 0,
      failed: 0,
      failures: [],
      ok: state.encryptedColumns,
      compared: false,
      stopped: false,
    }
  }
  const key = await keyColumn(ctx, table)
  const pk = key.name
  const opened = await scanKeys(ctx, table, options.tenant)
  const maxListed = options.maxListed ?? 100
  const failures: VerifyFailure[] = []
  const cursor: PageCursor = { rows: 0, stopped: false }
  let equal = 0
  let plaintextNull = 0
  let missing = 0
  let plaintextStale = 0
  let failed = 0
  const fail = (key: unknown, problems: string[]) => {
    if (failures.length < maxListed) failures.push({ key, problems })
  }
  try {
    for await (const page of columnPages(
      ctx,
      table,
      column,
      key,
      'verify',
      options,
      cursor,
      opened.tenants?.where,
    )) {
      await opened.tenants?.loadRows(page)
      for (const row of page) {
        const problems: string[] = []
        // Per-tenant keys: the row's own tenant's (a shredded tenant's row fails KEY_DESTROYED).
        const picked = opened.keys.tenants?.of(row) ?? { kind: 'keys', keys: opened.keys }
        if (picked.kind !== 'keys') {
          if (row[column.physical] === null && row[column.stored] === null) {
            plaintextNull++
            continue
          }
          failed++
          fail(row[pk], [
            `${column.stored}: ${picked.kind === 'shredded' ? 'KEY_DESTROYED' : 'KEY_NOT_FOUND'}`,
          ])
          continue
        }
        const keys = picked.keys
        const context = storedContext(column, row)
        let value: unknown
        let unusable = false
        try {
          value = plaintextValue(column, row[column.physical], row[PLAINTEXT_EXACT])
        } catch {
          unusable = true
        }
        const stored = row[column.stored]
        if (
          (phase === 'cut-over' || phase === 'dropped') &&
          stored !== null &&
          stored !== undefined &&
          (unusable ||
            (value !== null && compareStored(column, keys, stored, value, context) === 'different'))
        ) {
          // From cut-over on the encrypted value counts (a `dropped` process writes it alone, and
          // leaves an older plaintext beside it): it must decrypt.
          const c = compareStored(column, keys, stored, undefined, context)
          if (c === 'equal') plaintextStale++
          else {
            failed++
            fail(row[pk], [`${column.stored}: ${c.slice('failed: '.length)}`])
          }
          continue
        }
        if (unusable) problems.push(`${column.physical}: CODEC_INVALID_VALUE`)
        if (problems.length === 0 && value === null) {
          plaintextNull++
          if (stored !== null && stored !== undefined) {
            // Encrypted only (a cut-over write): it must at least decrypt.
            const c = compareStored(column, keys, stored, undefined, context)
            if (c.startsWith('failed')) problems.push(`${column.stored}: ${c.slice('failed: '.length)}`)
          }
        } else if (problems.length === 0) {
          const c = compareStored(column, keys, stored, value, context)
          if (c === 'missing') {
            missing++
            fail(row[pk], [`${column.stored}: MISSING`])
            continue
          }
          if (c === 'different') problems.push(`${column.stored}: PLAINTEXT_MISMATCH`)
          else if (c !== 'equal') problems.push(`${column.stored}: ${c.slice('failed: '.length)}`)
          for (const spec of column.spec.indexes) {
            // Any live index version the table holds (an index-key rotation may be under way); one
            // of a retired version is reported as such: searches no longer probe it.
            const have = row[spec.name]
            const found = [...keys.index.entries()].find(([, k]) => {
              const expected = indexValue(k, table.indexColumn(spec.name)!, value)
              return (
                have instanceof Uint8Array &&
                have.length === expected.length &&
                timingSafeEqual(have, expected)
              )
            })?.[0]
            if (found === undefined) problems.push(`${spec.name}: INDEX_MISMATCH`)
            else if (keys.retiredIndex.has(found)) problems.push(`${spec.name}: RETIRED_INDEX`)
          }
          if (problems.length === 0) equal++
        }
        if (problems.length > 0) {
          failed++
          fail(row[pk], problems)
        }
      }
    }
  } finally {
    destroyKeySet(opened.keys)
    opened.close()
  }
  return {
    ...base,
    rows: cursor.rows,
    equal,
    plaintextNull,
    missing,
    plaintextStale,
    failed,
    failures,
    ok: !cursor.stopped && missing === 0 && failed === 0,
    compared: true,
    stopped: cursor.stopped,
  }
}
