import { randomBytes, randomUUID } from 'node:crypto'
import { type Dialect, Kysely, sql } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  type FieldEncryptionOptions,
  fieldEncryption,
  type KeyCacheOptions,
  type KeyProvider,
  localKeyProvider,
  readHeader,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, onlyTables, uniqueName } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { dialectsOn } from './tenant-dialects.js'

/**
 * A table with per-tenant keys (`keyScope: 'tenant_id'`, context `tenant_id, id`), its key and job
 * tables, the application on it, a plain Kysely and the ops: the preamble the per-tenant suites share.
 */
export interface TenantFixture {
  readonly backend: Backend
  /** `id` (varchar 36, client UUIDs), `tenant_id`, `name`, `email` (unique index), `ssn` (16-bit index). */
  readonly table: string
  readonly keyTable: string
  readonly jobsTable: string
  readonly schema: EncryptedSchema
  readonly provider: KeyProvider
  /** The application (`createTenantKeys` as asked, default on: a tenant's first write makes its keys). */
  readonly encryption: FieldEncryption
  readonly db: Kysely<TestDB>
  /** A plain Kysely on the same database (what the ops use). */
  readonly raw: Kysely<TestDB>
  readonly ops: FieldEncryptionOps
  /** Metadata TTL of the application and the ops (ms). */
  readonly ttlMs: number
  /** The key name of a tenant: `<table>#tenant_id=<tenant>`. */
  keyName(tenant: string): string
  /** Inserts one row of `tenant` through the application; returns its id. */
  order(tenant: string, email: string, ssn?: string): Promise<string>
  /** Key version in the header of a row's `email` ciphertext. */
  dataVersion(id: string): Promise<number>
  /** Another ops instance on the same database (another machine): own key cache, `db` if given. */
  moreOps(options?: {
    db?: Kysely<TestDB>
    cache?: KeyCacheOptions
    provider?: KeyProvider
  }): FieldEncryptionOps
  /** A Kysely on a further connection to the same database (PGlite: the same instance). */
  extraDialect(): Dialect
  /**
   * Another process of the application (its own key ring and caches, on {@link extraDialect}),
   * with `options` over the fixture's; closed by {@link TenantFixture.destroy}.
   */
  another(options?: Partial<FieldEncryptionOptions>): { encryption: FieldEncryption; db: Kysely<TestDB> }
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
  const table = uniqueName('tk_orders')
  const keyTable = uniqueName('kfe_keys')
  const jobsTable = uniqueName('kfe_jobs')
  const ttlMs = options.ttlMs ?? 50
  const provider = options.provider ?? localKeyProvider({ id: 'local:tenants', key: randomBytes(32) })
  const schema = encryptedSchema(
    {
      [table]: {
        email: encrypted.text({ index: { name: 'email_bidx', unique: true, normalize: ['lowercase'] } }),
        ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
      },
    },
    { tables: { [table]: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' } } },
  )
  const appOptions = (more?: Partial<FieldEncryptionOptions>) =>
    fieldEncryption({
      schema,
      keyProvider: provider,
      keyTable,
      metadataTtlMs: ttlMs,
      verifySchema: onlyTables(table),
      createTenantKeys: true,
      ...options.app,
      ...more,
    })
  const encryption = appOptions()
  const others: Array<{ encryption: FieldEncryption; db: Kysely<TestDB> }> = []
  const { dialects, close } = dialectsOn(backend, 2)
  // PGlite: every further dialect shares the one instance.
  const extra = backend.name === 'pglite' ? dialects[1]! : undefined
  const db = new Kysely<TestDB>({ dialect: encryption.wrap(dialects[0]!), plugins: [encryption.plugin] })
  const raw = new Kysely<TestDB>({ dialect: dialects[1]! })
  await raw.schema
    .createTable(table)
    .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
    .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull())
    .addColumn('name', 'varchar(100)')
    .$call(addEncryptedColumns(schema, table, backend.family))
    .execute()
  await raw.schema.createIndex(`${table}_tenant`).on(table).columns(['tenant_id', 'id']).execute()
  await createBlindIndexes(raw, schema, table)
  await encryption.init(db) // the key table; a per-tenant table has no table-wide key
  const opened: FieldEncryptionOps[] = []
  const moreOps: TenantFixture['moreOps'] = (o = {}) => {
    const ops = fieldEncryptionOps({
      db: o.db ?? raw,
      schema,
      keyProvider: o.provider ?? provider,
      keyTable,
      jobsTable,
      metadataTtlMs: ttlMs,
      ttlMarginMs: 0,
      ...((o.cache ?? options.opsCache) ? { cache: o.cache ?? options.opsCache } : {}),
    })
    opened.push(ops)
    return ops
  }
  const ops = moreOps()
  return {
    backend,
    table,
    keyTable,
    jobsTable,
    schema,
    provider,
    encryption,
    db,
    raw,
    ops,
    ttlMs,
    keyName: (tenant) => `${table}#tenant_id=${encodeURIComponent(tenant)}`,
    async order(tenant, email, ssn = '123-45-6789') {
      const id = randomUUID()
      await db.insertInto(table).values({ id, tenant_id: tenant, name: 'o', email, ssn }).execute()
      return id
    },
    async dataVersion(id) {
      const row = await raw.selectFrom(table).select('email').where('id', '=', id).executeTakeFirstOrThrow()
      return readHeader(row.email as Uint8Array).keyVersion
    },
    moreOps,
    extraDialect: () => extra ?? backend.createDialect(),
    another(more) {
      const app = appOptions(more)
      const dialect = extra ?? backend.createDialect()
      const other = {
        encryption: app,
        db: new Kysely<TestDB>({ dialect: app.wrap(dialect), plugins: [app.plugin] }),
      }
      others.push(other)
      return other
    },
    settle: () => new Promise((resolve) => setTimeout(resolve, ttlMs * 2 + 10)),
    async destroy() {
      for (const t of [table, keyTable, jobsTable, `${jobsTable}_batches`])
        await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      for (const o of opened) await o.close()
      for (const o of others) {
        await o.encryption.close()
        // PGlite: one instance under every Kysely, closed once below.
        if (backend.name !== 'pglite') await o.db.destroy()
      }
      await encryption.close()
      await db.destroy()
      if (backend.name !== 'pglite') await raw.destroy()
      await close()
    },
  }
}
