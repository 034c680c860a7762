import type { OpsContext } from './context.js'
import { pausing } from './job-batch.js'
import { type JobOptions, type JobResult, runReencryptJob } from './job-engine.js'
import { loadKeySet, unreadable } from './row-check.js'
import { scanTable } from './scan.js'

/** Options of `reencrypt`. */
export interface ReencryptOptions extends JobOptions {
  /** Count the rows that would be rewritten; write nothing, start no job. @default false */
  readonly dryRun?: boolean
}

/** What a dry run of `reencrypt` found. */
export interface ReencryptDryRun {
  readonly table: string
  readonly dryRun: true
  readonly rows: number
  /** Rows holding a ciphertext or a blind index not of the active version. */
  readonly wouldRewrite: number
  readonly failed: number
}

/**
 * Rewrites every row of `table` whose data key or index key version is not the active one:
 * decrypts with the old key, encrypts with the active one, recomputes the blind indexes. A resumable
 * job (see {@link JobOptions}): run it again after a stop, a crash or a provider outage, from this
 * or another machine, and it resumes; run it on several machines at once and they share the batches.
 * @throws OperationError `JOB_PAUSED` when the key provider fails (resumable)
 * @throws KeyError `KEY_NOT_FOUND` when the table has no active key
 */
export async function reencrypt(
  ctx: OpsContext,
  tableName: string,
  options: ReencryptOptions = {},
): Promise<JobResult | ReencryptDryRun> {
  const table = ctx.table(tableName)
  if (options.dryRun !== true) return runReencryptJob(ctx, table, options)
  const keys = await pausing(table, () => loadKeySet(ctx, table))
  let wouldRewrite = 0
  let failed = 0
  const scan = await scanTable(ctx, table, keys, { signal: options.signal }, ({ check }) => {
    if (unreadable(check)) failed++
    else if (
      [...check.dataVersions.values()].some((v) => v !== keys.activeData) ||
      [...check.indexVersions.values()].some((v) => v !== keys.activeIndex) ||
      check.slotsPending
    )
      wouldRewrite++
  })
  return { table: table.physical, dryRun: true, rows: scan.rows, wouldRewrite, failed }
}
