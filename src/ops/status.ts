import { SEARCHABLE } from '../keys/key-metadata.js'
import type { KeyPurpose } from '../keys/key-provider.js'
import type { KeyState } from '../keys/key-store.js'
import { type KeyScope, SCOPE_SEPARATOR } from '../schema/key-scope.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { type JobRecord, JobStore } from './job-store.js'
import { type ColumnMigrationStatus, migrationStatus } from './migration-status.js'
import { type RunOptions, report } from './progress.js'
import { loadKeySet } from './row-check.js'
import { scanTable } from './scan.js'
import { type IndexSlotStatus, SlotTally } from './slot-status.js'

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
   * shredded, how many have a staged version. Its rows are not counted per version (the jobs do
   * not run on such tables yet), so the row counts above are 0.
   */
  readonly tenants?: { readonly live: number; readonly destroyed: number; readonly staged: number }
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
    for (const j of jobs.filter((j) => j.table === table.logical))
      tableJobs.push({ ...j, interrupted: await interrupted(j) })
    for (const j of tableJobs) {
      if (j.interrupted)
        attention.push(
          `job ${j.id} was interrupted at ${j.doneBatches}/${j.totalBatches} batches: run \`kfe reencrypt ${table.physical}\` to resume`,
        )
      if (j.failed > 0)
        attention.push(
          `job ${j.id} could not read ${j.failed} rows: run \`kfe verify ${table.physical}\` to list them`,
        )
    }
    if (table.keyScope !== undefined) {
      out.push(await tenantTableStatus(ctx, table, tableJobs, migrations.columns, attention))
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
    const keySet = await loadKeySet(ctx, table)
    const live = keys.filter((k) => k.purpose === 'index' && SEARCHABLE.has(k.state))
    const slotTally = new SlotTally(table, live, active('index'))
    const byData: Record<string, number> = {}
    const byIndex: Record<string, number> = {}
    let plaintextRows = 0
    let failedRows = 0
    const scan = await scanTable(
      ctx,
      table,
      keySet,
      {
        signal: options.signal,
        sample: options.exact === true ? undefined : (options.sampleSize ?? 2000),
        onPage: (rows) =>
          report(options, {
            op: 'status',
            table: table.physical,
            phase: 'rows',
            done: rows,
            total: undefined,
            unit: 'rows',
          }),
      },
      ({ check }) => {
        for (const v of new Set(check.dataVersions.values())) byData[v] = (byData[v] ?? 0) + 1
        for (const v of new Set(check.indexVersions.values()))
          if (v !== null) byIndex[v] = (byIndex[v] ?? 0) + 1
        slotTally.add(check)
        if (check.plaintext.length > 0) plaintextRows++
        if (check.failures.length > 0) failedRows++
      },
    )
    const scale = scan.sampled && scan.rows > 0 ? scan.total / scan.rows : 1
    const est = (n: number) => (scale === 1 ? n : Math.round(n * scale))
    const rowsByDataVersion = Object.fromEntries(Object.entries(byData).map(([v, n]) => [v, est(n)]))
    const rowsByIndexVersion = Object.fromEntries(Object.entries(byIndex).map(([v, n]) => [v, est(n)]))
    const approx = scan.sampled ? 'about ' : ''
    const slots = slotTally.result(est)
    attention.push(...slotTally.attention(slots, approx))
    for (const purpose of ['data', 'index'] as const) {
      const counts = purpose === 'data' ? rowsByDataVersion : rowsByIndexVersion
      for (const [v, n] of Object.entries(counts)) {
        if (Number(v) !== active(purpose) && n > 0)
          attention.push(
            `${approx}${n} rows still on ${purpose} version ${v}: run \`kfe reencrypt ${table.physical}\``,
          )
      }
      for (const k of keys) {
        if (k.purpose === purpose && k.state === 'decrypt-only' && (counts[k.version] ?? 0) === 0)
          attention.push(
            `${purpose} version ${k.version} ${scan.sampled ? 'appears unused (sampled)' : 'is unused'}: \`kfe retire ${table.physical} --${purpose} ${k.version}\``,
          )
      }
    }
    if (plaintextRows > 0)
      attention.push(`${approx}${est(plaintextRows)} rows hold plaintext values (migration under way)`)
    if (failedRows > 0)
      attention.push(
        `${approx}${est(failedRows)} rows fail to decrypt or to match their index: run \`kfe verify ${table.physical}\``,
      )
    out.push({
      table: table.physical,
      logicalTable: table.logical,
      keys,
      rows: scan.total,
      scanned: scan.rows,
      estimated: scan.sampled,
      rowsByDataVersion,
      rowsByIndexVersion,
      slots,
      plaintextRows: est(plaintextRows),
      failedRows: est(failedRows),
      jobs: tableJobs,
      migrations: migrations.columns,
      attention,
      verdict:
        attention.length === 0
          ? `ok: every ${scan.sampled ? 'sampled ' : ''}row on data version ${active('data')} and index version ${active('index')}`
          : `needs attention: ${attention.length} item${attention.length === 1 ? '' : 's'}`,
    })
  }
  return { tables: out, needsAttention: out.some((t) => t.attention.length > 0) }
}

/**
 * The status of a table with per-tenant keys: its tenants' key sets counted from the key table
 * (names `<table>#<column>=<tenant>`); no row scan.
 */
async function tenantTableStatus(
  ctx: OpsContext,
  table: TableInfo,
  jobs: Array<JobRecord & { interrupted: boolean }>,
  migrations: readonly ColumnMigrationStatus[],
  attention: string[],
): Promise<TableStatus> {
  const prefix = `${table.logical}${SCOPE_SEPARATOR}${(table.keyScope as KeyScope).column}=`
  const byTenant = new Map<string, KeyState[]>()
  for (const k of await ctx.store.listAll().catch(() => [])) {
    if (!k.logicalTable.startsWith(prefix)) continue
    const states = byTenant.get(k.logicalTable) ?? []
    states.push(k.state)
    byTenant.set(k.logicalTable, states)
  }
  let live = 0
  let destroyed = 0
  let staged = 0
  for (const states of byTenant.values()) {
    if (states.includes('active')) live++
    else if (states.every((s) => s === 'destroyed')) destroyed++
    if (states.includes('staged')) staged++
  }
  if (staged > 0)
    attention.push(
      `${staged} tenant${staged === 1 ? ' has' : 's have'} a staged key version: run \`kfe rotate ${table.physical} --all-tenants --data\` (or \`--index\`) again to activate it`,
    )
  const summary = `per-tenant keys: ${live} tenant${live === 1 ? '' : 's'} with live keys, ${destroyed} shredded; rows per key version are not counted for per-tenant tables`
  return {
    ...unscanned(table),
    keys: [],
    jobs,
    migrations,
    tenants: { live, destroyed, staged },
    attention,
    verdict: attention.length === 0 ? `ok (${summary})` : `needs attention: ${attention[0]} (${summary})`,
  }
}

/** The parts of a table's status that a status without a row scan leaves at zero. */
function unscanned(table: TableInfo) {
  return {
    table: table.physical,
    logicalTable: table.logical,
    rows: 0,
    scanned: 0,
    estimated: false,
    rowsByDataVersion: {},
    rowsByIndexVersion: {},
    slots: [],
    plaintextRows: 0,
    failedRows: 0,
  } as const
}
