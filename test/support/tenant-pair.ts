import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import {
  type EncryptedSchema,
  encrypted,
  type FieldEncryption,
  type FieldEncryptionOptions,
  localKeyProvider,
} from '../../src/index.js'
import type { Backend } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { tenantTable } from './tenant-table.js'

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
 * `email_bidx`), context `(tenant_id, id)`, `keyScope: 'tenant_id'` (tenant-table.ts); its key
 * table initialised.
 */
export async function tenantPair(backend: Backend, options: TenantPairOptions): Promise<TenantPair> {
  const kek = randomBytes(32)
  const base = await tenantTable(backend, {
    prefix: options.prefix,
    columns: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
    idType: 'integer',
    tenantType: options.tenantType ?? 'varchar(16)',
    // One provider object each: closing a process closes its own.
    provider: () => localKeyProvider({ id: `local:${options.prefix}`, key: Buffer.from(kek) }),
    shared: options.shared,
  })
  const writer = base.process({ createTenantKeys: true })
  const reader = base.process(options.reader)
  await writer.encryption.init(writer.db) // the key table
  return {
    table: base.table,
    keyTable: base.keyTable,
    schema: base.schema,
    writer: writer.encryption,
    reader: reader.encryption,
    writerDb: writer.db,
    readerDb: reader.db,
    raw: base.raw,
    teardown: () => base.destroy(),
  }
}
