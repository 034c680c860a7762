import { randomBytes } from 'node:crypto'
import { type Dialect, Kysely } from 'kysely'
import {
  applyMigrationStep,
  type EncryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
  type MigrationPhase,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, dropTables } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { useSuiteFixture } from './suite-fixture.js'

/** A table whose plaintext columns are being encrypted in place (`storedAs` beside each), as a suite's fixture. */
export interface PlaintextColumns {
  readonly table: string
  /** The database without the plugin; the jobs (`ops`) run on it. */
  readonly raw: Kysely<TestDB>
  /** The jobs, with the schema in `dual-writing`; the key table made (`init`). */
  readonly ops: FieldEncryptionOps
  /** Another instance, with the schema in `readerPhase`, for decrypting what the jobs wrote. */
  readonly reader: FieldEncryption
  /** The application on `reader`, on the same database. */
  readonly readerDb: Kysely<TestDB>
}

/**
 * Before the suite's tests, makes the table (`create`), adds each column's encrypted form (`applyMigrationStep … add`), opens the jobs and a
 * reader; after the tests, closes them and drops the table, its key table and its job tables.
 * Read inside tests and hooks only.
 */
export function usePlaintextColumns(
  backend: Backend,
  options: {
    readonly table: string
    readonly columns: readonly string[]
    readonly schema: (phase: MigrationPhase) => EncryptedSchema
    /** Makes the table, its columns in plaintext, and fills it. */
    readonly create: (raw: Kysely<TestDB>) => Promise<void>
    /** The jobs' database, in place of the backend's own (the reader stays on the backend's). */
    readonly rawDialect?: () => Dialect | undefined
    /** Before the reader opens: each column is backfilled (`encryptColumn`). Default false. */
    readonly backfill?: boolean
    /** The reader's phase. Default `dual-writing`. */
    readonly readerPhase?: MigrationPhase
  },
): PlaintextColumns {
  const { table, schema } = options
  const keyTable = `${table}_keys`
  const jobsTable = `${table}_jobs`
  const provider = localKeyProvider({ id: `local:${table}`, key: randomBytes(32) })
  return useSuiteFixture(
    table,
    async () => {
      // A dialect of the jobs' own replaces the first of the pair (no pool made that is never closed).
      const own = options.rawDialect?.()
      const [rawDialect, readerDialect] =
        own === undefined ? backend.createDialectPair() : [own, backend.createDialect()]
      const raw = new Kysely<TestDB>({ dialect: rawDialect })
      await options.create(raw)
      for (const column of options.columns)
        await applyMigrationStep(raw, schema('added'), table, column, 'add')
      const ops = fieldEncryptionOps({
        db: raw,
        schema: schema('dual-writing'),
        keyProvider: provider,
        keyTable,
        jobsTable,
      })
      await ops.init()
      if (options.backfill === true)
        for (const column of options.columns) await ops.encryptColumn(table, column)
      const reader = fieldEncryption({
        schema: schema(options.readerPhase ?? 'dual-writing'),
        keyProvider: provider,
        keyTable,
        verifySchema: false,
      })
      const readerDb = new Kysely<TestDB>({ dialect: reader.wrap(readerDialect!), plugins: [reader.plugin] })
      return { table, raw, ops, reader, readerDb }
    },
    async ({ raw, ops, reader, readerDb }) => {
      await ops.close()
      await reader.close()
      // Before either Kysely is destroyed: on PGlite both run on one instance, which the first
      // destroy closes (a second would throw).
      await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
      await readerDb.destroy()
      if (backend.name !== 'pglite') await raw.destroy()
    },
  )
}
