import type { TableInfo } from '../schema/schema.js'
import type { JobSpec, RowPlan } from './job-spec.js'
import type { KeySet, StoredRow } from './row-check.js'
import type { TenantKeySets } from './tenant-key-sets.js'

/**
 * The {@link JobSpec} hooks of a job over a table with per-tenant keys: its rows (one tenant's or
 * every tenant's), the keys each batch loads (those of the tenants its rows name), its targets
 * (and, over every tenant, the key generation a later run must find to join the job).
 * None without `tenants` (the table's one key set).
 * @internal
 */
export function tenantJobHooks(
  tenants: TenantKeySets | undefined,
): Pick<JobSpec, 'where' | 'loadKeys' | 'targets' | 'generation'> {
  if (tenants === undefined) return {}
  return {
    where: tenants.where,
    loadKeys: (names: readonly string[], fresh: boolean) => tenants.view(names, fresh),
    targets: () => tenants.targets(),
    ...(tenants.only === undefined ? { generation: (trx) => tenants.generation(trx) } : {}),
  }
}

/**
 * A row's plan under the keys of the tenant it holds as read (per-tenant keys), or under `keys`
 * itself: `plan` with those keys; load them first when not loaded; a shredded tenant's row is
 * counted apart, a row without a usable tenant fails (unless `empty` says it holds nothing the job
 * reads or writes), another tenant's row (in a one-tenant job) is left alone.
 * @internal
 */
export function planUnderTenant(
  keys: KeySet,
  row: StoredRow,
  plan: (keys: KeySet) => RowPlan,
  empty?: () => boolean,
): RowPlan {
  const picked = keys.tenants?.of(row) ?? { kind: 'keys', keys }
  switch (picked.kind) {
    case 'keys':
      return plan(picked.keys)
    case 'unloaded':
      return { kind: 'keys', tenant: picked.tenant }
    case 'shredded':
      return { kind: 'shredded' }
    case 'missing':
      // A row without a usable tenant fails only if it holds something to read or write.
      return empty?.() === true ? { kind: 'skip' } : { kind: 'failed' }
    case 'other':
      return { kind: 'skip' }
  }
}

/**
 * The row-context part of a job's compare-and-set `match`: each context column but the primary key
 * (which the write names), as read. A row the application moved to another context meanwhile is
 * read again, never written with ciphertexts bound to the former one.
 * @internal
 */
export function contextMatch(table: TableInfo, pk: string, row: StoredRow): Record<string, unknown> {
  const match: Record<string, unknown> = {}
  for (const c of table.context) if (c !== pk) match[c] = row[c] ?? null
  return match
}
