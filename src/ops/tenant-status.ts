import type { KeyState } from '../keys/key-store.js'
import { type KeyScope, SCOPE_SEPARATOR } from '../schema/key-scope.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import type { JobRecord } from './job-store.js'
import type { ColumnMigrationStatus } from './migration-status.js'
import { counted, countRows, rowAttention, unscanned, versionAttention } from './row-counts.js'
import type { KeyVersionStatus, StatusOptions, TableStatus } from './status-types.js'
import { scanKeys } from './tenant-key-sets.js'

/**
 * The status of a table with per-tenant keys: its tenants' key sets counted from the key table
 * (names `<table>#<column>=<tenant>`), and its rows (a sample, or every row when `exact`) per
 * version of each row's own tenant; with `options.tenant`, that tenant's key versions and rows.
 * @internal
 */
export async function tenantTableStatus(
  ctx: OpsContext,
  table: TableInfo,
  jobs: Array<JobRecord & { interrupted: boolean }>,
  migrations: readonly ColumnMigrationStatus[],
  attention: string[],
  options: StatusOptions,
): Promise<TableStatus> {
  const prefix = `${table.logical}${SCOPE_SEPARATOR}${(table.keyScope as KeyScope).column}=`
  const byTenant = new Map<string, KeyState[]>()
  for (const k of await ctx.store.listAll()) {
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
  if (staged > 0 && options.tenant === undefined)
    attention.push(
      `${staged} tenant${staged === 1 ? ' has' : 's have'} a staged key version: run \`kfe rotate ${table.physical} --all-tenants --data\` (or \`--index\`) again to activate it`,
    )
  const summary = `per-tenant keys: ${live} tenant${live === 1 ? '' : 's'} with live keys, ${destroyed} shredded`
  const tenants = { live, destroyed, staged }
  const opened = await scanKeys(ctx, table, options.tenant).catch((error: unknown) => {
    // A tenant without keys (or shredded): its key state is the status, no row is counted.
    if (options.tenant === undefined) throw error
    attention.push(`tenant ${String(options.tenant)}: ${error instanceof Error ? error.message : 'no keys'}`)
    return undefined
  })
  if (opened === undefined) {
    return {
      ...unscanned(table),
      keys: [],
      jobs,
      migrations,
      tenants: { ...tenants, shreddedRows: 0, rowsNotOnActive: 0 },
      attention,
      verdict: `needs attention: ${attention[0]} (${summary})`,
    }
  }
  let keys: KeyVersionStatus[] = []
  const tenantArg = options.tenant === undefined ? '' : ` --tenant ${String(options.tenant)}`
  try {
    if (opened.tenants?.only !== undefined) {
      keys = (await ctx.store.list(opened.tenants.subject)).map((k) => ({
        purpose: k.purpose,
        version: k.version,
        state: k.state,
        keks: k.wrappings.map((w) => w.kekId),
        createdAt: k.createdAt,
      }))
      for (const k of keys)
        if (k.state === 'staged')
          attention.push(
            `${k.purpose} version ${k.version} is staged: run \`kfe rotate ${table.physical}${tenantArg} --${k.purpose}\` to activate it`,
          )
    }
    const counts = await countRows(ctx, table, opened.keys, opened.tenants, options)
    if (keys.length > 0) attention.push(...versionAttention(table.physical, tenantArg, keys, counts))
    else {
      // Every tenant: version numbers are each row's own tenant's, so only "not on its tenant's
      // active version" asks for a re-encryption.
      const approx = counts.estimated ? 'about ' : ''
      if (counts.behindRows > 0)
        attention.push(
          `${approx}${counts.behindRows} rows are not on their tenant's active key versions: run \`kfe reencrypt ${table.physical}\``,
        )
      attention.push(...rowAttention(table.physical, '', counts))
    }
    const shredded =
      counts.shreddedRows > 0
        ? `; ${counts.estimated ? 'about ' : ''}${counts.shreddedRows} rows of shredded tenants (unreadable by design)`
        : ''
    return {
      ...counted(table, counts),
      keys,
      slots: [],
      jobs,
      migrations,
      tenants: { ...tenants, shreddedRows: counts.shreddedRows, rowsNotOnActive: counts.behindRows },
      attention,
      verdict:
        attention.length === 0
          ? `ok: every ${counts.estimated ? 'sampled ' : ''}row on its tenant's active versions (${summary}${shredded})`
          : `needs attention: ${attention.length} item${attention.length === 1 ? '' : 's'} (${summary}${shredded})`,
    }
  } finally {
    opened.close()
  }
}
