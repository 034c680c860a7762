import { type Expression, type Kysely, type SqlBool, sql } from 'kysely'
import { KeyError, OperationError, QueryRefusedError } from '../errors.js'
import { contextValue } from '../fields/context-values.js'
import type { StoredKey } from '../keys/stored-key.js'
import { exactContextGuard } from '../plugin/context-guard.js'
import { type KeyScope, tenantKeyName } from '../schema/key-scope.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import {
  buildKeySet,
  type KeySet,
  loadKeySet,
  type RowKeySets,
  type RowKeys,
  type StoredRow,
} from './row-check.js'
import { tenantKeyGeneration } from './tenant-generation.js'

/** A tenant's keys as the cache holds them. */
type TenantEntry =
  | { readonly kind: 'keys'; readonly keys: KeySet; readonly loadedAt: number; readonly unwrappedAt: number }
  | { readonly kind: 'shredded' | 'missing'; readonly loadedAt: number }

/**
 * The key sets of a table with per-tenant keys, one per tenant, for a job or a scan over its rows
 * (every tenant's, or one tenant's): each row is checked and rewritten under the keys of the tenant
 * it holds as read, whose value is also bound into the row's AAD and matched by the job's
 * compare-and-set write, so a row moved to another tenant meanwhile is never written under the
 * former tenant's keys.
 *
 * Loaded outside any transaction, as a batch's rows name tenants not seen yet; each tenant's key
 * versions are read again from the key table once per metadata TTL (a shred or a rotation is seen
 * within it), in one query per 500 tenants due. Its unwrapped copies are kept for the key cache TTL
 * (`cache.ttlMs`), so a job over 1,000 tenants unwraps each tenant key at most once per cache TTL
 * whatever the ring's cache can hold. Owned by the op that made it: {@link TenantKeySets.destroy}
 * zeroes every copy.
 * @internal
 */
export class TenantKeySets implements RowKeySets {
  readonly #ctx: OpsContext
  readonly #table: TableInfo
  readonly #scope: KeyScope
  readonly #entries = new Map<string, TenantEntry>()
  /** The one tenant a job or scan covers (canonical value), or undefined: every tenant. */
  readonly only: string | undefined

  /**
   * @param tenant - only this tenant's rows (a value of the scope column), or every tenant's.
   * @throws OperationError `OPS_INVALID` when the table has no key scope, or the tenant cannot be one.
   */
  constructor(ctx: OpsContext, table: TableInfo, tenant?: unknown) {
    if (table.keyScope === undefined)
      throw new OperationError('OPS_INVALID', `${table.physical} has no per-tenant keys (keyScope).`, {
        table: table.logical,
      })
    this.#ctx = ctx
    this.#table = table
    this.#scope = table.keyScope
    this.only = tenant === undefined ? undefined : contextValue(tenant)
    if (tenant !== undefined && this.only === undefined)
      throw new OperationError('OPS_INVALID', `A tenant of ${table.physical} is a string or an integer.`, {
        table: table.logical,
      })
    if (this.only !== undefined) tenantKeyName(table, this.only) // TENANT_INVALID early
  }

  /**
   * The filter of the rows covered, undefined for every row: the scope column equal to the tenant
   * (`tenant_id = 'acme'`, which its index serves) and, on MySQL/MariaDB, equal byte for byte (the
   * plugin's exact context guard, `md5(concat(tenant_id)) = md5('acme')`): their default collations
   * match `'ACME'` and `'acme '` to `'acme'`, rows of other tenants, with keys and jobs of their own.
   */
  get where(): Expression<SqlBool> | undefined {
    if (this.only === undefined) return undefined
    const equal = sql<SqlBool>`${sql.ref(this.#scope.column)} = ${this.only}`
    if (this.#ctx.family !== 'mysql') return equal
    const guard = exactContextGuard(this.#scope.column, undefined, this.only)
    return sql<SqlBool>`${equal} and ${{ toOperationNode: () => guard }}`
  }

  /** The key name of the one tenant covered (its job's subject), or the table's logical name. */
  get subject(): string {
    return this.only === undefined ? this.#table.logical : tenantKeyName(this.#table, this.only)
  }

  /** The tenant a stored row holds (canonical), or undefined when its value cannot be one. */
  tenantOf(row: StoredRow): string | undefined {
    return contextValue(row[this.#scope.column])
  }

  /** {@link RowKeySets.of}: the row's tenant's keys, as loaded. */
  of(row: StoredRow): RowKeys {
    const tenant = this.tenantOf(row)
    if (tenant === undefined) return { kind: 'missing' }
    if (this.only !== undefined && tenant !== this.only) return { kind: 'other' }
    const entry = this.#entries.get(tenant)
    if (entry === undefined) return { kind: 'unloaded', tenant }
    return entry.kind === 'keys' ? { kind: 'keys', keys: entry.keys } : { kind: entry.kind }
  }

  /**
   * Loads the keys of `tenants` not loaded yet, and reads again those loaded longer than the
   * metadata TTL ago (every one when `fresh`). Outside any transaction.
   * @throws KeyProviderError when a live key cannot be unwrapped (the job pauses).
   */
  async load(tenants: Iterable<string>, fresh = false): Promise<void> {
    const now = performance.now()
    const due = new Set<string>()
    for (const [tenant, entry] of this.#entries)
      if (fresh || now - entry.loadedAt >= this.#ctx.metadataTtlMs) due.add(tenant)
    for (const tenant of tenants) if (!this.#entries.has(tenant)) due.add(tenant)
    if (this.only !== undefined && !this.#entries.has(this.only)) due.add(this.only)
    if (due.size === 0) return
    const names = new Map<string, string>()
    for (const tenant of due) {
      const name = keyNameOrUndefined(this.#table, tenant)
      // A value no key can be named by ('' or too long: the application refuses to write it) has
      // no keys: its rows are counted as without a usable tenant, not an error of the whole job.
      if (name === undefined) this.#entries.set(tenant, { kind: 'missing', loadedAt: now })
      else names.set(name, tenant)
    }
    const rows = await this.#read([...names.keys()])
    for (const [name, tenant] of names) await this.#set(tenant, name, rows.get(name) ?? [], now)
  }

  /** Loads `tenants` of rows (see {@link TenantKeySets.load}). */
  loadRows(rows: readonly StoredRow[]): Promise<void> {
    const tenants = new Set<string>()
    for (const row of rows) {
      const tenant = this.tenantOf(row)
      if (tenant !== undefined && (this.only === undefined || tenant === this.only)) tenants.add(tenant)
    }
    return this.load(tenants)
  }

  /**
   * The key set a job's batch starts with: no keys of its own, the rows' picked by {@link of}; its
   * active versions are the job's targets (the tenant's active ones for a job of one tenant, 0 for
   * every tenant: each row onto its own tenant's).
   */
  async view(tenants: readonly string[], fresh: boolean): Promise<KeySet> {
    await this.load(tenants, fresh)
    const own = this.only === undefined ? undefined : this.#entries.get(this.only)
    if (this.only !== undefined && own?.kind !== 'keys')
      throw new KeyError(
        own?.kind === 'shredded' ? 'KEY_DESTROYED' : 'KEY_NOT_FOUND',
        `Tenant ${this.only} of ${this.#table.physical} has ${own?.kind === 'shredded' ? 'been shredded' : 'no active keys'}.`,
        { table: this.#table.logical },
      )
    return {
      data: new Map(),
      index: new Map(),
      activeData: own?.kind === 'keys' ? own.keys.activeData : 0,
      activeIndex: own?.kind === 'keys' ? own.keys.activeIndex : 0,
      retiredIndex: new Set(),
      liveIndex: [],
      tenants: this,
    }
  }

  /** The job's targets, from the key table itself: the tenant's active versions, or 0/0 for every tenant. */
  async targets(): Promise<{ data: number; index: number }> {
    if (this.only === undefined) return { data: 0, index: 0 }
    const name = this.subject
    const versions = await this.#ctx.store.list(name)
    const active = (p: string) => versions.find((k) => k.purpose === p && k.state === 'active')?.version
    const data = active('data')
    const index = active('index')
    if (data === undefined || index === undefined)
      throw new KeyError(
        'KEY_NOT_FOUND',
        `${name} has no active ${data === undefined ? 'data' : 'index'} key.`,
        {
          table: this.#table.logical,
        },
      )
    return { data, index }
  }

  /** The tenants' key generation (a whole-table job's; see tenant-generation.ts). */
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  generation(db: Kysely<any>): Promise<string> {
    return tenantKeyGeneration(this.#ctx, this.#table, db)
  }

  /** Zeroes every copy held. */
  destroy(): void {
    for (const entry of this.#entries.values()) if (entry.kind === 'keys') wipe(entry.keys)
    this.#entries.clear()
  }

  /** The stored versions of each key name due: one query per 500 names (`in (…)`). */
  async #read(names: readonly string[]): Promise<Map<string, StoredKey[]>> {
    const out = new Map<string, StoredKey[]>()
    for (const k of await this.#ctx.store.listAll(names)) {
      const list = out.get(k.logicalTable) ?? []
      list.push(k)
      out.set(k.logicalTable, list)
    }
    return out
  }

  async #set(tenant: string, name: string, versions: readonly StoredKey[], now: number): Promise<void> {
    const before = this.#entries.get(tenant)
    const held = before?.kind === 'keys' ? before : undefined
    let entry: TenantEntry
    if (versions.length > 0 && versions.every((k) => k.state === 'destroyed')) {
      entry = { kind: 'shredded', loadedAt: now }
    } else {
      // Copies younger than the key cache TTL are kept; older ones are unwrapped again (a revoked
      // KEK is then noticed within that TTL, as by the application).
      const reuse =
        held !== undefined && now - held.unwrappedAt < this.#ctx.cacheTtlMs ? held.keys : undefined
      const active = (p: string) => versions.some((k) => k.purpose === p && k.state === 'active')
      if (!active('data') || !active('index')) entry = { kind: 'missing', loadedAt: now }
      else {
        const keys = await buildKeySet(this.#ctx, name, versions, reuse)
        entry = {
          kind: 'keys',
          keys,
          loadedAt: now,
          unwrappedAt: reuse === undefined ? now : held!.unwrappedAt,
        }
      }
    }
    // Copies of the former set not handed over to the new one are wiped.
    if (held !== undefined) {
      const kept =
        entry.kind === 'keys'
          ? new Set([...entry.keys.data.values(), ...entry.keys.index.values()])
          : new Set()
      for (const k of [...held.keys.data.values(), ...held.keys.index.values()]) if (!kept.has(k)) k.destroy()
    }
    this.#entries.set(tenant, entry)
  }
}

function wipe(keys: KeySet): void {
  for (const k of keys.data.values()) k.destroy()
  for (const k of keys.index.values()) k.destroy()
}

/**
 * The keys a read-only scan of `table` checks rows with (verify, status, retire's count, a dry
 * run): the table's own set, or, for a table with per-tenant keys, a {@link TenantKeySets} over
 * every tenant or the one named (the scan's `tenants` option; `close` zeroes its copies).
 * @throws OperationError `OPS_INVALID` for a tenant of a table without per-tenant keys
 */
export async function scanKeys(
  ctx: OpsContext,
  table: TableInfo,
  tenant?: unknown,
): Promise<{ keys: KeySet; tenants: TenantKeySets | undefined; close(): void }> {
  if (table.keyScope === undefined) {
    if (tenant !== undefined)
      throw new OperationError(
        'OPS_INVALID',
        `${table.physical} has no per-tenant keys (keyScope): omit the tenant.`,
        {
          table: table.logical,
        },
      )
    return { keys: await loadKeySet(ctx, table), tenants: undefined, close() {} }
  }
  const tenants = new TenantKeySets(ctx, table, tenant)
  try {
    return { keys: await tenants.view([], false), tenants, close: () => tenants.destroy() }
  } catch (error) {
    tenants.destroy()
    throw error
  }
}

/** The key name of `tenant`, or undefined when it cannot name keys (`TENANT_INVALID`). */
function keyNameOrUndefined(table: TableInfo, tenant: string): string | undefined {
  try {
    return tenantKeyName(table, tenant)
  } catch (error) {
    if (error instanceof QueryRefusedError && error.code === 'TENANT_INVALID') return undefined
    throw error
  }
}
