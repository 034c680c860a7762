import { randomBytes } from 'node:crypto'
import { type CreateTableBuilder, Kysely, sql } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encryptedSchema,
  type FieldEncryption,
  type FieldEncryptionOptions,
  fieldEncryption,
  localKeyProvider,
  type SchemaDefinition,
  type TableOptions,
} from '../../src/index.js'
import { type Backend, uniqueName } from './backends.js'
import { useSuiteFixture } from './suite-fixture.js'

/** One table of a test file's own, a plain Kysely on it and the application's plugin over it. */
export interface OwnTable {
  readonly table: string
  readonly keyTable: string
  readonly schema: EncryptedSchema
  readonly encryption: FieldEncryption
  /** No plugin: what is stored. */
  // biome-ignore lint/suspicious/noExplicitAny: the table's name is generated.
  readonly raw: Kysely<any>
  /** The application: wrapped dialect and plugin, its key table initialised. */
  // biome-ignore lint/suspicious/noExplicitAny: as above
  readonly db: Kysely<any>
}

/** What {@link useOwnTable} makes. */
export interface OwnTableOptions {
  /** Prefix of the table's unique name. */
  readonly prefix: string
  /** The encrypted columns (`addEncryptedColumns` adds them, `createBlindIndexes` their indexes). */
  readonly columns: SchemaDefinition[string]
  readonly tableOptions?: TableOptions
  /** The table's other columns (`id` and the rest). */
  // biome-ignore lint/suspicious/noExplicitAny: any column set
  readonly create: (table: CreateTableBuilder<string, any>) => CreateTableBuilder<string, any>
  /** Over a local key provider, the generated key table and the schema. */
  readonly options?: (table: string) => Partial<FieldEncryptionOptions>
}

/**
 * A table of the test file's own, made before its tests and dropped after them, with a local
 * KEK. One database under both Kyselys (PGlite: one in-memory instance).
 */
export function useOwnTable(backend: Backend, options: OwnTableOptions): OwnTable {
  return useSuiteFixture(
    'useOwnTable',
    async () => {
      const table = uniqueName(options.prefix)
      const keyTable = `${table}_keys`
      const schema = encryptedSchema(
        { [table]: options.columns },
        options.tableOptions === undefined ? {} : { tables: { [table]: options.tableOptions } },
      )
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ id: `local:${options.prefix}`, key: randomBytes(32) }),
        keyTable,
        ...options.options?.(table),
      })
      const [plain, wrapped] = backend.createDialectPair()
      const raw = new Kysely({ dialect: plain })
      await options
        .create(raw.schema.createTable(table))
        .$call(addEncryptedColumns(schema, table, backend.family))
        .execute()
      await createBlindIndexes(raw, schema, table)
      const db = new Kysely({ dialect: encryption.wrap(wrapped), plugins: [encryption.plugin] })
      await encryption.init(db)
      return { table, keyTable, schema, encryption, raw, db }
    },
    async (t) => {
      // The tables first: on PGlite both Kyselys close the one database.
      await sql`drop table if exists ${sql.table(t.table)}`.execute(t.raw)
      await sql`drop table if exists ${sql.table(t.keyTable)}`.execute(t.raw)
      await t.encryption.close()
      await t.db.destroy()
      await t.raw.destroy().catch(() => undefined)
    },
  )
}
