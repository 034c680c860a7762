import type { Transaction } from 'kysely'
import { type JobTargets, nullableInt } from './job-list.js'
import { encodeBound } from './job-tables.js'

// biome-ignore lint/suspicious/noExplicitAny: the job tables are named at run time.
type AnyTrx = Transaction<any>

/** How a start found the job. @internal */
export interface JobStart {
  readonly id: string
  /** True when this call planned the job's batches. */
  readonly created: boolean
  /**
   * The unfinished job this call replaced because its targets were not the active versions (a
   * rotation happened since it was interrupted): its targets and progress.
   */
  readonly replaced:
    | { readonly targets: JobTargets; readonly doneBatches: number; readonly totalBatches: number }
    | undefined
}

/**
 * The planning half of `JobStore.startOrJoin`, in `trx` (the job row exists): reads the job row
 * under its lock, and joins the job when it runs (or ran, after `since`) towards `targets` under
 * the key generation; otherwise replaces its batches with a new plan and marks it running
 * towards `targets`. Concurrent starters wait for the lock, so the table is planned once.
 * @internal
 */
export async function planOrJoin(
  trx: AnyTrx,
  tables: { readonly jobs: string; readonly batches: string },
  start: {
    readonly id: string
    readonly since: Date | null
    readonly targets: { data: number; index: number }
    readonly plan: (trx: AnyTrx) => Promise<Array<{ lo: unknown; hi: unknown }>>
    readonly generation: ((trx: AnyTrx) => Promise<string>) | undefined
  },
): Promise<JobStart> {
  const { id, since, targets, plan, generation } = start
  const job = await trx
    .selectFrom(tables.jobs)
    .selectAll()
    .where('id', '=', id)
    .forUpdate()
    .executeTakeFirst()
  const state = job?.state as string | undefined
  const finished =
    job?.finished_at === null || job?.finished_at === undefined ? null : new Date(job.finished_at)
  const was: JobTargets = { data: nullableInt(job?.target_data), index: nullableInt(job?.target_index) }
  // Read under the job row's lock: a starter that read it before a rotation cannot replace the
  // plan of one that read it after.
  const current = generation === undefined ? null : await generation(trx)
  const same = since !== null && job !== undefined && towards(job, targets, current)
  if (same && (state === 'running' || (state === 'done' && finished !== null && finished >= since!))) {
    return { id, created: false, replaced: undefined }
  }
  let replaced: JobStart['replaced']
  if (state === 'running') {
    const done = await trx
      .selectFrom(tables.batches)
      .select((eb) => eb.fn.sum('done').as('done'))
      .where('job_id', '=', id)
      .executeTakeFirst()
    replaced = {
      targets: was,
      doneBatches: Number(done?.done ?? 0),
      totalBatches: Number(job?.total_batches ?? 0),
    }
  }
  await trx.deleteFrom(tables.batches).where('job_id', '=', id).execute()
  const batches = await plan(trx)
  for (let i = 0; i < batches.length; i += 500) {
    await trx
      .insertInto(tables.batches)
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
    .updateTable(tables.jobs)
    .set({
      state: 'running',
      total_batches: batches.length,
      target_data: targets.data,
      target_index: targets.index,
      key_generation: current,
      started_at: new Date(),
      finished_at: null,
      stopped_at: null,
    })
    .where('id', '=', id)
    .execute()
  return { id, created: true, replaced }
}

/**
 * Whether a job row moves rows onto `targets` under the key generation `current` (null: a job
 * without per-tenant keys): the job a run may join.
 */
export function towards(
  job: { target_data?: unknown; target_index?: unknown; key_generation?: unknown },
  targets: { data: number; index: number },
  current: string | null,
): boolean {
  return (
    nullableInt(job.target_data) === targets.data &&
    nullableInt(job.target_index) === targets.index &&
    (job.key_generation ?? null) === current
  )
}
