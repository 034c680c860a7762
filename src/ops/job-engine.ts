import { hostname } from 'node:os'
import type { Transaction } from 'kysely'
import { type FieldEncryptionError, KeyProviderError, OperationError } from '../errors.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { type Batch, type BatchCounts, JobStore } from './job-store.js'
import { type RunOptions, report, sleep } from './progress.js'
import {
  checkRow,
  destroyKeySet,
  type KeySet,
  loadKeySet,
  type StoredRow,
  storedColumns,
} from './row-check.js'

/** Options of a batch job (`reencrypt`). */
export interface JobOptions extends RunOptions {
  /**
   * Rows per batch, and per transaction. Larger batches cost fewer round trips but hold their
   * transaction (and its compare-and-set row locks) longer. @default 1000
   */
  readonly batchSize?: number
  /**
   * Workers started in this process, each on its own connection (the pool needs one more
   * connection than this). More workers may run in other processes or machines at once. @default 1
   */
  readonly workers?: number
  /** Throttle: at most this many rows per second over this process's workers. @default unlimited */
  readonly maxRowsPerSecond?: number
  /** Name recorded beside each batch this process completes. @default `<hostname>:<pid>` */
  readonly workerName?: string
}

/** Outcome of a batch job. */
export interface JobResult {
  readonly jobId: string
  /** Physical table. */
  readonly table: string
  /** Whether this call planned the job (false: it joined or resumed one). */
  readonly planned: boolean
  /** Batches this process completed. */
  readonly batches: number
  /** Rows read by this process. */
  readonly rows: number
  /** Rows written onto the active versions. */
  readonly rewritten: number
  /**
   * Rows the application changed between the job's read and its write: their write was skipped
   * (compare-and-set) and the row was read again, locked, and handled.
   */
  readonly conflicts: number
  /** Rows deleted by the application while the job was at them. */
  readonly deleted: number
  /** Rows that could not be read (a ciphertext that does not decrypt, a value that is not ciphertext). */
  readonly failed: number
  /** Primary keys of failed rows (first 100). */
  readonly failedKeys: readonly unknown[]
  /** True when stopped by the signal: the checkpoint is saved; a new run resumes. */
  readonly stopped: boolean
  /** Batches left in the job (0 once it is done). */
  readonly remainingBatches: number
}

const FAILED_KEYS_MAX = 100

/** Thrown inside a batch's transaction when a row names a key version this worker has not loaded. */
class NeedsKeys extends Error {}

/**
 * Runs the re-encryption job on `table` until no batch is left, cooperating with every other
 * worker on the same job: keyset batches by primary key, one transaction per batch, compare-and-set
 * writes, the batch's checkpoint committed with its rows. @internal
 * @throws OperationError `JOB_PAUSED` when the key provider fails: nothing of the running batch was
 *   written, the checkpoint stands, a later run resumes.
 */
export async function runReencryptJob(
  ctx: OpsContext,
  table: TableInfo,
  options: JobOptions,
): Promise<JobResult> {
  const batchSize = options.batchSize ?? 1000
  const workers = options.workers ?? 1
  if (!Number.isSafeInteger(batchSize) || batchSize < 1)
    throw new OperationError('OPS_INVALID', `batchSize must be a positive integer, got ${batchSize}.`)
  if (!Number.isSafeInteger(workers) || workers < 1 || workers > 64)
    throw new OperationError('OPS_INVALID', `workers must be an integer from 1 to 64, got ${workers}.`)
  const pk = ctx.primaryKey(table)
  const jobs = new JobStore(ctx)
  await jobs.ensureSchema()
  const since = new Date()
  // Keys first: a provider that is down stops the job before anything is planned.
  destroyKeySet(await pausing(table, () => loadKeySet(ctx, table)))
  report(options, {
    op: 'reencrypt',
    table: table.physical,
    phase: 'planning',
    done: 0,
    total: undefined,
    unit: 'batches',
  })
  const { id, created } = await jobs.startOrJoin('reencrypt', table.logical, since, async (trx) => {
    const bounds: Array<{ lo: unknown; hi: unknown }> = []
    let lo: unknown = null
    for (;;) {
      let q = trx
        .selectFrom(table.physical)
        .select(pk)
        .orderBy(pk)
        .limit(1)
        .offset(batchSize - 1)
      if (lo !== null) q = q.where(pk, '>', lo)
      const row = (await q.executeTakeFirst()) as StoredRow | undefined
      if (row === undefined) {
        bounds.push({ lo, hi: null })
        return bounds
      }
      bounds.push({ lo, hi: row[pk] })
      lo = row[pk]
    }
  })
  const total = (await jobs.list(table.logical)).find((j) => j.id === id)?.totalBatches
  let done = (total ?? 0) - (await jobs.remaining(id))
  const totals: BatchCounts = { rows: 0, rewritten: 0, conflicts: 0, deleted: 0, failed: 0 }
  const failedKeys: unknown[] = []
  let batches = 0
  const started = performance.now()
  const base = options.workerName ?? `${hostname()}:${process.pid}`

  const worker = async (n: number) => {
    const name = workers === 1 ? base : `${base}#${n}`
    for (;;) {
      if (options.signal?.aborted) return
      let counts: BatchCounts | undefined
      for (let attempt = 0; ; attempt++) {
        const keys = await pausing(table, () => loadKeySet(ctx, table))
        try {
          counts = await ctx.db
            .transaction()
            .execute((trx) => runBatch(jobs, trx, table, pk, id, keys, name, attempt > 0, failedKeys))
          destroyKeySet(keys)
          break
        } catch (error) {
          destroyKeySet(keys)
          if (error instanceof NeedsKeys && attempt === 0) {
            ctx.ring.refresh()
            continue
          }
          // A deadlock or serialization failure rolled the batch back: it is safe to run again.
          if (isRetryable(error) && attempt < 5) continue
          throw error
        }
      }
      if (counts === undefined) return
      batches++
      done++
      for (const k of Object.keys(totals) as (keyof BatchCounts)[]) totals[k] += counts[k]
      report(options, {
        op: 'reencrypt',
        table: table.physical,
        phase: 'batch',
        done,
        total,
        unit: 'batches',
      })
      if (options.maxRowsPerSecond !== undefined && options.maxRowsPerSecond > 0) {
        const due = (totals.rows / options.maxRowsPerSecond) * 1000 - (performance.now() - started)
        if (due > 0 && (await sleep(due, options.signal))) return
      }
    }
  }
  await Promise.all(Array.from({ length: workers }, (_, i) => worker(i + 1)))
  let remaining = await jobs.remaining(id)
  // Batches still claimed by live workers elsewhere: wait for them (a dead worker's lock is released
  // with its connection, and its batch is claimed again by the loop above on the next run).
  while (remaining > 0 && !options.signal?.aborted) {
    if (await sleep(200, options.signal)) break
    const again = await pausing(table, () => loadKeySet(ctx, table))
    const more = await ctx.db
      .transaction()
      .execute((trx) => runBatch(jobs, trx, table, pk, id, again, base, true, failedKeys))
      .finally(() => destroyKeySet(again))
    if (more !== undefined) {
      batches++
      for (const k of Object.keys(totals) as (keyof BatchCounts)[]) totals[k] += more[k]
    }
    remaining = await jobs.remaining(id)
  }
  if (remaining === 0) await jobs.finish(id)
  return {
    jobId: id,
    table: table.physical,
    planned: created,
    batches,
    ...totals,
    failedKeys,
    stopped: options.signal?.aborted === true && remaining > 0,
    remainingBatches: remaining,
  }
}

async function runBatch(
  jobs: JobStore,
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  trx: Transaction<any>,
  table: TableInfo,
  pk: string,
  jobId: string,
  keys: KeySet,
  worker: string,
  missingIsFailure: boolean,
  failedKeys: unknown[],
): Promise<BatchCounts | undefined> {
  const batch: Batch | undefined = await jobs.claim(trx, jobId)
  if (batch === undefined) return undefined
  const columns = storedColumns(table, pk)
  let q = trx.selectFrom(table.physical).select(columns).orderBy(pk)
  if (batch.lo !== null) q = q.where(pk, '>', batch.lo)
  if (batch.hi !== null) q = q.where(pk, '<=', batch.hi)
  const rows = (await q.execute()) as StoredRow[]
  const counts: BatchCounts = { rows: rows.length, rewritten: 0, conflicts: 0, deleted: 0, failed: 0 }
  for (const read of rows) {
    let row: StoredRow | undefined = read
    for (let attempt = 0; row !== undefined; attempt++) {
      const check = checkRow(table, keys, row, true)
      if (!missingIsFailure && check.failures.some((f) => f.endsWith(': KEY_NOT_FOUND')))
        throw new NeedsKeys()
      if (check.failures.some((f) => !f.endsWith('INDEX_MISMATCH') && !f.endsWith('STALE_INDEX'))) {
        counts.failed++
        if (failedKeys.length < FAILED_KEYS_MAX) failedKeys.push(row[pk])
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
      row = (await trx
        .selectFrom(table.physical)
        .select(columns)
        .where(pk, '=', row[pk])
        .forUpdate()
        .executeTakeFirst()) as StoredRow | undefined
      if (row === undefined) counts.deleted++
    }
  }
  await jobs.complete(trx, batch, counts, worker)
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

function isRetryable(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return e?.code === '40P01' || e?.code === '40001' || e?.errno === 1213 || e?.errno === 1205
}
