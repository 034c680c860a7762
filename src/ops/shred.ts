import { KeyError, OperationError } from '../errors.js'
import { contextValue } from '../fields/context-values.js'
import { tenantKeyNameOf } from '../schema/key-scope.js'
import type { OpsContext } from './context.js'
import { recordShredEvent } from './key-events.js'
import { type RunOptions, report } from './progress.js'

/** Options of `shred`. */
export interface ShredOptions extends RunOptions {
  /** The tenant whose keys are destroyed: its key-scope column's value. */
  readonly tenant: string | number | bigint
  /** Report what would be destroyed; destroy nothing. @default false */
  readonly dryRun?: boolean
}

/** Outcome of `shred`. */
export interface ShredResult {
  readonly table: string
  readonly tenant: string
  /** The tenant's key name in the key table, e.g. `orders#tenant_id=acme`. */
  readonly keyName: string
  /** Key versions (data and index) destroyed by this call (with `dryRun`: that would be). */
  readonly destroyed: number
  /** Key versions that were destroyed before this call. */
  readonly alreadyDestroyed: number
  readonly dryRun: boolean
}

/**
 * Crypto-shredding of one tenant of a table with per-tenant keys (`keyScope`): every wrapping of
 * every version of the tenant's data and index keys is erased from the key table, in one
 * statement; each key row stays as a `destroyed` tombstone, so the tenant's rows fail with
 * `KEY_DESTROYED` and no process ever creates keys for the tenant again. This process's cached
 * keys of the tenant are zeroed; other processes drop theirs within their key cache TTL (reads)
 * and metadata TTL (writes and searches). An audit record is written to the job table (`kind`
 * `shred`). Rows are not touched: their ciphertexts, blind indexes and plaintext context columns
 * stay (docs/security.md, "Crypto-shredding"). No other tenant's keys change.
 *
 * Irreversible, unless a backup of the key table and a KEK that unwraps it survive.
 * @throws OperationError `OPS_INVALID` when the table has no key scope
 * @throws KeyError `KEY_NOT_FOUND` when the tenant has no keys at all
 * @throws KeyError `KEY_STORE_ERROR` on a database error
 * @example
 * ```ts
 * await ops.shred('orders', { tenant: 'acme' })
 * // update "kfe_keys" set "state" = 'destroyed', "wrappings" = '[]', "check_value" = null
 * //   where "logical_table" = 'orders#tenant_id=acme' and "state" <> 'destroyed'
 * ```
 */
export async function shred(ctx: OpsContext, tableName: string, options: ShredOptions): Promise<ShredResult> {
  const table = ctx.table(tableName)
  if (table.keyScope === undefined)
    throw new OperationError(
      'OPS_INVALID',
      `${table.physical} has no keyScope (per-tenant keys): shred destroys one tenant's keys, and its keys are the whole table's.`,
      { table: table.logical },
    )
  const keyName = tenantKeyNameOf(ctx.schema, table.physical, options.tenant)
  const tenant = contextValue(options.tenant) as string // checked by tenantKeyNameOf
  const before = await ctx.store.read(keyName)
  const versions = before.keys.length + before.corrupt.length
  if (versions === 0) {
    throw new KeyError(
      'KEY_NOT_FOUND',
      `Tenant ${tenant} of ${table.physical} has no keys in the key table; nothing was destroyed.`,
      { table: table.logical },
    )
  }
  const alreadyDestroyed = before.keys.filter((k) => k.state === 'destroyed').length
  const base = { table: table.physical, tenant, keyName, alreadyDestroyed }
  if (options.dryRun === true) return { ...base, destroyed: versions - alreadyDestroyed, dryRun: true }
  report(options, {
    op: 'shred',
    table: table.physical,
    phase: 'destroying',
    done: 0,
    total: 1,
    unit: 'keys',
  })
  const destroyed = await ctx.store.destroy(keyName)
  ctx.ring.forget(keyName)
  await recordShredEvent(ctx, keyName, destroyed)
  report(options, { op: 'shred', table: table.physical, phase: 'destroyed', done: 1, total: 1, unit: 'keys' })
  return { ...base, destroyed, dryRun: false }
}
