import { hostname } from 'node:os'
import type { Transaction } from 'kysely'
import { OperationError } from '../errors.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { pausing } from './job-batch.js'
import { activeTargets, type JobOptions, type JobResult } from './job-engine.js'
import { type Batch, type BatchCounts, JobStore } from './job-store.js'
import { exactKeys, type KeyColumn, keyColumn } from './primary-key.js'
import { report, sleep } from './progress.js'
import { destroyKeySet, type KeySet, loadKeySet, type StoredRow } from './row-check.js'

/** The work of one batch: its rows' writes, in the batch's transaction. @internal */
export type BatchWork = (
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  trx: Transaction<any>,
  batch: Batch,
  keys: KeySet,
  failedKeys: unknown[],
  key: KeyColumn,
) => Promise<BatchCounts>

/** What names a job and its progress. @internal */
export interface BatchJobSpec {
  /** Job kind (`encrypt-column`). */
  readonly kind: string
  /** What the job row records as its subject: the logical table, or `table.column`. */
  readonly subject: string
  /** `op` of the progress events. */
  readonly op: string
}

/**
 * Runs a batch job on `table` until no batch is left, with the job engine's contract (see
 * {@link JobOptions}): keyset batches by primary key planned once, one transaction per batch,
 * the batch's checkpoint committed with its rows, batches claimed with `FOR UPDATE SKIP LOCKED`
 * by any number of workers here and elsewhere. `work` does a batch's rows. @internal
 * @throws OperationError `JOB_PAUSED` when the key provider fails (resumable)
 */
export async function runBatchJob(
  ctx: OpsContext,
  table: TableInfo,
  spec: BatchJobSpec,
  options: JobOptions,
  work: BatchWork,
): Promise<JobResult> {
  const batchSize = options.batchSize ?? 1000
  const workers = options.workers ?? 1
  if (!Number.isSafeInteger(batchSize) || batchSize < 1)
    throw new OperationError('OPS_INVALID', `batchSize must be a positive integer, got ${batchSize}.`)
  if (!Number.isSafeInteger(workers) || workers < 1 || workers > 64)
    throw new OperationError('OPS_INVALID', `workers must be an integer from 1 to 64, got ${workers}.`)
  const key = await keyColumn(ctx, table)
  const pk = key.name
  const jobs = new JobStore(ctx)
  await jobs.ensureSchema()
  const since = new Date()
  destroyKeySet(await pausing(table, () => loadKeySet(ctx, table)))
  // The versions the job writes with: an interrupted job planned under others is replaced.
  const targets = await activeTargets(ctx, table)
  const progress = (phase: string, done: number, total: number | undefined) =>
    report(options, { op: spec.op, table: table.physical, phase, done, total, unit: 'batches' })
  progress('planning', 0, undefined)
  const start = await jobs.startOrJoin(spec.kind, spec.subject, since, targets, async (trx) => {
    const bounds: Array<{ lo: unknown; hi: unknown }> = []
    let lo: unknown = null
    for (;;) {
      let q = trx
        .selectFrom(table.physical)
        .select(key.selection)
        .orderBy(pk)
        .limit(1)
        .offset(batchSize - 1)
      if (lo !== null) q = q.where(pk, '>', lo)
      const row = exactKeys(key, (await q.execute()) as StoredRow[])[0]
      if (row === undefined) {
        bounds.push({ lo, hi: null })
        return bounds
      }
      bounds.push({ lo, hi: row[pk] })
      lo = row[pk]
    }
  })
  const { id, replaced } = start
  const total = (await jobs.list(spec.subject)).find((j) => j.id === id)?.totalBatches
  let done = (total ?? 0) - (await jobs.remaining(id))
  const totals: BatchCounts = { rows: 0, rewritten: 0, conflicts: 0, deleted: 0, failed: 0 }
  const failedKeys: unknown[] = []
  let batches = 0
  const started = performance.now()
  const base = options.workerName ?? `${hostname()}:${process.pid}`
  const add = (counts: BatchCounts) => {
    batches++
    for (const k of Object.keys(totals) as (keyof BatchCounts)[]) totals[k] += counts[k]
  }
  /** Claims and runs one batch; undefined when none is left to claim. */
  const one = async (name: string): Promise<BatchCounts | undefined> => {
    for (let attempt = 0; ; attempt++) {
      const keys = await pausing(table, () => loadKeySet(ctx, table))
      try {
        return await ctx.db.transaction().execute(async (trx) => {
          const batch = await jobs.claim(trx, id)
          if (batch === undefined) return undefined
          const counts = await work(trx, batch, keys, failedKeys, key)
          await jobs.complete(trx, batch, counts, name)
          return counts
        })
      } catch (error) {
        // A deadlock or serialization failure rolled the batch back: it is safe to run again.
        if (isRetryable(error) && attempt < 5) continue
        throw error
      } finally {
        destroyKeySet(keys)
      }
    }
  }
  const worker = async (n: number) => {
    const name = workers === 1 ? base : `${base}#${n}`
    for (;;) {
      if (options.signal?.aborted) return
      const counts = await one(name)
      if (counts === undefined) return
      add(counts)
      progress('batch', ++done, total)
      if (options.maxRowsPerSecond !== undefined && options.maxRowsPerSecond > 0) {
        const due = (totals.rows / options.maxRowsPerSecond) * 1000 - (performance.now() - started)
        if (due > 0 && (await sleep(due, options.signal))) return
      }
    }
  }
  let remaining: number
  try {
    await Promise.all(Array.from({ length: workers }, (_, i) => worker(i + 1)))
    remaining = await jobs.remaining(id)
    // Batches still claimed by live workers elsewhere: wait for them (a dead worker's lock goes with
    // its connection, and the loop claims its batch again).
    while (remaining > 0 && !options.signal?.aborted) {
      if (await sleep(200, options.signal)) break
      const more = await one(base)
      if (more !== undefined) add(more)
      remaining = await jobs.remaining(id)
    }
  } catch (error) {
    // Stopped by the key provider or an error: status reports the job as interrupted at once.
    await jobs.markStopped(id).catch(() => undefined)
    throw error
  }
  if (remaining === 0) await jobs.finish(id)
  else await jobs.markStopped(id)
  const record = (await jobs.list(spec.subject)).find((j) => j.id === id)
  return {
    jobId: id,
    table: table.physical,
    planned: start.created,
    batches,
    ...totals,
    failedKeys,
    jobFailed: Math.max(record?.failed ?? 0, totals.failed),
    targets,
    replaced,
    stopped: options.signal?.aborted === true && remaining > 0,
    remainingBatches: remaining,
  }
}

function isRetryable(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return e?.code === '40P01' || e?.code === '40001' || e?.errno === 1213 || e?.errno === 1205
}
