import { timingSafeEqual } from 'node:crypto'
import type { Transaction } from 'kysely'
import { FieldEncryptionError, OperationError } from '../errors.js'
import { encryptColumn as encryptValueOf, indexValue } from '../plugin/resolve-values.js'
import { isUniqueViolation } from '../plugin/unique-violation.js'
import { migratingColumn } from '../schema/migration-ddl.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import { runBatchJob } from './batch-job.js'
import { columnPages, columnRowColumns, type PageCursor } from './column-pages.js'
import type { OpsContext } from './context.js'
import { pausing } from './job-batch.js'
import type { JobOptions, JobResult } from './job-engine.js'
import type { BatchCounts } from './job-store.js'
import { compareStored, plaintextValue } from './plaintext-value.js'
import { exactKeys, type KeyColumn, keyColumn } from './primary-key.js'
import { destroyKeySet, type KeySet, loadKeySet, type StoredRow } from './row-check.js'

/** Options of `encryptColumn`: those of every batch job, and a dry run. */
export interface EncryptColumnOptions extends JobOptions {
  /** Count the rows the backfill would write; write nothing, start no job. @default false */
  readonly dryRun?: boolean
  /** Rows per query of the dry run. @default 1000 */
  readonly pageSize?: number
}

/** What a dry run of `encryptColumn` found. */
export interface EncryptColumnDryRun {
  readonly table: string
  readonly column: string
  readonly dryRun: true
  readonly rows: number
  /**
   * Rows the backfill would write: a plaintext with no encrypted value, one that differs from it
   * or does not decrypt, or blind indexes not of the active index version.
   */
  readonly wouldRewrite: number
  /** Rows the backfill would count failed: a plaintext that is not a value of the column's codec. */
  readonly failed: number
  readonly stopped: boolean
}

const FAILED_KEYS_MAX = 100

/**
 * The backfill of a column under migration from plaintext (`kfe encrypt-column users email`):
 * fills the encrypted column and the blind indexes of every row from its plaintext column, on the
 * job engine (batches by primary key, one transaction each, checkpoint, several workers, resumable
 * after `kill -9`). A row whose encrypted value already decrypts to its plaintext, with indexes
 * of the active version, is left alone; so is a row with a NULL plaintext (written by a `cut-over`
 * deploy, or NULL in both). Each write is a compare-and-set on the plaintext and the encrypted
 * value read: a row the application changed meanwhile (its dual write) is read again, locked, and
 * redone. `json` columns, whose plaintext the databases cannot compare for equality, are read
 * locked (`FOR UPDATE`) instead.
 *
 * Run it once every process of the application is in the `dual-writing` phase: a process still in
 * `added` could update a plaintext after its row was backfilled (run the job again to repair).
 *
 * @returns the job's counters (`rewritten`: rows whose encrypted value was written); with
 *   `dryRun`, the rows it would write, and nothing written
 * @throws OperationError `MIGRATION_REFUSED` when the column's annotated phase is not
 *   `dual-writing`, `backfilled` or `cut-over`, or when the unique blind index refuses a value (two
 *   plaintext values equal once normalized); `JOB_PAUSED` when the key provider fails (resumable)
 * @throws ConfigError `CONFIG_INVALID` when the column is not under migration
 * @example
 * ```ts
 * await ops.encryptColumn('users', 'email', { workers: 4 })
 * // per row: update "users" set "email_encrypted" = $1, "email_bidx" = $2
 * //          where "id" = $3 and "email" = $4 and "email_encrypted" is null   (compare-and-set)
 * ```
 */
export async function encryptColumn(
  ctx: OpsContext,
  tableName: string,
  columnName: string,
  options: EncryptColumnOptions = {},
): Promise<JobResult | EncryptColumnDryRun> {
  const { info: table, col: column } = migratingColumn(ctx.schema, tableName, columnName)
  if (column.migration === 'added' || column.migration === 'dropped')
    throw new OperationError(
      'MIGRATION_REFUSED',
      `${table.physical}.${column.physical} is annotated '${column.migration}': the backfill runs while every process is 'dual-writing' (annotate it so and deploy first).`,
      { table: table.logical, column: column.logical },
    )
  if (options.dryRun === true) return dryRun(ctx, table, column, options)
  return runBatchJob(
    ctx,
    table,
    { kind: 'encrypt-column', subject: `${table.logical}.${column.logical}`, op: 'encrypt-column' },
    options,
    async (trx, batch, keys, failedKeys, key) => {
      const pk = key.name
      let q = trx.selectFrom(table.physical).select(columnRowColumns(column, key)).orderBy(pk)
      if (batch.lo !== null) q = q.where(pk, '>', batch.lo)
      if (batch.hi !== null) q = q.where(pk, '<=', batch.hi)
      if (column.spec.codec.kind === 'json') q = q.forUpdate()
      const rows = exactKeys(key, (await q.execute()) as StoredRow[])
      const counts: BatchCounts = { rows: rows.length, rewritten: 0, conflicts: 0, deleted: 0, failed: 0 }
      for (const read of rows) {
        await backfillRow(trx, table, column, key, keys, read, counts, failedKeys)
      }
      return counts
    },
  )
}

/** The dry run: reads every row by keyset pages, outside any transaction, and counts {@link rowUpdates}. */
async function dryRun(
  ctx: OpsContext,
  table: TableInfo,
  column: ColumnInfo,
  options: EncryptColumnOptions,
): Promise<EncryptColumnDryRun> {
  const key = await keyColumn(ctx, table)
  const keys = await pausing(table, () => loadKeySet(ctx, table))
  const result = { table: table.physical, column: column.physical, dryRun: true as const }
  const cursor: PageCursor = { rows: 0, stopped: false }
  let wouldRewrite = 0
  let failed = 0
  try {
    for await (const page of columnPages(ctx, table, column, key, 'encrypt-column', options, cursor)) {
      for (const row of page) {
        const updates = rowUpdates(table, column, keys, row)
        if (updates === 'failed') failed++
        else if (updates !== undefined) wouldRewrite++
      }
    }
  } finally {
    destroyKeySet(keys)
  }
  return { ...result, rows: cursor.rows, wouldRewrite, failed, stopped: cursor.stopped }
}

async function backfillRow(
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  trx: Transaction<any>,
  table: TableInfo,
  column: ColumnInfo,
  key: KeyColumn,
  keys: KeySet,
  read: StoredRow,
  counts: BatchCounts,
  failedKeys: unknown[],
): Promise<void> {
  const pk = key.name
  let row: StoredRow | undefined = read
  for (let attempt = 0; row !== undefined; attempt++) {
    const updates = rowUpdates(table, column, keys, row)
    if (updates === 'failed') {
      counts.failed++
      if (failedKeys.length < FAILED_KEYS_MAX) failedKeys.push(row[pk])
      return
    }
    if (updates === undefined) return
    let update = trx.updateTable(table.physical).set(updates).where(pk, '=', row[pk])
    const stored = row[column.stored]
    update =
      stored === null || stored === undefined
        ? update.where(column.stored, 'is', null)
        : update.where(column.stored, '=', stored)
    if (column.spec.codec.kind !== 'json') update = update.where(column.physical, '=', row[column.physical])
    let result: { numUpdatedRows: bigint }
    try {
      result = await update.executeTakeFirst()
    } catch (error) {
      if (isUniqueViolation(error))
        throw new OperationError(
          'MIGRATION_REFUSED',
          `The unique blind index of ${table.physical}.${column.physical} refused a row's value: two rows hold values equal once normalized. Resolve the duplicate in the plaintext column, then run the job again.`,
          { cause: error, table: table.logical, column: column.logical },
        )
      throw error
    }
    if (result.numUpdatedRows > 0n) {
      counts.rewritten++
      return
    }
    // The application wrote the row after we read it: read it again, locked, and redo it.
    counts.conflicts++
    if (attempt >= 3)
      throw new OperationError('OPS_INVALID', `A row of ${table.physical} kept changing.`, {
        table: table.logical,
      })
    const again = (await trx
      .selectFrom(table.physical)
      .select(columnRowColumns(column, key))
      .where(pk, '=', row[pk])
      .forUpdate()
      .execute()) as StoredRow[]
    row = exactKeys(key, again)[0]
    if (row === undefined) counts.deleted++
  }
}

/**
 * The writes that give `row` its encrypted value and indexes under the active versions; undefined
 * when it needs none (NULL plaintext, or already equal with active indexes); `failed` when its
 * plaintext is not a value of the codec or its encrypted value does not decrypt.
 */
function rowUpdates(
  table: TableInfo,
  column: ColumnInfo,
  keys: KeySet,
  row: StoredRow,
): Record<string, Buffer> | undefined | 'failed' {
  let value: unknown
  try {
    value = plaintextValue(column, row[column.physical])
  } catch {
    return 'failed'
  }
  if (value === null) return undefined
  if (!column.spec.codec.is(value)) return 'failed'
  const compared = compareStored(column, keys, row[column.stored], value)
  // A stored value that does not decrypt is overwritten from the plaintext, which is authoritative
  // until cut-over; so is one that decrypts to another value (written by a process in `added`).
  const updates: Record<string, Buffer> = {}
  const dataKey = keys.data.get(keys.activeData)!
  const indexKey = keys.index.get(keys.activeIndex)!
  let stale = compared !== 'equal'
  const indexes: Record<string, Buffer> = {}
  try {
    for (const spec of column.spec.indexes) {
      const expected = indexValue(indexKey, table.indexColumn(spec.name)!, value)
      indexes[spec.name] = expected
      const have = row[spec.name]
      if (
        !(have instanceof Uint8Array) ||
        have.length !== expected.length ||
        !timingSafeEqual(have, expected)
      )
        stale = true
    }
    if (!stale) return undefined
    updates[column.stored] = encryptValueOf(dataKey, column, value)
  } catch (error) {
    if (error instanceof FieldEncryptionError) return 'failed'
    throw error
  }
  return { ...updates, ...indexes }
}
