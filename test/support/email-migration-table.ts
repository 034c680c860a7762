import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  localKeyProvider,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, dropTables, uniqueName } from './backends.js'

/**
 * A small table whose plaintext `email` (varchar 200) is under migration (`dual-writing`, stored
 * encrypted in `email_encrypted`, unique normalized index `email_bidx`), with its key and job
 * tables and the ops on it (keys made): the preamble of the suites that run one backfill.
 * Lighter than migration-db.ts (no application, no migration files).
 */
export interface EmailMigrationTable {
  readonly table: string
  readonly schema: EncryptedSchema
  // biome-ignore lint/suspicious/noExplicitAny: the table is named at run time.
  readonly raw: Kysely<any>
  readonly ops: FieldEncryptionOps
  /** Further ops on `db` (a hooked dialect, say), under the same KEK; closed by {@link destroy}. */
  // biome-ignore lint/suspicious/noExplicitAny: any database.
  opsOn(db: Kysely<any>): FieldEncryptionOps
  destroy(): Promise<void>
}

/**
 * Builds an {@link EmailMigrationTable}: `id integer` primary key, and with `context` a row context
 * of `org_id` (varchar 20) and `id`.
 */
export async function emailMigrationTable(
  backend: Backend,
  prefix: string,
  options: { readonly context?: boolean } = {},
): Promise<EmailMigrationTable> {
  const table = uniqueName(prefix)
  const keyTable = uniqueName('kfe_keys')
  const jobsTable = uniqueName('kfe_jobs')
  const schema = encryptedSchema(
    {
      [table]: {
        email: encrypted.text({
          index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
          storedAs: 'email_encrypted',
          migration: 'dual-writing',
          maxBytes: 200,
        }),
      },
    },
    options.context === true ? { tables: { [table]: { context: ['org_id', 'id'] } } } : {},
  )
  const raw = new Kysely({ dialect: backend.createDialect() })
  let create = raw.schema.createTable(table).addColumn('id', 'integer', (c) => c.primaryKey())
  if (options.context === true) create = create.addColumn('org_id', 'varchar(20)', (c) => c.notNull())
  await create
    .addColumn('email', 'varchar(200)')
    .$call(addEncryptedColumns(schema, table, backend.family))
    .execute()
  await createBlindIndexes(raw, schema, table)
  const kek = randomBytes(32)
  const opened: FieldEncryptionOps[] = []
  // One provider per ops: closing an ops closes its provider.
  // biome-ignore lint/suspicious/noExplicitAny: any database.
  const opsOn = (db: Kysely<any>) => {
    const ops = fieldEncryptionOps({
      db,
      schema,
      keyProvider: localKeyProvider({ id: `local:${prefix}`, key: kek }),
      keyTable,
      jobsTable,
      metadataTtlMs: 50,
    })
    opened.push(ops)
    return ops
  }
  const ops = opsOn(raw)
  await ops.init()
  return {
    table,
    schema,
    raw,
    ops,
    opsOn,
    async destroy() {
      for (const o of opened) await o.close()
      await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
      await raw.destroy()
    },
  }
}
