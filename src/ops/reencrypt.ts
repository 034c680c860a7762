import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { type JobSpec, pausing } from './job-batch.js'
import { type JobOptions, type JobResult, runJob } from './job-engine.js'
import { checkRow, loadKeySet, storedColumns, unreadable } from './row-check.js'
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
  if (options.dryRun !== true) return runJob(ctx, table, reencryptSpec(table, ctx.primaryKey(table)), options)
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

/**
 * The re-encryption's steps: each row read (primary key, context columns, ciphertexts, blind
 * indexes), checked, and given the writes that move it onto the active versions, written only if
 * every ciphertext rewritten (or whose indexes are) is still the one read, and the row context
 * they are bound to too (the application may have moved the row to another context, rewriting its
 * ciphertexts).
 * @example
 * ```ts
 * // per batch (PostgreSQL): update "users" as t set "email" = v.s0, "email_bidx" = v.s1
 * //   from unnest($1::integer[], $2::bytea[], $3::bytea[], $4::bytea[]) with ordinality as v(k, s0, s1, m0, ord)
 * //   where t."id" = v.k and t."email" is not distinct from v.m0 returning v.ord
 * ```
 */
function reencryptSpec(table: TableInfo, pk: string): JobSpec {
  return {
    kind: 'reencrypt',
    subject: table.logical,
    op: 'reencrypt',
    columns: (key) => storedColumns(table, key),
    plan(row, keys) {
      const check = checkRow(table, keys, row, true)
      if (check.failures.some((f) => f.endsWith(': KEY_NOT_FOUND'))) return { kind: 'reload' }
      if (unreadable(check)) return { kind: 'failed' }
      if (Object.keys(check.updates).length === 0) return { kind: 'skip' }
      const match: Record<string, unknown> = {}
      for (const c of table.context) if (c !== pk) match[c] = row[c] ?? null
      for (const c of check.expect) match[c] = row[c] ?? null
      return { kind: 'write', set: check.updates, match }
    },
  }
}
