import { sql, type Transaction } from 'kysely'
import { type FieldEncryptionError, KeyProviderError, OperationError } from '../errors.js'
import type { TableInfo } from '../schema/schema.js'
import { type CasWrite, casWriteWith, type WithWrite } from './cas-write.js'
import type { BatchRunner } from './job-spec.js'
import type { Batch, BatchCounts, JobTargets } from './job-store.js'
import { exactKeys } from './primary-key.js'
import { isRetryable } from './retryable.js'
import { destroyKeySet, type KeySet, loadKeySet, type StoredRow } from './row-check.js'

const FAILED_KEYS_MAX = 100
/** Times a batch rolled back by a deadlock, a serialization failure or a snapshot conflict is run again. */
const RETRIES = 5
/** Rounds of compare-and-set a row may lose (the application rewriting it each time) before the batch fails. */
const CONFLICT_ROUNDS = 3
/**
 * Rows per write in a batch's first round: the database runs one part's write while the job plans
 * the next (see writeRound).
 */
const PART_ROWS = 250

/** Thrown inside a batch's transaction when this worker's keys do not fit the batch: refresh, retry. */
class NeedsKeys extends Error {
  constructor(
    readonly targets?: JobTargets,
    /** Tenants whose keys a row needs (per-tenant keys): loaded, then the batch runs again. */
    readonly tenants: readonly string[] = [],
  ) {
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
  let tenants: readonly string[] = []
  let fresh = false
  /** Tenants whose keys a round of this batch asked for (see the catch below). */
  const asked = new Set<string>()
  for (let attempt = 0, tenantRounds = 0; ; attempt++) {
    const keys = await pausing(run.table, () =>
      run.spec.loadKeys === undefined
        ? loadKeySet(run.keys.context(), run.table)
        : run.spec.loadKeys(tenants, fresh),
    )
    tenants = []
    fresh = false
    // The primary keys of this attempt's failed rows: the job's list takes them once the batch
    // commits, so a batch run again (keys reloaded, a deadlock) does not list a row twice.
    const failed: unknown[] = []
    try {
      const counts = await run.ctx.db
        .transaction()
        .execute((trx) => runBatch(run, trx, keys, reloaded, failed))
      for (const k of failed) if (run.failedKeys.length < FAILED_KEYS_MAX) run.failedKeys.push(k)
      return counts
    } catch (error) {
      // Rows of tenants whose keys this worker has not loaded: load them, run the batch again. A
      // tenant stays loaded, so a round that names a tenant not asked for before made progress: the
      // batch met new tenants (another worker may have taken the batch while this one loaded keys,
      // and the next attempt claims another). Rounds that name only tenants asked for before
      // (rows moved between tenants meanwhile) are bounded.
      if (error instanceof NeedsKeys && error.tenants.length > 0) {
        const progress = error.tenants.some((tenant) => !asked.has(tenant))
        for (const tenant of error.tenants) asked.add(tenant)
        if (progress || tenantRounds++ < RETRIES) {
          tenants = error.tenants
          continue
        }
      }
      if (error instanceof NeedsKeys && !reloaded) {
        fresh = true
        reloaded = true
        run.keys.reset()
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
      if (error instanceof NeedsKeys)
        throw new OperationError(
          'OPS_INVALID',
          `A batch of ${run.table.physical} kept meeting rows of tenants whose keys were just loaded (rows moving between tenants meanwhile): run the job again.`,
          { table: run.table.logical },
        )
      throw error
    } finally {
      destroyKeySet(keys)
    }
  }
}

/**
 * One batch, in `trx`: claim it, read its rows, plan each, write them with one compare-and-set
 * statement per part (see {@link writeRound}); the rows the application changed meanwhile (the
 * write skipped them) are read again, locked, planned and written again; then the checkpoint.
 */
async function runBatch(
  run: BatchRunner,
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  trx: Transaction<any>,
  keys: KeySet,
  reloaded: boolean,
  failed: unknown[],
): Promise<BatchCounts | undefined> {
  const { jobs, table, key, spec } = run
  const pk = key.name
  // Per-tenant keys (spec.loadKeys) are not one table's rows of the key table: their versions are
  // read per metadata TTL by the spec, and the claim carries no fingerprint.
  const perTenant = spec.loadKeys !== undefined
  const batch: Batch | undefined = await jobs.claim(trx, run.jobId, perTenant ? undefined : table.logical)
  if (batch === undefined) return undefined
  // The key table changed since this worker's view was loaded: reload it and run the batch again
  // (after a reload, a view that still differs hands the worker back to the ring's per-TTL reads).
  if (!perTenant && !run.keys.matches(batch.keys)) {
    if (!reloaded) throw new NeedsKeys()
    run.keys.fallBack()
  }
  const columns = spec.columns(key)
  let q = trx.selectFrom(table.physical).select(columns).orderBy(key.order)
  if (spec.where !== undefined) q = q.where(spec.where)
  if (batch.lo !== null) q = q.where(pk, '>', batch.lo)
  if (batch.hi !== null) q = q.where(pk, '<=', batch.hi)
  if (spec.lockRead === true) q = q.forUpdate()
  let pending = exactKeys(key, (await q.execute()) as StoredRow[])
  const counts: BatchCounts = {
    rows: pending.length,
    rewritten: 0,
    conflicts: 0,
    deleted: 0,
    failed: 0,
    shredded: 0,
  }
  // A worker writes only onto the versions the job was planned for: checked with the checkpoint;
  // when they are not its active ones the batch rolls back and a stale key ring reloads.
  const active = { data: keys.activeData, index: keys.activeIndex }
  const round: Round = { run, trx, keys, reloaded, counts, batch, active, failed }
  for (let n = 0; pending.length > 0; n++) {
    // The first round writes the batch in parts, so that the database runs one part's write while
    // this process plans the next; a later round (rows the application changed meanwhile) in one.
    const { skipped, checkpointed, writes } = await writeRound(
      round,
      n === 0 ? split(pending) : [pending],
      n === 0,
    )
    if (checkpointed === false) throw new NeedsKeys(await jobs.targets(trx, run.jobId))
    if (writes === 0) break
    if (skipped.length === 0) {
      // The checkpoint ran in the round's last write (PostgreSQL): nothing is left to record.
      if (checkpointed === true) return counts
      break
    }
    if (n >= CONFLICT_ROUNDS)
      throw new OperationError('OPS_INVALID', `A row of ${table.physical} kept changing.`, {
        table: table.logical,
      })
    // The application wrote these rows after we read them: read them again, locked, and redo them.
    const again = await trx
      .selectFrom(table.physical)
      .select(columns)
      .where(pk, 'in', skipped)
      .orderBy(key.order)
      .forUpdate()
      .execute()
    pending = exactKeys(key, again as StoredRow[])
    counts.deleted += skipped.length - pending.length
  }
  if (!(await jobs.complete(trx, batch, counts, run.worker, active)))
    throw new NeedsKeys(await jobs.targets(trx, run.jobId))
  return counts
}

/** What a round of a batch works with. */
interface Round {
  readonly run: BatchRunner
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  readonly trx: Transaction<any>
  readonly keys: KeySet
  readonly reloaded: boolean
  /** The batch's counters, updated by each round. */
  readonly counts: BatchCounts
  readonly batch: Batch
  readonly active: { readonly data: number; readonly index: number }
  /** The primary keys of the rows that failed in this attempt of the batch (see runOneBatch). */
  readonly failed: unknown[]
}

/** The rows of a batch's first round, in parts of {@link PART_ROWS} (the last part takes the remainder). */
function split(rows: readonly StoredRow[]): StoredRow[][] {
  const parts: StoredRow[][] = []
  for (let i = 0; i < rows.length; i += PART_ROWS) {
    parts.push(rows.slice(i, rows.length - i < 2 * PART_ROWS ? rows.length : i + PART_ROWS))
    if (rows.length - i < 2 * PART_ROWS) break
  }
  return parts
}

/**
 * One round of a batch: plans each part's rows and writes them with one compare-and-set statement
 * per part. A part's write is sent before the next part is planned and awaited after, so the
 * database and this process work at once; one statement at a time is in flight on the batch's
 * connection, each in the batch's transaction. `checkpoint`: the last write also marks the batch
 * done (PostgreSQL: one statement), with the round's counters as they stand if no row conflicts.
 * @returns the primary keys of the rows the application changed after they were read (not
 *   written), the number of rows sent to be written, and whether the checkpoint ran (undefined:
 *   not merged)
 */
async function writeRound(
  round: Round,
  parts: readonly StoredRow[][],
  checkpoint: boolean,
): Promise<{ skipped: unknown[]; checkpointed: boolean | undefined; writes: number }> {
  const { run, trx, counts } = round
  const unloaded = new Set<string>()
  const skipped: unknown[] = []
  let writes = 0
  let written = 0
  let checkpointed: boolean | undefined
  let inFlight: Promise<void> | undefined
  try {
    for (let p = 0; p < parts.length; p++) {
      const part = planPart(round, parts[p]!, unloaded)
      // Rows of tenants whose keys are not loaded: plan the rest only to name every such tenant.
      if (unloaded.size > 0 || part.length === 0) continue
      // The previous part's count must be known: the checkpoint records the round's total.
      if (inFlight !== undefined) await inFlight
      inFlight = undefined
      const before = written
      writes += part.length
      const total = writes
      const also: WithWrite | undefined =
        checkpoint && p === parts.length - 1
          ? (n) =>
              run.jobs
                .checkpoint(
                  trx,
                  round.batch,
                  {
                    ...counts,
                    rewritten: sql<number>`${before} + ${n}`,
                    conflicts: sql<number>`${total - before} - ${n}`,
                  },
                  run.worker,
                  round.active,
                )
                .returning(sql<number>`1`.as('one'))
          : undefined
      inFlight = casWriteWith(run.ctx, trx, run.table.physical, run.key, part, also).then(
        (result) => {
          result.written.forEach((w, i) => {
            if (w) written++
            else skipped.push(part[i]!.key)
          })
          if (also !== undefined) checkpointed = result.withRan
        },
        (error: unknown) => {
          throw run.spec.writeError?.(error) ?? error
        },
      )
      // Awaited below; a failure that arrives while the next part is planned is not unhandled.
      inFlight.catch(() => undefined)
      // Let the write reach the connection before this process plans the next part.
      if (p < parts.length - 1) await new Promise<void>((resolve) => setImmediate(resolve))
    }
    if (inFlight !== undefined) await inFlight
    inFlight = undefined
  } finally {
    // A part that failed to plan (keys to reload) leaves no write behind it unawaited.
    if (inFlight !== undefined) await inFlight.catch(() => undefined)
  }
  if (unloaded.size > 0) throw new NeedsKeys(undefined, [...unloaded])
  counts.rewritten += written
  counts.conflicts += writes - written
  return { skipped, checkpointed, writes }
}

/** Plans the rows of one part: counts and lists the failures, collects the tenants whose keys are missing. */
function planPart(round: Round, rows: readonly StoredRow[], unloaded: Set<string>): CasWrite[] {
  const { run, keys, counts } = round
  const pk = run.key.name
  const writes: CasWrite[] = []
  for (const row of rows) {
    const plan = run.spec.plan(row, keys)
    if (plan.kind === 'keys') unloaded.add(plan.tenant)
    else if (plan.kind === 'shredded') counts.shredded++
    else if (plan.kind === 'reload' && !round.reloaded) throw new NeedsKeys()
    if (plan.kind === 'failed' || plan.kind === 'reload') {
      counts.failed++
      if (round.failed.length < FAILED_KEYS_MAX) round.failed.push(row[pk])
    } else if (plan.kind === 'write') {
      writes.push({ key: row[pk], set: plan.set, match: plan.match })
    }
  }
  return writes
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
