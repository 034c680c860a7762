import { timingSafeEqual } from 'node:crypto'
import { isUniqueViolation } from '../driver-errors.js'
import { FieldEncryptionError, OperationError } from '../errors.js'
import { encryptColumn as encryptValueOf, indexValue } from '../plugin/resolve-values.js'
import { migratingColumn } from '../schema/migration-ddl.js'
import { plaintextValue } from '../schema/plaintext-value.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import { columnPages, columnRowColumns, type PageCursor, storedContext } from './column-pages.js'
import type { OpsContext } from './context.js'
import { pausing } from './job-batch.js'
import { type JobOptions, type JobResult, runJob } from './job-engine.js'
import type { JobSpec } from './job-spec.js'
import { PLAINTEXT_EXACT, plaintextCheck } from './plaintext-exact.js'
import { compareStored } from './plaintext-value.js'
import { type KeyColumn, keyColumn } from './primary-key.js'
import { destroyKeySet, type KeySet, type StoredRow } from './row-check.js'
import { contextMatch, planUnderTenant, tenantJobHooks } from './row-plan.js'
import { scanKeys, TenantKeySets } from './tenant-key-sets.js'

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
  /**
   * Rows the backfill would count failed: a plaintext that is not a value of the column's codec,
   * or one its driver reads rounded (a timestamp with microseconds, a MySQL `FLOAT`).
   */
  readonly failed: number
  readonly stopped: boolean
}

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
 * // per batch (PostgreSQL; per part of 250 rows in a batch of 500 or more), one compare-and-set statement:
 * //   update "users" as t set "email_bidx" = v.s0, "email_encrypted" = v.s1
 * //   from unnest($1::integer[], $2::bytea[], $3::bytea[], $4::text[], $5::bytea[])
 * //     with ordinality as v(k, s0, s1, m0, m1, ord)
 * //   where t."id" = v.k and t."email" is not distinct from v.m0
 * //     and t."email_encrypted" is not distinct from v.m1
 * //   returning v.ord
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
  const pk = ctx.primaryKey(table)
  const exact = await plaintextCheck(ctx, table, column)
  if (table.keyScope === undefined)
    return runJob(ctx, table, backfillSpec(ctx, table, column, pk, exact), options)
  // Per-tenant keys: each row under the keys of the tenant it holds, in one pass over the table.
  const tenants = new TenantKeySets(ctx, table)
  try {
    return await runJob(ctx, table, backfillSpec(ctx, table, column, pk, exact, tenants), options)
  } finally {
    tenants.destroy()
  }
}

/** The dry run: reads every row by keyset pages, outside any transaction, and counts {@link rowUpdates}. */
async function dryRun(
  ctx: OpsContext,
  table: TableInfo,
  column: ColumnInfo,
  options: EncryptColumnOptions,
): Promise<EncryptColumnDryRun> {
  const key = await keyColumn(ctx, table)
  const opened = await pausing(table, () => scanKeys(ctx, table))
  const plan = backfillPlan(table, column, ctx.primaryKey(table))
  const result = { table: table.physical, column: column.physical, dryRun: true as const }
  const cursor: PageCursor = { rows: 0, stopped: false }
  let wouldRewrite = 0
  let failed = 0
  try {
    for await (const page of columnPages(ctx, table, column, key, 'encrypt-column', options, cursor)) {
      const tenants = opened.tenants
      if (tenants !== undefined) await pausing(table, () => tenants.loadRows(page))
      for (const row of page) {
        // A shredded tenant's row is never written (nor counted failed); one still without keys fails.
        const kind = plan(row, opened.keys).kind
        if (kind === 'failed' || kind === 'keys') failed++
        else if (kind === 'write') wouldRewrite++
      }
    }
  } finally {
    destroyKeySet(opened.keys)
    opened.close()
  }
  return { ...result, rows: cursor.rows, wouldRewrite, failed, stopped: cursor.stopped }
}

/**
 * The backfill's steps: each row's plaintext, encrypted value and blind indexes read; the encrypted
 * value and indexes written from the plaintext when they are missing or stale, only if the row
 * still holds the encrypted value, the plaintext and the row context read (`json` plaintexts, which
 * have no `=`: the batch is read locked instead). The ciphertext is bound to the row's context
 * values (`context` table option), as the plugin's writes are. With per-tenant keys (`tenants`),
 * each row is written under the keys of the tenant it holds as read (loaded as batches name them);
 * a shredded tenant's rows are counted `shredded` and left as they are.
 */
function backfillSpec(
  ctx: OpsContext,
  table: TableInfo,
  column: ColumnInfo,
  pk: string,
  exact: KeyColumn['selection'] | undefined,
  tenants?: TenantKeySets,
): JobSpec {
  return {
    kind: 'encrypt-column',
    subject: `${table.logical}.${column.logical}`,
    op: 'encrypt-column',
    columns: (key) => columnRowColumns(column, key, ctx.family, exact),
    lockRead: column.spec.codec.kind === 'json',
    ...tenantJobHooks(tenants),
    plan: backfillPlan(table, column, pk),
    writeError: (error) =>
      isUniqueViolation(error)
        ? new OperationError(
            'MIGRATION_REFUSED',
            `The unique blind index of ${table.physical}.${column.physical} refused a row's value: two rows hold values equal once normalized. Resolve the duplicate in the plaintext column, then run the job again.`,
            { cause: error, table: table.logical, column: column.logical },
          )
        : undefined,
  }
}

/**
 * What a row needs of the backfill, under its own keys (its tenant's, per-tenant keys): the
 * {@link rowUpdates}, written only if the row still holds the encrypted value, the plaintext and
 * the row context read (a `json` plaintext, which has no `=`, is not matched: its batch is read
 * locked).
 */
function backfillPlan(table: TableInfo, column: ColumnInfo, pk: string): JobSpec['plan'] {
  const json = column.spec.codec.kind === 'json'
  return (row, keys) =>
    planUnderTenant(
      keys,
      row,
      (own) => {
        const updates = rowUpdates(table, column, own, row)
        if (updates === 'failed') return { kind: 'failed' }
        if (updates === undefined) return { kind: 'skip' }
        const match = contextMatch(table, pk, row)
        match[column.stored] = row[column.stored] ?? null
        if (!json) match[column.physical] = row[column.physical]
        return { kind: 'write', set: updates, match }
      },
      () => (row[column.physical] ?? null) === null && (row[column.stored] ?? null) === null,
    )
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
  let usable = true
  try {
    value = plaintextValue(column, row[column.physical], row[PLAINTEXT_EXACT])
    usable = value === null || column.spec.codec.is(value)
  } catch {
    usable = false
  }
  // The row's context, bound into the ciphertext written: a row without a usable one is not written.
  const context = storedContext(column, row)
  const stored = row[column.stored]
  if (!usable) {
    // From cut-over on, an encrypted value that decrypts counts, whatever the plaintext beside it
    // (see below); before, or without one, the row cannot be moved.
    if (column.migration !== 'cut-over' || stored === null || stored === undefined || context === 'failed')
      return 'failed'
    return compareStored(column, keys, stored, undefined, context) === 'equal' ? undefined : 'failed'
  }
  if (value === null) return undefined
  if (context === 'failed') return 'failed'
  const compared = compareStored(column, keys, stored, value, context)
  // From cut-over on the encrypted value is authoritative: a `dropped` process beside `cut-over`
  // ones writes it alone and leaves an older plaintext beside it. Only a missing one is filled
  // from the plaintext; one that does not decrypt is reported, never replaced by a guess.
  if (column.migration === 'cut-over' && compared !== 'missing' && compared !== 'equal')
    return compared === 'different' ? undefined : 'failed'
  // Before it, a stored value that does not decrypt is overwritten from the plaintext, which is
  // authoritative; so is one that decrypts to another value (written by a process in `added`).
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
    // A value already stored (only its indexes were stale) is not refused by maxBytes.
    updates[column.stored] = encryptValueOf(dataKey, column, value, context, compared !== 'equal')
  } catch (error) {
    if (error instanceof FieldEncryptionError) return 'failed'
    throw error
  }
  return { ...updates, ...indexes }
}
