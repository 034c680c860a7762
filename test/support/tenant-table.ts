import { type Dialect, Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encryptedSchema,
  type FieldEncryption,
  type FieldEncryptionOptions,
  fieldEncryption,
  type KeyProvider,
  type SchemaDefinition,
} from '../../src/index.js'
import { type Backend, dropTables, onlyTables, uniqueName } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { newPGlite } from './pglite.js'

/** One process of the application: its own `fieldEncryption` and the Kysely it wraps. */
export interface TenantProcess {
  readonly encryption: FieldEncryption
  readonly db: Kysely<TestDB>
}

/**
 * A table with per-tenant keys (`keyScope: 'tenant_id'`, context `(tenant_id, id)`), a plain Kysely
 * on it and the processes of the application: what the per-tenant fixtures (tenant-fixture.ts,
 * tenant-pair.ts) build on. Its key table is made by the first process's `init`.
 */
export interface TenantTable {
  readonly backend: Backend
  readonly table: string
  readonly keyTable: string
  readonly schema: EncryptedSchema
  /** No plugin: what is stored. */
  readonly raw: Kysely<TestDB>
  /**
   * Another process of the application, on a further connection to the database: its own key
   * ring and caches, `options` over the shared ones; closed by {@link TenantTable.destroy}.
   */
  process(options?: Partial<FieldEncryptionOptions>): TenantProcess
  /** A further connection to the same database (PGlite: the same instance); its Kysely is the caller's. */
  dialect(): Dialect
  /** Drops the table, the key table and `more`, and closes every process and the plain Kysely. */
  destroy(more?: readonly string[]): Promise<void>
}

/** Options of {@link tenantTable}. */
export interface TenantTableOptions {
  /** Prefix of the table's unique name. */
  readonly prefix: string
  /** The encrypted columns. */
  readonly columns: SchemaDefinition[string]
  /** SQL type of `id`, the primary key (the tests give the ids). */
  readonly idType: 'integer' | 'varchar(36)'
  /** SQL type of `tenant_id`. */
  readonly tenantType: string
  /** Plain, nullable columns besides `id` and `tenant_id`: name → SQL type. */
  readonly plain?: Readonly<Record<string, string>>
  /** The key provider of a new process (one object for all, or one each: closing a process closes its own). */
  readonly provider: () => KeyProvider
  /** Options every process shares. */
  readonly shared?: Partial<FieldEncryptionOptions>
}

/** Creates the table of a {@link TenantTable}, with its blind indexes. */
export async function tenantTable(backend: Backend, options: TenantTableOptions): Promise<TenantTable> {
  const table = uniqueName(options.prefix)
  const keyTable = uniqueName('kfe_keys')
  const schema = encryptedSchema(
    { [table]: options.columns },
    { tables: { [table]: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' } } },
  )
  // PGlite: one in-memory instance under every connection, closed once at the end.
  const pglite = backend.name === 'pglite' ? newPGlite() : undefined
  const dialect = () => (pglite === undefined ? backend.createDialect() : new PGliteDialect(pglite))
  const processes: TenantProcess[] = []
  const raw = new Kysely<TestDB>({ dialect: dialect() })
  await raw.schema
    .createTable(table)
    .addColumn('id', options.idType, (c) => c.primaryKey())
    .addColumn('tenant_id', sql.raw(options.tenantType), (c) => c.notNull())
    .$call((b) =>
      Object.entries(options.plain ?? {}).reduce((t, [name, type]) => t.addColumn(name, sql.raw(type)), b),
    )
    .$call(addEncryptedColumns(schema, table, backend.family))
    .execute()
  await createBlindIndexes(raw, schema, table)
  return {
    backend,
    table,
    keyTable,
    schema,
    raw,
    process(more) {
      const encryption = fieldEncryption({
        schema,
        keyProvider: options.provider(),
        keyTable,
        verifySchema: onlyTables(table),
        ...options.shared,
        ...more,
      })
      const made = {
        encryption,
        db: new Kysely<TestDB>({ dialect: encryption.wrap(dialect()), plugins: [encryption.plugin] }),
      }
      processes.push(made)
      return made
    },
    dialect,
    async destroy(more = []) {
      await dropTables(raw, [table, keyTable, ...more])
      for (const { encryption } of processes) await encryption.close()
      if (pglite !== undefined) {
        if (!pglite.closed) await pglite.close()
        return
      }
      for (const { db } of processes) await db.destroy()
      await raw.destroy()
    },
  }
}
