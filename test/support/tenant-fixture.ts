import { randomBytes, randomUUID } from 'node:crypto'
import type { Dialect, Kysely } from 'kysely'
import {
  encrypted,
  type FieldEncryption,
  type FieldEncryptionOptions,
  type KeyCacheOptions,
  type KeyProvider,
  localKeyProvider,
  readHeader,
} from '../../src/index.js'
import type { FieldEncryptionOps } from '../../src/ops.js'
import { type Backend, uniqueName } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { type MoreOpsOptions, type OpsTables, opsOpener } from './ops-db.js'
import { type TenantProcess, tenantTable } from './tenant-table.js'

/**
 * A table with per-tenant keys (`keyScope: 'tenant_id'`, context `tenant_id, id`; tenant-table.ts),
 * its key and job tables, the application on it, a plain Kysely and the ops: the preamble the
 * per-tenant suites share.
 */
export interface TenantFixture extends OpsTables {
  /** `id` (varchar 36, client UUIDs), `tenant_id`, `name`, `email` (unique index), `ssn` (16-bit index). */
  readonly table: string
  /** The application (`createTenantKeys` as asked, default on: a tenant's first write makes its keys). */
  readonly encryption: FieldEncryption
  readonly db: Kysely<TestDB>
  readonly ops: FieldEncryptionOps
  /** The key name of a tenant: `<table>#tenant_id=<tenant>`. */
  keyName(tenant: string): string
  /** Inserts one row of `tenant` through the application; returns its id. */
  order(tenant: string, email: string, ssn?: string): Promise<string>
  /** The ids a search of one tenant's rows by `email` finds, through `db` (default: the application). */
  byEmail(tenant: string, email: string, db?: Kysely<TestDB>): Promise<Array<{ id: string }>>
  /** Key version in the header of a row's `email` ciphertext. */
  dataVersion(id: string): Promise<number>
  /** Another ops instance on the same database (another machine): own key cache, `db` if given. */
  moreOps(options?: MoreOpsOptions): FieldEncryptionOps
  /** A Kysely on a further connection to the same database (PGlite: the same instance). */
  extraDialect(): Dialect
  /**
   * Another process of the application (its own key ring and caches, on {@link extraDialect}),
   * with `options` over the fixture's; closed by {@link TenantFixture.destroy}.
   */
  another(options?: Partial<FieldEncryptionOptions>): TenantProcess
  /** Waits the metadata TTL twice: every process then sees the key table as it is. */
  settle(): Promise<void>
  destroy(): Promise<void>
}

/** Builds a {@link TenantFixture}. */
export async function tenantFixture(
  backend: Backend,
  options: {
    provider?: KeyProvider
    ttlMs?: number
    opsCache?: KeyCacheOptions
    app?: Partial<FieldEncryptionOptions>
  } = {},
): Promise<TenantFixture> {
  const ttlMs = options.ttlMs ?? 50
  const provider = options.provider ?? localKeyProvider({ id: 'local:tenants', key: randomBytes(32) })
  const base = await tenantTable(backend, {
    prefix: 'tk_orders',
    columns: {
      email: encrypted.text({ index: { name: 'email_bidx', normalize: ['lowercase'] } }),
      ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
    },
    idType: 'varchar(36)',
    tenantType: 'varchar(64)',
    plain: { name: 'varchar(100)' },
    provider: () => provider,
    shared: { metadataTtlMs: ttlMs, createTenantKeys: true, ...options.app },
  })
  const { table, keyTable, schema, raw } = base
  const jobsTable = uniqueName('kfe_jobs')
  await raw.schema.createIndex(`${table}_tenant`).on(table).columns(['tenant_id', 'id']).execute()
  const { encryption, db } = base.process()
  await encryption.init(db) // the key table; a per-tenant table has no table-wide key
  const tables: OpsTables = { backend, table, keyTable, jobsTable, schema, provider, raw, ttlMs }
  const opened = opsOpener(tables, {
    ttlMarginMs: 0,
    ...(options.opsCache === undefined ? {} : { cache: options.opsCache }),
  })
  return {
    ...tables,
    encryption,
    db,
    ops: opened.open(),
    keyName: (tenant) => `${table}#tenant_id=${encodeURIComponent(tenant)}`,
    async order(tenant, email, ssn = '123-45-6789') {
      const id = randomUUID()
      await db.insertInto(table).values({ id, tenant_id: tenant, name: 'o', email, ssn }).execute()
      return id
    },
    byEmail: (tenant, email, on = db) =>
      on.selectFrom(table).select('id').where('tenant_id', '=', tenant).where('email', '=', email).execute(),
    async dataVersion(id) {
      const row = await raw.selectFrom(table).select('email').where('id', '=', id).executeTakeFirstOrThrow()
      return readHeader(row.email as Uint8Array).keyVersion
    },
    moreOps: opened.open,
    extraDialect: base.dialect,
    another: base.process,
    settle: () => new Promise((resolve) => setTimeout(resolve, ttlMs * 2 + 10)),
    async destroy() {
      await opened.close()
      await base.destroy([jobsTable, `${jobsTable}_batches`])
    },
  }
}
