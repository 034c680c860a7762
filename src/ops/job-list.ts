import type { Kysely } from 'kysely'

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
  /** The key versions the job moves rows onto (null: recorded by a version that did not store them). */
  readonly targets: JobTargets
  readonly startedAt: Date
  /** The last batch committed (or the start); a running job with an old one was interrupted. */
  readonly lastProgressAt: Date
  readonly finishedAt: Date | null
  /** When a run last stopped (signal, key provider down, error) with batches left. */
  readonly stoppedAt: Date | null
}

/** The active data and index key versions a job moves rows onto. */
export interface JobTargets {
  readonly data: number | null
  readonly index: number | null
}

/** Kinds of the key-event rows the job table also holds (key-events.ts): not jobs. */
export const KEY_EVENT_KINDS: readonly string[] = ['activation', 'staging']

/** A nullable integer column's value. @internal */
export function nullableInt(value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value)
}

/**
 * Every job of the job table `jobsTable` (batches in `batchesTable`), or those of one logical table, with its
 * counters summed over its batches (`JobStore.list`).
 * @internal
 */
export async function listJobs(
  // biome-ignore lint/suspicious/noExplicitAny: the job tables are named at run time.
  db: Kysely<any>,
  jobsTable: string,
  batchesTable: string,
  logicalTable?: string,
): Promise<JobRecord[]> {
  let q = db
    .selectFrom(jobsTable)
    .selectAll()
    .where('state', '<>', 'new')
    .where('kind', 'not in', KEY_EVENT_KINDS)
  if (logicalTable !== undefined) q = q.where('logical_table', '=', logicalTable)
  const jobs = await q.orderBy('id').execute()
  const out: JobRecord[] = []
  for (const job of jobs) {
    const sums = await db
      .selectFrom(batchesTable)
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
      targets: { data: nullableInt(job.target_data), index: nullableInt(job.target_index) },
      startedAt,
      lastProgressAt: sums?.last === null || sums?.last === undefined ? startedAt : new Date(sums.last),
      finishedAt: job.finished_at === null ? null : new Date(job.finished_at),
      stoppedAt: job.stopped_at === null || job.stopped_at === undefined ? null : new Date(job.stopped_at),
    })
  }
  return out
}
