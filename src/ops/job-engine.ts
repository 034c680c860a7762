import { hostname } from 'node:os'
import type { Transaction } from 'kysely'
import { scrubDriverError } from '../driver-errors.js'
import { KeyError, OperationError } from '../errors.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { pausing, runOneBatch } from './job-batch.js'
import type { BatchRunner, JobSpec } from './job-spec.js'
import { type BatchCounts, type JobStart, JobStore } from './job-store.js'
import { KeySnapshot } from './key-snapshot.js'
import { exactKeys, keyColumn } from './primary-key.js'
import { type RunOptions, report, sleep } from './progress.js'
import { destroyKeySet, loadKeySet, type StoredRow } from './row-check.js'

/** Backoff of a worker that found no batch free while some are left (held by others), in ms. */
const IDLE_MIN_MS = 10
const IDLE_MAX_MS = 200

/** Options of a batch job (`reencrypt`, `encryptColumn`). */
export interface JobOptions extends RunOptions {
  /**
   * Rows per batch, and per transaction. Larger batches cost fewer round trips but hold their
   * transaction (and its compare-and-set row locks) longer; a batch of 500 rows or more is written
   * in parts of 250, whose row locks are held until the batch commits. @default 1000
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
  /**
   * Plan the job anew instead of resuming an unfinished one (its checkpoint is dropped, and its
   * `replaced` progress reported): every row is read again. For a backfill resumed after a
   * rollback to `added`, whose processes changed plaintexts in batches already done. @default false
   */
  readonly restart?: boolean
  /**
   * Only join the job of this table that is running towards the active versions (planned by
   * another run; an interrupted one is resumed): plan nothing, and return at once, with nothing
   * done, when there is none (no job, a finished one, one towards versions a rotation replaced).
   * For workers started once another run has planned the job (`kfe reencrypt --processes`, or a
   * fleet whose planner runs first). @default false
   */
  readonly joinOnly?: boolean
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
  /** Rows this process could not read (a ciphertext that does not decrypt, a value that is not ciphertext). */
  readonly failed: number
  /**
   * Rows of shredded tenants this process read (per-tenant keys): unreadable by design, left as
   * they are, never counted in `failed`.
   */
  readonly shredded: number
  /** Primary keys of the rows this process could not read (first 100). */
  readonly failedKeys: readonly unknown[]
  /**
   * Rows the job could not read over all its runs and workers, earlier (interrupted) runs included:
   * a resumed run does not read those rows again, so this, not `failed`, says whether the job failed.
   */
  readonly jobFailed: number
  /** The key versions the job moves rows onto (the active ones when it was planned). */
  readonly targets: { readonly data: number; readonly index: number }
  /**
   * An interrupted job this call did not resume because it moved rows onto other versions than the
   * active ones (a rotation happened since): its targets and progress. A new job was planned.
   */
  readonly replaced: JobStart['replaced']
  /** True when stopped by the signal: the checkpoint is saved; a new run resumes. */
  readonly stopped: boolean
  /** Batches left in the job (0 once it is done). */
  readonly remainingBatches: number
}

/**
 * The job options with their defaults, checked: called by every operation that runs a job before
 * it changes anything (`rotate` stages and activates a key before its re-encryption starts).
 * @internal
 * @throws OperationError `OPS_INVALID` for a batch size that is not a positive integer, workers
 *   outside 1..64, a rate that is not a number of zero or more, or `joinOnly` with `restart`
 */
export function checkJobOptions(options: JobOptions): { batchSize: number; workers: number } {
  const batchSize = options.batchSize ?? 1000
  const workers = options.workers ?? 1
  if (!Number.isSafeInteger(batchSize) || batchSize < 1)
    throw new OperationError('OPS_INVALID', `batchSize must be a positive integer, got ${batchSize}.`)
  if (!Number.isSafeInteger(workers) || workers < 1 || workers > 64)
    throw new OperationError('OPS_INVALID', `workers must be an integer from 1 to 64, got ${workers}.`)
  if (options.joinOnly === true && options.restart === true)
    throw new OperationError(
      'OPS_INVALID',
      'joinOnly plans nothing and restart plans anew: give one of them.',
    )
  const rate = options.maxRowsPerSecond
  if (rate !== undefined && !(typeof rate === 'number' && Number.isFinite(rate) && rate >= 0))
    throw new OperationError('OPS_INVALID', `maxRowsPerSecond must be a number of 0 or more, got ${rate}.`)
  return { batchSize, workers }
}

/**
 * Runs a batch job on `table` until no batch is left, cooperating with every other worker on the
 * same job: keyset batches by primary key planned once, one transaction per batch, batched
 * compare-and-set writes, the batch's checkpoint committed with its rows, batches claimed with
 * `FOR UPDATE SKIP LOCKED` by any number of workers here and elsewhere. `spec` says what a batch
 * reads and writes (re-encryption, the backfill of a column migrating from plaintext). The job
 * records its targets (the active data and index versions): a run joins a job only when those are
 * still the active versions, and otherwise replaces it with a new one (`replaced` in the result).
 * @internal
 * @throws OperationError `JOB_PAUSED` when the key provider fails: nothing of the running batch was
 *   written, the checkpoint stands, a later run resumes.
 */
export async function runJob(
  ctx: OpsContext,
  table: TableInfo,
  spec: JobSpec,
  options: JobOptions,
): Promise<JobResult> {
  const { batchSize, workers } = checkJobOptions(options)
  const key = await keyColumn(ctx, table)
  const pk = key.name
  const jobs = new JobStore(ctx)
  await jobs.ensureSchema()
  // By the database's clock, as the job's finished_at is (see JobStore.now).
  const since = await jobs.now()
  // Keys first: a provider that is down stops the job before anything is planned.
  destroyKeySet(
    await pausing(table, () =>
      spec.loadKeys === undefined ? loadKeySet(ctx, table) : spec.loadKeys([], false),
    ),
  )
  const targets = await (spec.targets === undefined ? activeTargets(ctx, table) : spec.targets())
  const progress = (phase: string, done: number, total: number | undefined) =>
    report(options, { op: spec.op, table: table.physical, phase, done, total, unit: 'batches' })
  // biome-ignore lint/suspicious/noExplicitAny: any database type (the job store's own transactions).
  const plan = async (trx: Transaction<any>) => {
    const bounds: Array<{ lo: unknown; hi: unknown }> = []
    let lo: unknown = null
    for (;;) {
      let q = trx
        .selectFrom(table.physical)
        .select(key.selection)
        .orderBy(key.order)
        .limit(1)
        .offset(batchSize - 1)
      if (lo !== null) q = q.where(pk, '>', lo)
      if (spec.where !== undefined) q = q.where(spec.where)
      const row = exactKeys(key, (await q.execute()) as StoredRow[])[0]
      if (row === undefined) {
        bounds.push({ lo, hi: null })
        return bounds
      }
      bounds.push({ lo, hi: row[pk] })
      lo = row[pk]
    }
  }
  let start: JobStart
  if (options.joinOnly === true) {
    progress('joining', 0, undefined)
    const running = await jobs.running(spec.kind, spec.subject, targets, spec.generation)
    if (running === undefined) {
      const id = `${spec.kind}:${spec.subject}`
      return nothingJoined(id, table, targets, await jobs.remaining(id))
    }
    start = { id: running, created: false, replaced: undefined }
  } else {
    progress('planning', 0, undefined)
    start = await jobs.startOrJoin(
      spec.kind,
      spec.subject,
      // Restarting: no job, however recent, is joined.
      options.restart === true ? null : since,
      targets,
      plan,
      spec.generation,
    )
  }
  const { id, replaced } = start
  if (replaced !== undefined) {
    progress(`replaced ${replacedJobText(replaced, targets)}`, 0, undefined)
  }
  const total = (await jobs.list(spec.subject)).find((j) => j.id === id)?.totalBatches
  let done = (total ?? 0) - (await jobs.remaining(id))
  // Planned or joined: workers elsewhere can join it now (what `kfe … --processes` waits for).
  progress('planned', done, total)
  const totals: BatchCounts = { rows: 0, rewritten: 0, conflicts: 0, deleted: 0, failed: 0, shredded: 0 }
  const failedKeys: unknown[] = []
  let batches = 0
  const started = performance.now()
  const base = options.workerName ?? `${hostname()}:${process.pid}`
  const runner = (worker: string): BatchRunner => ({
    ctx,
    jobs,
    table,
    spec,
    key,
    jobId: id,
    worker,
    failedKeys,
    keys: new KeySnapshot(ctx, table.logical),
  })
  const add = (counts: BatchCounts) => {
    batches++
    for (const k of Object.keys(totals) as (keyof BatchCounts)[]) totals[k] += counts[k]
  }

  // Stops every worker after its batch: the caller's signal, or the failure of one worker (the
  // others must not go on writing after the call has failed and the job is marked stopped).
  const halt = new AbortController()
  const onStop = () => halt.abort()
  if (options.signal?.aborted) halt.abort()
  else options.signal?.addEventListener('abort', onStop, { once: true })
  const work = async (run: BatchRunner) => {
    let idle = IDLE_MIN_MS
    for (;;) {
      if (halt.signal.aborted) return
      const counts = await runOneBatch(run)
      if (counts === undefined) {
        // Nothing free to claim: the job is done, or every batch left is held, by a worker here
        // or elsewhere, or for an instant by `status`'s probe. Ask again shortly while any is
        // left (a worker that returned here left the rest of the job to the slow loop below).
        if ((await jobs.remaining(id)) === 0) return
        idle = Math.min(IDLE_MAX_MS, idle * 2)
        if (await sleep(idle / 2 + Math.random() * (idle / 2), halt.signal)) return
        continue
      }
      idle = IDLE_MIN_MS
      add(counts)
      progress('batch', ++done, total)
      if (options.maxRowsPerSecond !== undefined && options.maxRowsPerSecond > 0) {
        const due = (totals.rows / options.maxRowsPerSecond) * 1000 - (performance.now() - started)
        if (due > 0 && (await sleep(due, halt.signal))) return
      }
    }
  }
  const worker = async (n: number) => {
    try {
      await work(runner(workers === 1 ? base : `${base}#${n}`))
    } catch (error) {
      halt.abort()
      throw error
    }
  }
  let remaining: number
  try {
    // Every worker ends (after its batch) before the call does, failed or not.
    const ended = await Promise.allSettled(Array.from({ length: workers }, (_, i) => worker(i + 1)))
    const failed = ended.find((e): e is PromiseRejectedResult => e.status === 'rejected')
    if (failed !== undefined) throw failed.reason
    remaining = await jobs.remaining(id)
    // Batches still claimed by live workers elsewhere: wait for them (a dead worker's lock is
    // released with its connection, and its batch is claimed again here).
    while (remaining > 0 && !options.signal?.aborted) {
      if (await sleep(200, options.signal)) break
      const more = await runOneBatch(runner(base))
      if (more !== undefined) add(more)
      remaining = await jobs.remaining(id)
    }
  } catch (error) {
    // Stopped by the key provider or an error: status reports the job as interrupted at once.
    await jobs.markStopped(id).catch(() => undefined)
    // A failed write's driver error holds the batch's ciphertexts (mysql2's `sql`).
    scrubDriverError(error)
    throw error
  } finally {
    options.signal?.removeEventListener('abort', onStop)
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

/**
 * The result of a `joinOnly` run that found no running job to join: nothing done, and the batches
 * the job of that id has left (0 when it finished).
 */
function nothingJoined(
  jobId: string,
  table: TableInfo,
  targets: { data: number; index: number },
  remainingBatches: number,
): JobResult {
  return {
    jobId,
    table: table.physical,
    planned: false,
    batches: 0,
    rows: 0,
    rewritten: 0,
    conflicts: 0,
    deleted: 0,
    failed: 0,
    shredded: 0,
    failedKeys: [],
    jobFailed: 0,
    targets,
    replaced: undefined,
    stopped: false,
    remainingBatches,
  }
}

/**
 * What a run says of the interrupted job it replaced (`replaced` of {@link JobResult}) and the new
 * one (`targets`), for a progress step or the command line.
 */
export function replacedJobText(
  replaced: NonNullable<JobStart['replaced']>,
  targets: { readonly data: number; readonly index: number },
): string {
  const progress = `${replaced.doneBatches}/${replaced.totalBatches} batches done`
  // 0/0: a whole-table job over per-tenant keys (each row onto its own tenant's active versions).
  if (targets.data === 0 && targets.index === 0)
    return `an unfinished job over every tenant (${progress}): a tenant's keys were rotated since; a new job was planned`
  return `an unfinished job towards data v${replaced.targets.data ?? '?'} / index v${replaced.targets.index ?? '?'} (${progress}): the active versions changed since; a new job towards data v${targets.data} / index v${targets.index} was planned`
}

/** The active data and index versions, from the key table itself (not the ring's cached metadata). @internal */
export async function activeTargets(
  ctx: OpsContext,
  table: TableInfo,
): Promise<{ data: number; index: number }> {
  const versions = await ctx.store.list(table.logical)
  const active = (purpose: 'data' | 'index') =>
    versions.find((k) => k.purpose === purpose && k.state === 'active')?.version
  const data = active('data')
  const index = active('index')
  if (data === undefined || index === undefined)
    throw new KeyError(
      'KEY_NOT_FOUND',
      `${table.logical} has no active ${data === undefined ? 'data' : 'index'} key.`,
      {
        table: table.logical,
      },
    )
  return { data, index }
}
