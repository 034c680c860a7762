import { type Kysely, sql, type Transaction } from 'kysely'
import type { OpsContext } from './context.js'

/** A job as its row in the job table records it. */
export interface JobRecord {
  /** `<kind>:<logical table>`: one job of a kind per table at a time. */
  readonly id: string
  readonly kind: string
  readonly table: string
  /** `running` (workers at it, or interrupted) or `done`. */
  readonly state: 'running' | 'done'
  readonly totalBatches: number
  readonly doneBatches: number
  readonly rows: number
  readonly rewritten: number
  readonly conflicts: number
  readonly failed: number
  readonly startedAt: Date
  /** The last batch committed (or the start); a running job with an old one was interrupted. */
  readonly lastProgressAt: Date
  readonly finishedAt: Date | null
}

/** One claimed batch: primary keys in `(lo, hi]`; a bound is null when open. @internal */
export interface Batch {
  readonly jobId: string
  readonly no: number
  readonly lo: unknown
  readonly hi: unknown
}

/** Counters one batch adds to its job. @internal */
export interface BatchCounts {
  rows: number
  rewritten: number
  conflicts: number
  deleted: number
  failed: number
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
  async ensureSchema(): Promise<void> {
    const time = this.#ctx.family === 'mysql' ? sql`datetime(3)` : sql`timestamptz`
    const big = 'bigint'
    await this.#retryCreate(() =>
      this.#db.schema
        .createTable(this.jobs)
        .ifNotExists()
        .addColumn('id', 'varchar(300)', (c) => c.primaryKey())
        .addColumn('kind', 'varchar(32)', (c) => c.notNull())
        .addColumn('logical_table', 'varchar(255)', (c) => c.notNull())
        .addColumn('state', 'varchar(16)', (c) => c.notNull())
        .addColumn('total_batches', 'integer', (c) => c.notNull())
        .addColumn('started_at', time, (c) => c.notNull())
        .addColumn('finished_at', time)
        .execute(),
    )
    await this.#retryCreate(() =>
      this.#db.schema
        .createTable(this.batches)
        .ifNotExists()
        .addColumn('job_id', 'varchar(300)', (c) => c.notNull())
        .addColumn('batch_no', 'integer', (c) => c.notNull())
        .addColumn('lo', 'varchar(1000)')
        .addColumn('hi', 'varchar(1000)')
        .addColumn('done', 'integer', (c) => c.notNull())
        .addColumn('rows_seen', big, (c) => c.notNull())
        .addColumn('rewritten', big, (c) => c.notNull())
        .addColumn('conflicts', big, (c) => c.notNull())
        .addColumn('deleted', big, (c) => c.notNull())
        .addColumn('failed', big, (c) => c.notNull())
        .addColumn('worker', 'varchar(100)')
        .addColumn('finished_at', time)
        .addPrimaryKeyConstraint(`${this.batches}_pkey`, ['job_id', 'batch_no'])
        .execute(),
    )
  }

  async #retryCreate(create: () => Promise<unknown>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await create()
        return
      } catch (error) {
        // Two concurrent CREATE TABLE IF NOT EXISTS may collide on PostgreSQL's catalog.
        if (attempt >= 3) throw error
      }
    }
  }

  /**
   * Joins the running job of this kind on this table, or starts one: plans its batches (walking
   * the primary key) in the transaction that holds the job row's lock, so concurrent starters plan
   * once and the others join. A job done after `since` is joined (nothing left), not restarted.
   */
  async startOrJoin(
    kind: string,
    logicalTable: string,
    since: Date,
    plan: (trx: AnyTrx) => Promise<Array<{ lo: unknown; hi: unknown }>>,
  ): Promise<{ id: string; created: boolean }> {
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
    return this.#db.transaction().execute(async (trx) => {
      const job = await trx
        .selectFrom(this.jobs)
        .selectAll()
        .where('id', '=', id)
        .forUpdate()
        .executeTakeFirst()
      const state = job?.state as string | undefined
      const finished =
        job?.finished_at === null || job?.finished_at === undefined ? null : new Date(job.finished_at)
      if (state === 'running' || (state === 'done' && finished !== null && finished >= since)) {
        return { id, created: false }
      }
      await trx.deleteFrom(this.batches).where('job_id', '=', id).execute()
      const batches = await plan(trx)
      for (let i = 0; i < batches.length; i += 500) {
        await trx
          .insertInto(this.batches)
          .values(
            batches.slice(i, i + 500).map((b, j) => ({
              job_id: id,
              batch_no: i + j,
              lo: encodeBound(b.lo),
              hi: encodeBound(b.hi),
              done: 0,
              rows_seen: 0,
              rewritten: 0,
              conflicts: 0,
              deleted: 0,
              failed: 0,
            })),
          )
          .execute()
      }
      await trx
        .updateTable(this.jobs)
        .set({ state: 'running', total_batches: batches.length, started_at: new Date(), finished_at: null })
        .where('id', '=', id)
        .execute()
      return { id, created: true }
    })
  }

  /** Claims the next undone batch nobody holds (`FOR UPDATE SKIP LOCKED`), inside `trx`. */
  async claim(trx: AnyTrx, jobId: string): Promise<Batch | undefined> {
    const row = await trx
      .selectFrom(this.batches)
      .select(['batch_no', 'lo', 'hi'])
      .where('job_id', '=', jobId)
      .where('done', '=', 0)
      .orderBy('batch_no')
      .limit(1)
      .forUpdate()
      .skipLocked()
      .executeTakeFirst()
    if (row === undefined) return undefined
    return { jobId, no: Number(row.batch_no), lo: decodeBound(row.lo), hi: decodeBound(row.hi) }
  }

  /** Marks a batch done with its counters, inside the transaction that did its work. */
  async complete(trx: AnyTrx, batch: Batch, counts: BatchCounts, worker: string): Promise<void> {
    await trx
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
      .execute()
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

  /** Marks the job done when no batch is left (any worker may; the first one wins). */
  async finish(jobId: string): Promise<void> {
    await this.#db
      .updateTable(this.jobs)
      .set({ state: 'done', finished_at: new Date() })
      .where('id', '=', jobId)
      .where('state', '=', 'running')
      .execute()
  }

  /** Every job, or those of one logical table, with its counters summed over its batches. */
  async list(logicalTable?: string): Promise<JobRecord[]> {
    let q = this.#db.selectFrom(this.jobs).selectAll().where('state', '<>', 'new')
    if (logicalTable !== undefined) q = q.where('logical_table', '=', logicalTable)
    const jobs = await q.orderBy('id').execute()
    const out: JobRecord[] = []
    for (const job of jobs) {
      const sums = await this.#db
        .selectFrom(this.batches)
        .select((eb) => [
          eb.fn.countAll().as('batches'),
          eb.fn.sum('done').as('done'),
          eb.fn.sum('rows_seen').as('rows'),
          eb.fn.sum('rewritten').as('rewritten'),
          eb.fn.sum('conflicts').as('conflicts'),
          eb.fn.sum('failed').as('failed'),
          eb.fn.max('finished_at').as('last'),
        ])
        .where('job_id', '=', job.id)
        .executeTakeFirst()
      const startedAt = new Date(job.started_at)
      out.push({
        id: job.id,
        kind: job.kind,
        table: job.logical_table,
        state: job.state === 'done' ? 'done' : 'running',
        totalBatches: Number(job.total_batches),
        doneBatches: Number(sums?.done ?? 0),
        rows: Number(sums?.rows ?? 0),
        rewritten: Number(sums?.rewritten ?? 0),
        conflicts: Number(sums?.conflicts ?? 0),
        failed: Number(sums?.failed ?? 0),
        startedAt,
        lastProgressAt: sums?.last === null || sums?.last === undefined ? startedAt : new Date(sums.last),
        finishedAt: job.finished_at === null ? null : new Date(job.finished_at),
      })
    }
    return out
  }
}

/** A primary-key bound as stored: JSON, so numbers stay numbers and strings stay strings. */
function encodeBound(value: unknown): string | null {
  if (value === null || value === undefined) return null
  return JSON.stringify(typeof value === 'bigint' ? value.toString() : value)
}

function decodeBound(value: unknown): unknown {
  return value === null || value === undefined ? null : JSON.parse(String(value))
}
