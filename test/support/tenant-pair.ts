import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  type FieldEncryptionOptions,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, onlyTables, uniqueName } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { dialectsOn } from './tenant-dialects.js'

/** A table with per-tenant keys, written by one process and read by another, plus a raw view. */
export interface TenantPair {
  readonly table: string
  readonly keyTable: string
  readonly schema: EncryptedSchema
  /** Creates tenants' keys on their first write (`createTenantKeys`). */
  readonly writer: FieldEncryption
  /** Never saw the writer's keys. */
  readonly reader: FieldEncryption
  readonly writerDb: Kysely<TestDB>
  readonly readerDb: Kysely<TestDB>
  /** No plugin: what is stored. */
  readonly raw: Kysely<TestDB>
  /** Drops the tables and closes everything. */
  teardown(): Promise<void>
}

/** Options of {@link tenantPair}; each has the default that most suites want. */
export interface TenantPairOptions {
  /** Prefix of the table's unique name. */
  readonly prefix: string
  /** SQL type of `tenant_id`. @default 'varchar(16)' */
  readonly tenantType?: string
  /** Options both processes share (cache, metadata TTL…). */
  readonly shared?: Partial<FieldEncryptionOptions>
  /** The reader's own options (e.g. `metadataMax`). */
  readonly reader?: Partial<FieldEncryptionOptions>
}

/**
 * Table `<prefix>_…` (`id` integer primary key, `tenant_id`, `email` encrypted with a blind index
 * `email_bidx`), context `(tenant_id, id)`, `keyScope: 'tenant_id'`; its key table initialised.
 */
export async function tenantPair(backend: Backend, options: TenantPairOptions): Promise<TenantPair> {
  const table = uniqueName(options.prefix)
  const keyTable = uniqueName('kfe_keys')
  const schema = encryptedSchema(
    { [table]: { email: encrypted.text({ index: { name: 'email_bidx' } }) } },
    { tables: { [table]: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' } } },
  )
  const kek = randomBytes(32)
  const base = (): FieldEncryptionOptions => ({
    schema,
    keyProvider: localKeyProvider({ id: `local:${options.prefix}`, key: Buffer.from(kek) }),
    keyTable,
    verifySchema: onlyTables(table),
    ...options.shared,
  })
  const writer = fieldEncryption({ ...base(), createTenantKeys: true })
  const reader = fieldEncryption({ ...base(), ...options.reader })
  const made = dialectsOn(backend, 3)
  const writerDb = new Kysely<TestDB>({ dialect: writer.wrap(made.dialects[0]!), plugins: [writer.plugin] })
  const readerDb = new Kysely<TestDB>({ dialect: reader.wrap(made.dialects[1]!), plugins: [reader.plugin] })
  const raw = new Kysely<TestDB>({ dialect: made.dialects[2]! })
  await raw.schema
    .createTable(table)
    .addColumn('id', 'integer', (c) => c.primaryKey())
    // biome-ignore lint/suspicious/noExplicitAny: a column type chosen by the suite.
    .addColumn('tenant_id', sql.raw(options.tenantType ?? 'varchar(16)') as any, (c) => c.notNull())
    .$call(addEncryptedColumns(schema, table, backend.family))
    .execute()
  await createBlindIndexes(raw, schema, table)
  await writer.init(writerDb) // the key table
  return {
    table,
    keyTable,
    schema,
    writer,
    reader,
    writerDb,
    readerDb,
    raw,
    async teardown() {
      for (const t of [table, keyTable]) await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      await writer.close()
      await reader.close()
      await writerDb.destroy()
      // PGlite: the three share one instance, which the first destroy closed.
      if (backend.name !== 'pglite') await readerDb.destroy()
      if (backend.name !== 'pglite') await raw.destroy()
      await made.close()
    },
  }
}
