import type { Transaction } from 'kysely'
import { type FieldEncryptionError, KeyProviderError, OperationError } from '../errors.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import type { Batch, BatchCounts, JobStore, JobTargets } from './job-store.js'
import { exactKeys, type KeyColumn } from './primary-key.js'
import {
  checkRow,
  destroyKeySet,
  type KeySet,
  loadKeySet,
  type StoredRow,
  storedColumns,
  unreadable,
} from './row-check.js'

const FAILED_KEYS_MAX = 100
/** Times a batch rolled back by a deadlock, a serialization failure or a snapshot conflict is run again. */
const RETRIES = 5

/** What a worker needs to run batches of one job. @internal */
export interface BatchRunner {
  readonly ctx: OpsContext
  readonly jobs: JobStore
  readonly table: TableInfo
  readonly key: KeyColumn
  readonly jobId: string
  /** Name recorded beside each batch. */
  readonly worker: string
  /** Primary keys of failed rows, filled up to 100. */
  readonly failedKeys: unknown[]
}

/** Thrown inside a batch's transaction when this worker's keys do not fit the batch: refresh, retry. */
class NeedsKeys extends Error {
  constructor(readonly targets?: JobTargets) {
    super('keys to reload')
  }
}

/**
 * Claims and runs one batch of the job in its own transaction, with fresh copies of the keys
 * (wiped after). Runs a batch again after a deadlock, a serialization failure or a MariaDB
 * snapshot-isolation conflict (all roll the whole batch back), and once after reloading the key
 * metadata when a row names an unknown version or the job's targets are not this worker's active
 * versions.
 * @returns the batch's counters, or undefined when no batch is free
 * @throws OperationError `JOB_PAUSED` when the key provider fails
 * @throws OperationError `JOB_TARGET_CHANGED` when the job's targets are still not the active
 *   versions after a reload (a rotation happened under it: run the job again)
 */
export async function runOneBatch(run: BatchRunner): Promise<BatchCounts | undefined> {
  let reloaded = false
  for (let attempt = 0; ; attempt++) {
    const keys = await pausing(run.table, () => loadKeySet(run.ctx, run.table))
    try {
      return await run.ctx.db.transaction().execute((trx) => runBatch(run, trx, keys, reloaded))
    } catch (error) {
      if (error instanceof NeedsKeys && !reloaded) {
        reloaded = true
        run.ctx.ring.refresh()
        continue
      }
      if (error instanceof NeedsKeys && error.targets !== undefined) {
        throw new OperationError(
          'JOB_TARGET_CHANGED',
          `The job on ${run.table.physical} moves rows onto data version ${error.targets.data} and index version ${error.targets.index}, which are no longer the active ones (a rotation happened meanwhile): run it again to start a job towards the active versions.`,
          { table: run.table.logical },
        )
      }
      if (isRetryable(error) && attempt < RETRIES) continue
      throw error
    } finally {
      destroyKeySet(keys)
    }
  }
}

async function runBatch(
  run: BatchRunner,
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  trx: Transaction<any>,
  keys: KeySet,
  reloaded: boolean,
): Promise<BatchCounts | undefined> {
  const { jobs, table, key } = run
  const pk = key.name
  const batch: Batch | undefined = await jobs.claim(trx, run.jobId)
  if (batch === undefined) return undefined
  // A worker writes only onto the versions the job was planned for; a stale key ring reloads.
  const targets = await jobs.targets(trx, run.jobId)
  if (targets.data !== keys.activeData || targets.index !== keys.activeIndex) throw new NeedsKeys(targets)
  const columns = storedColumns(table, key)
  let q = trx.selectFrom(table.physical).select(columns).orderBy(pk)
  if (batch.lo !== null) q = q.where(pk, '>', batch.lo)
  if (batch.hi !== null) q = q.where(pk, '<=', batch.hi)
  const rows = exactKeys(key, (await q.execute()) as StoredRow[])
  const counts: BatchCounts = { rows: rows.length, rewritten: 0, conflicts: 0, deleted: 0, failed: 0 }
  for (const read of rows) {
    let row: StoredRow | undefined = read
    for (let attempt = 0; row !== undefined; attempt++) {
      const check = checkRow(table, keys, row, true)
      if (!reloaded && check.failures.some((f) => f.endsWith(': KEY_NOT_FOUND'))) throw new NeedsKeys()
      if (unreadable(check)) {
        counts.failed++
        if (run.failedKeys.length < FAILED_KEYS_MAX) run.failedKeys.push(row[pk])
        break
      }
      if (Object.keys(check.updates).length === 0) break
      // Compare-and-set: written only if every ciphertext we rewrite is still the one we read.
      let update = trx.updateTable(table.physical).set(check.updates).where(pk, '=', row[pk])
      // …and the row context they are bound to is still the one we read (the application may
      // have moved the row to another context, rewriting its ciphertexts).
      for (const c of table.context) if (c !== pk) update = update.where(c, '=', row[c])
      for (const c of check.expect) {
        const was = row[c]
        update = was === null || was === undefined ? update.where(c, 'is', null) : update.where(c, '=', was)
      }
      const result = await update.executeTakeFirst()
      if (result.numUpdatedRows > 0n) {
        counts.rewritten++
        break
      }
      // The application wrote the row after we read it: read it again, locked, and redo it.
      counts.conflicts++
      if (attempt >= 3) throw new OperationError('OPS_INVALID', `A row of ${table.physical} kept changing.`)
      const again = await trx
        .selectFrom(table.physical)
        .select(columns)
        .where(pk, '=', row[pk])
        .forUpdate()
        .execute()
      row = exactKeys(key, again as StoredRow[])[0]
      if (row === undefined) counts.deleted++
    }
  }
  await jobs.complete(trx, batch, counts, run.worker)
  return counts
}

/** Runs `fn`; a key provider failure becomes the typed, resumable pause. */
export async function pausing<T>(table: TableInfo, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (error) {
    if (isProviderFailure(error)) {
      throw new OperationError(
        'JOB_PAUSED',
        `The key provider failed (${error.code}) while the job on ${table.physical} needed a key: it stopped after its last committed batch. Run it again to resume once the provider answers.`,
        { cause: error, table: table.logical },
      )
    }
    throw error
  }
}

/**
 * A key provider's failure. By code as well as by class: a CLI bundle and the application's config
 * may each load their own copy of this library's error classes.
 */
function isProviderFailure(error: unknown): error is FieldEncryptionError {
  if (error instanceof KeyProviderError) return true
  const e = error as { name?: unknown; code?: unknown } | null
  return e?.name === 'KeyProviderError' && typeof e.code === 'string'
}

/**
 * Errors after which the database rolled the whole batch back and running it again is safe:
 * PostgreSQL deadlock (40P01) and serialization failure (40001); MySQL/MariaDB deadlock (1213),
 * lock wait timeout (1205), and MariaDB's `ER_CHECKREAD` (1020, "Record has changed since last
 * read"), which InnoDB returns under `innodb_snapshot_isolation` (the default from MariaDB 11.6)
 * when the batch writes a row changed after its snapshot was taken.
 */
export function isRetryable(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return (
    e?.code === '40P01' ||
    e?.code === '40001' ||
    e?.errno === 1213 ||
    e?.errno === 1205 ||
    e?.errno === 1020 ||
    e?.code === 'ER_CHECKREAD'
  )
}
