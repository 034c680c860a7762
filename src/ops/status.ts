import { SEARCHABLE } from '../keys/key-metadata.js'
import type { KeyPurpose } from '../keys/key-provider.js'
import type { KeyState } from '../keys/key-store.js'
import { parseTenantKeyName, SCOPE_SEPARATOR } from '../schema/key-scope.js'
import type { OpsContext } from './context.js'
import { type JobRecord, JobStore } from './job-store.js'
import { type ColumnMigrationStatus, migrationStatus } from './migration-status.js'
import type { RunOptions } from './progress.js'
import { loadKeySet } from './row-check.js'
import { counted, countRows, unscanned, versionAttention } from './row-counts.js'
import { type IndexSlotStatus, SlotTally } from './slot-status.js'
import { tenantTableStatus } from './tenant-status.js'

/** Options of `status`. */
export interface StatusOptions extends RunOptions {
  /** Only this table (physical or logical name). @default every table of the schema */
  readonly table?: string
  /** Count every row instead of a sample. @default false */
  readonly exact?: boolean
  /** Rows read per table when not exact. @default 2000 */
  readonly sampleSize?: number
  /**
   * A running job with no batch held by a worker right now and none committed for this long is
   * reported as interrupted (a job stopped by a signal, a provider outage or an error is reported
   * at once). @default 60_000
   */
  readonly staleJobMs?: number
  /**
   * With `table`, a table with per-tenant keys: this tenant's key versions and its rows per
   * version. @default every tenant's rows, counted per version of each row's own tenant
   */
  readonly tenant?: string | number | bigint
}

/** One key version, as `status` reports it. */
export interface KeyVersionStatus {
  readonly purpose: KeyPurpose
  readonly version: number
  readonly state: KeyState
  /** KEKs holding a wrapping of it. */
  readonly keks: readonly string[]
  readonly createdAt: Date
}

/** The state of one annotated table. */
export interface TableStatus {
  readonly table: string
  readonly logicalTable: string
  readonly keys: readonly KeyVersionStatus[]
  /** Rows in the table. */
  readonly rows: number
  /** Rows read: all of them when `exact`, else a sample. */
  readonly scanned: number
  /** True when the counts below are scaled from a sample (estimates). */
  readonly estimated: boolean
  /** Rows holding at least one ciphertext under each data key version. */
  readonly rowsByDataVersion: Readonly<Record<string, number>>
  /** Rows holding at least one blind index of each index key version. */
  readonly rowsByIndexVersion: Readonly<Record<string, number>>
  /**
   * Each index with a rotation slot (`index: { name, rotationSlot }`): per column (its own, its
   * slot), the live index version that lives there and rows per version it holds. Empty when the
   * table has none.
   */
  readonly slots: readonly IndexSlotStatus[]
  /** Rows with a value still in plaintext. */
  readonly plaintextRows: number
  /** Rows that fail to decrypt or whose index matches no version (see `verify`). */
  readonly failedRows: number
  readonly jobs: readonly (JobRecord & { readonly interrupted: boolean })[]
  /** Each column under migration from plaintext: its phase and the share of rows encrypted. */
  readonly migrations: readonly ColumnMigrationStatus[]
  /**
   * A table with per-tenant keys (`keyScope`): how many tenants have live keys, how many were
   * shredded, how many have a staged version; rows of shredded tenants (unreadable by design, not
   * in `failedRows`); rows not on their own tenant's active versions. The row counts above are
   * per version of each row's own tenant (`keys` lists the versions of the tenant named by the
   * `tenant` option, else none).
   */
  readonly tenants?: {
    readonly live: number
    readonly destroyed: number
    readonly staged: number
    readonly shreddedRows: number
    readonly rowsNotOnActive: number
  }
  /** What needs doing, one line each; empty when nothing does. */
  readonly attention: readonly string[]
  readonly verdict: string
}

/** Outcome of `status`. */
export interface StatusResult {
  readonly tables: readonly TableStatus[]
  /** True when any table lists something to do (the CLI exits 2). */
  readonly needsAttention: boolean
}

/**
 * Per table: key versions, their states and KEKs; rows per data and index key version (from the
 * ciphertext headers, and blind indexes recomputed under each version); plaintext rows; jobs
 * running or interrupted; and a verdict. Read-only.
 *
 * Cost: a sample of `sampleSize` rows per table (ten index range scans), or every row with `exact`;
 * one decryption per value and one HMAC per index and version tried.
 */
export async function status(ctx: OpsContext, options: StatusOptions = {}): Promise<StatusResult> {
  const tables = options.table === undefined ? [...ctx.schema.tables.values()] : [ctx.table(options.table)]
  const store = new JobStore(ctx)
  const jobs = await store.list().catch(() => [] as JobRecord[])
  const staleMs = options.staleJobMs ?? 60_000
  // A running job is interrupted when no worker holds one of its batches now, and a run stopped
  // after its last committed batch or none committed for staleMs (a live worker between batches).
  const interrupted = async (j: JobRecord): Promise<boolean> => {
    if (j.state !== 'running') return false
    if (await store.claimedNow(j.id).catch(() => false)) return false
    const stopped = j.stoppedAt !== null && j.stoppedAt.getTime() >= j.lastProgressAt.getTime()
    return stopped || Date.now() - j.lastProgressAt.getTime() > staleMs
  }
  const out: TableStatus[] = []
  for (const table of tables) {
    const stored = await ctx.store.list(table.logical).catch(() => [])
    const keys: KeyVersionStatus[] = stored.map((k) => ({
      purpose: k.purpose,
      version: k.version,
      state: k.state,
      keks: k.wrappings.map((w) => w.kekId),
      createdAt: k.createdAt,
    }))
    const migrations = await migrationStatus(ctx, table, jobs)
    const attention: string[] = [...migrations.attention]
    const tableJobs: Array<JobRecord & { interrupted: boolean }> = []
    // With per-tenant keys, a tenant's own jobs are recorded under its key name.
    const tenantPrefix = `${table.logical}${SCOPE_SEPARATOR}`
    const ofTable = (j: JobRecord) =>
      j.table === table.logical || (table.keyScope !== undefined && j.table.startsWith(tenantPrefix))
    for (const j of jobs.filter(ofTable)) tableJobs.push({ ...j, interrupted: await interrupted(j) })
    for (const j of tableJobs) {
      const tenant = parseTenantKeyName(j.table)?.tenant
      if (j.interrupted)
        attention.push(
          `job ${j.id} was interrupted at ${j.doneBatches}/${j.totalBatches} batches: run \`kfe reencrypt ${table.physical}${tenant === undefined ? '' : ` --tenant ${tenant}`}\` to resume`,
        )
      if (j.failed > 0)
        attention.push(
          `job ${j.id} could not read ${j.failed} rows: run \`kfe verify ${table.physical}\` to list them`,
        )
    }
    if (table.keyScope !== undefined) {
      out.push(await tenantTableStatus(ctx, table, tableJobs, migrations.columns, attention, options))
      continue
    }
    const active = (p: KeyPurpose) => keys.find((k) => k.purpose === p && k.state === 'active')?.version
    if (active('data') === undefined || active('index') === undefined) {
      attention.push(`no active key: run \`kfe init\``)
      out.push({
        ...unscanned(table),
        keys,
        jobs: tableJobs,
        migrations: migrations.columns,
        attention,
        verdict: `needs attention: ${attention[0]}`,
      })
      continue
    }
    for (const k of keys) {
      if (k.state === 'staged')
        attention.push(
          `${k.purpose} version ${k.version} is staged: run \`kfe rotate ${table.physical} --${k.purpose}\` to activate it`,
        )
    }
    const live = keys.filter((k) => k.purpose === 'index' && SEARCHABLE.has(k.state))
    const slotTally = new SlotTally(table, live, active('index'))
    const counts = await countRows(ctx, table, await loadKeySet(ctx, table), undefined, options, (check) =>
      slotTally.add(check),
    )
    const approx = counts.estimated ? 'about ' : ''
    const slots = slotTally.result(counts.est)
    attention.push(...slotTally.attention(slots, approx))
    attention.push(...versionAttention(table.physical, '', keys, counts))
    out.push({
      ...counted(table, counts),
      keys,
      slots,
      jobs: tableJobs,
      migrations: migrations.columns,
      attention,
      verdict:
        attention.length === 0
          ? `ok: every ${counts.estimated ? 'sampled ' : ''}row on data version ${active('data')} and index version ${active('index')}`
          : `needs attention: ${attention.length} item${attention.length === 1 ? '' : 's'}`,
    })
  }
  return { tables: out, needsAttention: out.some((t) => t.attention.length > 0) }
}
