import { isUniqueViolation } from '../driver-errors.js'
import { OperationError } from '../errors.js'
import { indexColumnNames, type TableInfo } from '../schema/schema.js'
import type { SqlFamily } from '../schema/sql-family.js'
import type { OpsContext } from './context.js'
import { pausing } from './job-batch.js'
import { type JobOptions, type JobResult, runJob } from './job-engine.js'
import type { JobSpec } from './job-spec.js'
import { checkRow, type KeySet, type StoredRow, storedColumns, unreadable } from './row-check.js'
import { contextMatch, planUnderTenant, tenantJobHooks } from './row-plan.js'
import { scanTable } from './scan.js'
import { scanKeys, TenantKeySets } from './tenant-key-sets.js'

/** Options of `reencrypt`. */
export interface ReencryptOptions extends JobOptions {
  /** Count the rows that would be rewritten; write nothing, start no job. @default false */
  readonly dryRun?: boolean
  /**
   * A table with per-tenant keys (`keyScope`): only this tenant's rows (`kfe reencrypt --tenant`),
   * in a job of its own. @default every row, each onto its own tenant's active versions, in one
   * pass over the table (`--all-tenants`)
   */
  readonly tenant?: string | number | bigint
}

/** What a dry run of `reencrypt` found. */
export interface ReencryptDryRun {
  readonly table: string
  readonly dryRun: true
  readonly rows: number
  /** Rows holding a ciphertext or a blind index not of the active version. */
  readonly wouldRewrite: number
  readonly failed: number
  /** Rows of shredded tenants (per-tenant keys): unreadable by design, never rewritten. */
  readonly shredded: number
}

/**
 * Rewrites every row of `table` whose data key or index key version is not the active one:
 * decrypts with the old key, encrypts with the active one, recomputes the blind indexes. A resumable
 * job (see {@link JobOptions}): run it again after a stop, a crash or a provider outage, from this
 * or another machine, and it resumes; run it on several machines at once and they share the batches.
 *
 * A table with per-tenant keys: each row moves onto its own tenant's active versions, under the
 * keys of the tenant it holds as read (one pass over the table however many tenants; each
 * tenant's keys unwrapped at most once per cache TTL); with `tenant`, only that tenant's rows (a
 * job of its own, `reencrypt:<table>#<column>=<tenant>`; an index on the tenant column keeps it
 * from reading the other tenants' rows). Rows of shredded tenants are counted in `shredded` and
 * left as they are.
 * @throws OperationError `JOB_PAUSED` when the key provider fails (resumable)
 * @throws KeyError `KEY_NOT_FOUND` when the table (or the tenant) has no active key
 * @throws KeyError `KEY_DESTROYED` when the tenant named was shredded
 */
export async function reencrypt(
  ctx: OpsContext,
  tableName: string,
  options: ReencryptOptions = {},
): Promise<JobResult | ReencryptDryRun> {
  const table = ctx.table(tableName)
  if (options.dryRun !== true) {
    if (table.keyScope === undefined && options.tenant === undefined)
      return runJob(ctx, table, reencryptSpec(table, ctx.primaryKey(table), ctx.family), options)
    const tenants = new TenantKeySets(ctx, table, options.tenant)
    try {
      return await runJob(
        ctx,
        table,
        reencryptSpec(table, ctx.primaryKey(table), ctx.family, tenants),
        options,
      )
    } finally {
      tenants.destroy()
    }
  }
  const opened = await pausing(table, () => scanKeys(ctx, table, options.tenant))
  let wouldRewrite = 0
  let failed = 0
  let shredded = 0
  try {
    const scan = await scanTable(
      ctx,
      table,
      opened.keys,
      { signal: options.signal, tenants: opened.tenants },
      ({ check, shredded: gone, keys }) => {
        if (gone) shredded++
        else if (unreadable(check)) failed++
        // A row without a usable tenant's keys and without a ciphertext: nothing to do (as in the job).
        else if (keys === undefined) return
        else if (
          [...check.dataVersions.values()].some((v) => v !== keys.activeData) ||
          [...check.indexVersions.values()].some((v) => v !== keys.activeIndex) ||
          check.slotsPending ||
          // Legacy plaintext in place, which the job encrypts (what it cannot is a failure above).
          check.plaintext.length > 0
        )
          wouldRewrite++
      },
    )
    return { table: table.physical, dryRun: true, rows: scan.rows, wouldRewrite, failed, shredded }
  } finally {
    opened.close()
  }
}

/**
 * The re-encryption's steps: each row read (primary key, context columns, ciphertexts, blind
 * indexes), checked, and given the writes that move it onto the active versions, written only if
 * every ciphertext rewritten (or whose indexes are) is still the one read, and the row context
 * they are bound to too (the application may have moved the row to another context, rewriting its
 * ciphertexts). With per-tenant keys the tenant column is a context column: a row moved to another
 * tenant after it was read is not written (its write is skipped, it is read again and handled
 * under its new tenant's keys).
 * @example
 * ```ts
 * // per batch (PostgreSQL; per part of 250 rows in a batch of 500 or more): update "users" as t set "email" = v.s0, "email_bidx" = v.s1
 * //   from unnest($1::integer[], $2::bytea[], $3::bytea[], $4::bytea[]) with ordinality as v(k, s0, s1, m0, ord)
 * //   where t."id" = v.k and t."email" is not distinct from v.m0 returning v.ord
 * ```
 */
function reencryptSpec(table: TableInfo, pk: string, family: SqlFamily, tenants?: TenantKeySets): JobSpec {
  return {
    kind: 'reencrypt',
    subject: tenants?.subject ?? table.logical,
    op: 'reencrypt',
    columns: (key) => storedColumns(table, key),
    ...tenantJobHooks(tenants),
    plan: (row, keys) =>
      planUnderTenant(
        keys,
        row,
        (own) => planRow(table, pk, own, row, family),
        () => [...table.columns.values()].every((c) => row[c.stored] === null || row[c.stored] === undefined),
      ),
    writeError: (error) => {
      // A plaintext value encrypted in place gets its first blind index: another row may hold
      // the same value (the unique index could not see the plaintext). Mapped only when the
      // refusing index is one of such a column's: a unique violation elsewhere (two versions of
      // a rotation without a rotationSlot) keeps the driver's error.
      if (!isUniqueViolation(error)) return undefined
      const named = violatedIndexName(error)
      const legacy = [...table.columns.values()].filter(
        (c) =>
          c.spec.migratingFromPlaintext &&
          named !== undefined &&
          c.spec.indexes.some((spec) => indexColumnNames(spec).some((n) => named.includes(n))),
      )
      if (legacy.length === 0) return undefined
      return new OperationError(
        'MIGRATION_REFUSED',
        `A unique blind index of ${table.physical}.${legacy.map((c) => c.physical).join(', ')} (migratingFromPlaintext) refused a value encrypted in place: a row still holding plaintext has the value of another row, equal once normalized. Resolve the duplicate, then run the job again.`,
        { cause: error, table: table.logical },
      )
    },
  }
}

/**
 * What a unique violation names of its index, never its value: PostgreSQL's `Key (col)=` of its
 * detail, else its constraint; MySQL/MariaDB's `for key '…'`.
 */
function violatedIndexName(error: unknown): string | undefined {
  const e = error as { detail?: unknown; constraint?: unknown; sqlMessage?: unknown }
  const column = typeof e.detail === 'string' ? /^Key \((.*?)\)=/.exec(e.detail)?.[1] : undefined
  if (column !== undefined) return column
  if (typeof e.constraint === 'string') return e.constraint
  return typeof e.sqlMessage === 'string' ? /for key '([^']*)'$/.exec(e.sqlMessage)?.[1] : undefined
}

function planRow(
  table: TableInfo,
  pk: string,
  keys: KeySet,
  row: StoredRow,
  family: SqlFamily,
): ReturnType<JobSpec['plan']> {
  const check = checkRow(table, keys, row, true, family)
  if (check.failures.some((f) => f.endsWith(': KEY_NOT_FOUND'))) return { kind: 'reload' }
  if (unreadable(check)) return { kind: 'failed' }
  if (Object.keys(check.updates).length === 0) return { kind: 'skip' }
  const match = contextMatch(table, pk, row)
  for (const c of check.expect) match[c] = row[c] ?? null
  return { kind: 'write', set: check.updates, match }
}
