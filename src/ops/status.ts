import { OperationError } from '../errors.js'
import { SEARCHABLE } from '../keys/key-metadata.js'
import type { KeyPurpose } from '../keys/key-provider.js'
import { isMissingRelation } from '../keys/key-table.js'
import { parseTenantKeyName, SCOPE_SEPARATOR } from '../schema/key-scope.js'
import { holdsCiphertext } from '../schema/sample-ciphertext.js'
import type { OpsContext } from './context.js'
import { type JobRecord, JobStore } from './job-store.js'
import { migrationStatus } from './migration-status.js'
import { requireTable, tableExists } from './primary-key.js'
import { loadKeySet } from './row-check.js'
import { counted, countRows, unscanned, versionAttention } from './row-counts.js'
import { SlotTally } from './slot-status.js'
import type { KeyVersionStatus, StatusOptions, StatusResult, TableStatus } from './status-types.js'
import { tenantTableStatus } from './tenant-status.js'

export type { KeyVersionStatus, StatusOptions, StatusResult, TableStatus } from './status-types.js'

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
  // As verify, retire and reencrypt: a tenant that selects nothing is refused, not ignored.
  if (options.tenant !== undefined) {
    const named = options.table === undefined ? undefined : tables[0]
    if (named?.keyScope === undefined)
      throw new OperationError(
        'OPS_INVALID',
        named === undefined
          ? 'A tenant was given without its table: status shows one tenant of one table with per-tenant keys.'
          : `${named.physical} has no per-tenant keys (keyScope): omit the tenant.`,
        named === undefined ? {} : { table: named.logical },
      )
  }
  const store = new JobStore(ctx)
  // No job table yet: no jobs. Any other failure (the database unreachable) is the status's error,
  // not an empty report that would send the operator to `kfe init`.
  const jobs = await store.list().catch((error: unknown) => {
    if (isMissingRelation(error)) return [] as JobRecord[]
    throw error
  })
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
    // A table named is refused when it is not there; over every table, it is one to attend to.
    if (options.table !== undefined) await requireTable(ctx, table)
    else if (!(await tableExists(ctx, table.physical))) {
      const attention = [
        `table ${table.physical} of the encrypted schema does not exist: run the migrations, or correct its name in encryptedSchema`,
      ]
      out.push({
        ...unscanned(table),
        keys: [],
        jobs: [],
        migrations: [],
        attention,
        verdict: `needs attention: ${attention[0]}`,
      })
      continue
    }
    // The key store answers [] when the key table does not exist; its errors are the status's.
    const stored = await ctx.store.list(table.logical)
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
    /** The table's status when its rows cannot be read (what to do first is in `attention`). */
    const unread = (): TableStatus => ({
      ...unscanned(table),
      keys,
      jobs: tableJobs,
      migrations: migrations.columns,
      attention,
      verdict: `needs attention: ${attention[0]}`,
    })
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
    // A column under migration whose encrypted columns are not there yet (the add step not
    // run): rows cannot be read by version; what to do is in `attention`.
    if (migrations.columns.some((c) => !c.encryptedColumns)) {
      out.push(unread())
      continue
    }
    if (table.keyScope !== undefined) {
      out.push(await tenantTableStatus(ctx, table, tableJobs, migrations.columns, attention, options))
      continue
    }
    const active = (p: KeyPurpose) => keys.find((k) => k.purpose === p && k.state === 'active')?.version
    if (active('data') === undefined || active('index') === undefined) {
      attention.push(
        // A purpose with no key at all (not only none active) over rows that hold ciphertext.
        (['data', 'index'] as const).some((p) => !stored.some((k) => k.purpose === p)) &&
          (await holdsCiphertext(ctx.db, ctx.schema, table.logical))
          ? 'keys missing from the key table, but its rows hold ciphertext (KEYS_MISSING): the key table was likely dropped, edited or restored from another environment; restore it from its backup (kfe init would refuse: fresh keys cannot read these rows)'
          : `no active key: run \`kfe init\``,
      )
      out.push(unread())
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
