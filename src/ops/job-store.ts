import { type Kysely, type RawBuilder, sql, type Transaction } from 'kysely'
import type { OpsContext } from './context.js'
import { type JobRecord, type JobTargets, listJobs, nullableInt } from './job-list.js'
import { type JobStart, planOrJoin, towards } from './job-start.js'
import { decodeBound, ensureJobTables } from './job-tables.js'
import { dbNow } from './key-events.js'
import { keyFingerprint } from './key-snapshot.js'
import { isRetryable } from './retryable.js'

export type { JobRecord, JobTargets } from './job-list.js'
export type { JobStart } from './job-start.js'

/** One claimed batch: primary keys in `(lo, hi]`; a bound is null when open. @internal */
export interface Batch {
  readonly jobId: string
  readonly no: number
  readonly lo: unknown
  readonly hi: unknown
  /** The key table's rows of the table as the claim read them (see key-snapshot.ts), when asked. */
  readonly keys?: string | null
}

/** Counters one batch adds to its job. @internal */
export interface BatchCounts {
  rows: number
  rewritten: number
  conflicts: number
  deleted: number
  failed: number
  /** Rows of shredded tenants (per-tenant keys): unreadable by design; this run's count, not stored. */
  shredded: number
}

// biome-ignore lint/suspicious/noExplicitAny: the job tables are named at run time.
type AnyDb = Kysely<any>
// biome-ignore lint/suspicious/noExplicitAny: the job tables are named at run time.
type AnyTrx = Transaction<any>

/**
 * The job tables: `kfe_jobs` (one row per job) and `kfe_jobs_batches` (one row per batch of
 * primary keys, the checkpoint: a batch is marked done in the transaction that rewrote its rows,
 * so after `kill -9` exactly the uncommitted batches are claimed again). Workers claim batches with
 * `SELECT … FOR UPDATE SKIP LOCKED`: the database is the only coordinator.
 * @internal
 */
export class JobStore {
  readonly #ctx: OpsContext
  readonly jobs: string
  readonly batches: string

  constructor(ctx: OpsContext) {
    this.#ctx = ctx
    this.jobs = ctx.jobsTable
    this.batches = `${ctx.jobsTable}_batches`
  }

  get #db(): AnyDb {
    return this.#ctx.db
  }

  /** Creates both tables if absent. Idempotent. */
  ensureSchema(): Promise<void> {
    return ensureJobTables(this.#ctx)
  }

  /**
   * Joins the running job of this kind on this table, or starts one: plans its batches (walking
   * the primary key) in the transaction that holds the job row's lock, so concurrent starters plan
   * once and the others join. A job done after `since` is joined (nothing left), not restarted;
   * with `since` null (`restart`), no job is joined: an unfinished one is replaced.
   * A job is joined only when its targets are `targets` (the active versions now) and its key
   * generation is `generation` (a whole-table job over per-tenant keys, see tenant-generation.ts):
   * an interrupted job planned before a rotation is replaced by a new one, reported in `replaced`.
   */
  async startOrJoin(
    kind: string,
    logicalTable: string,
    since: Date | null,
    targets: { data: number; index: number },
    plan: (trx: AnyTrx) => Promise<Array<{ lo: unknown; hi: unknown }>>,
    generation?: (trx: AnyTrx) => Promise<string>,
  ): Promise<JobStart> {
    // A starter that replaces a job a worker is writing may deadlock with that worker's checkpoint
    // on MariaDB (the job row against the batch row), which rolls the starter back: start again.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#startOrJoin(kind, logicalTable, since, targets, plan, generation)
      } catch (error) {
        if (!isRetryable(error) || attempt >= 4) throw error
      }
    }
  }

  async #startOrJoin(
    kind: string,
    logicalTable: string,
    since: Date | null,
    targets: { data: number; index: number },
    plan: (trx: AnyTrx) => Promise<Array<{ lo: unknown; hi: unknown }>>,
    generation: ((trx: AnyTrx) => Promise<string>) | undefined,
  ): Promise<JobStart> {
    const id = `${kind}:${logicalTable}`
    const insert = this.#db.insertInto(this.jobs).values({
      id,
      kind,
      logical_table: logicalTable,
      state: 'new',
      total_batches: 0,
      started_at: new Date(),
    })
    await (this.#ctx.family === 'mysql'
      ? insert.onDuplicateKeyUpdate({ id: sql.ref('id') })
      : insert.onConflict((oc) => oc.doNothing())
    ).execute()
    return this.#db
      .transaction()
      .execute((trx) =>
        planOrJoin(trx, { jobs: this.jobs, batches: this.batches }, { id, since, targets, plan, generation }),
      )
  }

  /**
   * The id of the job of `kind` on `logicalTable` when one is running towards `targets` (and key
   * `generation`): a worker that must not plan joins it, and finds nothing to do otherwise (no
   * job, a finished one, one replaced by a rotation). Reads only.
   */
  async running(
    kind: string,
    logicalTable: string,
    targets: { data: number; index: number },
    generation?: (trx: AnyTrx) => Promise<string>,
  ): Promise<string | undefined> {
    const id = `${kind}:${logicalTable}`
    return this.#db.transaction().execute(async (trx) => {
      const job = await trx.selectFrom(this.jobs).selectAll().where('id', '=', id).executeTakeFirst()
      if (job?.state !== 'running') return undefined
      const current = generation === undefined ? null : await generation(trx)
      return towards(job, targets, current) ? id : undefined
    })
  }

  /** The targets of a job as they stand, read inside `trx` (a worker checks its keys against them). */
  async targets(trx: AnyTrx, jobId: string): Promise<JobTargets> {
    const job = await trx
      .selectFrom(this.jobs)
      .select(['target_data', 'target_index'])
      .where('id', '=', jobId)
      .executeTakeFirst()
    return { data: nullableInt(job?.target_data), index: nullableInt(job?.target_index) }
  }

  /**
   * Claims the next undone batch nobody holds (`FOR UPDATE SKIP LOCKED`), inside `trx`; with
   * `keysOf` (a logical table), reads that table's key fingerprint in the same statement.
   */
  async claim(trx: AnyTrx, jobId: string, keysOf?: string): Promise<Batch | undefined> {
    const row = await trx
      .selectFrom(this.batches)
      .select(['batch_no', 'lo', 'hi'])
      .$if(keysOf !== undefined, (q) => q.select(keyFingerprint(this.#ctx, keysOf as string).as('kfp')))
      .where('job_id', '=', jobId)
      .where('done', '=', 0)
      .orderBy('batch_no')
      .limit(1)
      .forUpdate()
      .skipLocked()
      .executeTakeFirst()
    if (row === undefined) return undefined
    const batch = { jobId, no: Number(row.batch_no), lo: decodeBound(row.lo), hi: decodeBound(row.hi) }
    return keysOf === undefined ? batch : { ...batch, keys: (row.kfp as string | null) ?? null }
  }

  /**
   * Marks a batch done with its counters, inside the transaction that did its work, if the job
   * still moves rows onto `targets` (the versions the worker wrote with): checked in the same
   * statement, which saves a batch one round trip. The targets cannot change while the batch is
   * held: a new plan deletes the job's batches first, and waits for this batch's lock.
   * @returns false when the job's targets are others (nothing marked: roll the batch back)
   */
  async complete(
    trx: AnyTrx,
    batch: Batch,
    counts: BatchCounts,
    worker: string,
    targets: { readonly data: number; readonly index: number },
  ): Promise<boolean> {
    const result = await this.checkpoint(trx, batch, counts, worker, targets).executeTakeFirst()
    return result.numUpdatedRows > 0n
  }

  /**
   * The statement of {@link JobStore.complete}, unexecuted: PostgreSQL's batch write runs it in the
   * write's own statement (a data-modifying `WITH`), with `rewritten` and `conflicts` counted there.
   */
  checkpoint(
    trx: AnyTrx,
    batch: Batch,
    counts: Omit<BatchCounts, 'rewritten' | 'conflicts'> & {
      rewritten: number | RawBuilder<number>
      conflicts: number | RawBuilder<number>
    },
    worker: string,
    targets: { readonly data: number; readonly index: number },
  ) {
    return trx
      .updateTable(this.batches)
      .set({
        done: 1,
        rows_seen: counts.rows,
        rewritten: counts.rewritten,
        conflicts: counts.conflicts,
        deleted: counts.deleted,
        failed: counts.failed,
        worker,
        finished_at: new Date(),
      })
      .where('job_id', '=', batch.jobId)
      .where('batch_no', '=', batch.no)
      .where((eb) =>
        eb.exists(
          eb
            .selectFrom(this.jobs)
            .select(sql`1`.as('one'))
            .where('id', '=', batch.jobId)
            .where('target_data', '=', targets.data)
            .where('target_index', '=', targets.index),
        ),
      )
  }

  /** Batches not yet done (claimed by a live worker or not). */
  async remaining(jobId: string): Promise<number> {
    const row = await this.#db
      .selectFrom(this.batches)
      .select((eb) => eb.fn.countAll().as('n'))
      .where('job_id', '=', jobId)
      .where('done', '=', 0)
      .executeTakeFirst()
    return Number(row?.n ?? 0)
  }

  /**
   * The database's present time: a run's start, compared with `finished_at` (also the database's)
   * to join a job done meanwhile, whatever the clocks of the machines that ran it.
   */
  async now(): Promise<Date> {
    const row = await sql<{ now: Date | string }>`select ${dbNow(this.#ctx)} as now`.execute(this.#db)
    return new Date(row.rows[0]!.now)
  }

  /**
   * Marks the job done, in one conditional update: only while it is running and no batch of it is
   * left undone (pending or claimed by a worker that has not committed). Several workers may call it
   * at once; exactly one gets true.
   */
  async finish(jobId: string): Promise<boolean> {
    const result = await this.#db
      .updateTable(this.jobs)
      .set({ state: 'done', finished_at: dbNow(this.#ctx) })
      .where('id', '=', jobId)
      .where('state', '=', 'running')
      .where((eb) =>
        eb.not(
          eb.exists(
            eb
              .selectFrom(this.batches)
              .select(sql`1`.as('one'))
              .where('job_id', '=', jobId)
              .where('done', '=', 0),
          ),
        ),
      )
      .executeTakeFirst()
    return result.numUpdatedRows > 0n
  }

  /** Records that a run stopped with batches left (status then reports the job as interrupted). */
  async markStopped(jobId: string): Promise<void> {
    await this.#db
      .updateTable(this.jobs)
      .set({ stopped_at: new Date() })
      .where('id', '=', jobId)
      .where('state', '=', 'running')
      .execute()
  }

  /**
   * Whether a worker holds a batch of the job right now: one of its undone batches is locked (a
   * `SKIP LOCKED` read sees fewer than a plain count). Takes the free batches' locks for an instant.
   */
  async claimedNow(jobId: string): Promise<boolean> {
    return this.#db.transaction().execute(async (trx) => {
      const all = await trx
        .selectFrom(this.batches)
        .select((eb) => eb.fn.countAll().as('n'))
        .where('job_id', '=', jobId)
        .where('done', '=', 0)
        .executeTakeFirst()
      const free = await trx
        .selectFrom(this.batches)
        .select('batch_no')
        .where('job_id', '=', jobId)
        .where('done', '=', 0)
        .forUpdate()
        .skipLocked()
        .execute()
      return free.length < Number(all?.n ?? 0)
    })
  }

  /** Every job, or those of one logical table, with its counters summed over its batches. */
  list(logicalTable?: string): Promise<JobRecord[]> {
    return listJobs(this.#db, this.jobs, this.batches, logicalTable)
  }
}
