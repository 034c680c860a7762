// examples/mysql.ts: examples/postgres.ts on MySQL/MariaDB (mysql2). What differs: the dialect and
// its pool, the `id` column, and 'mysql' in addEncryptedColumns (varbinary columns).
// Run it once, on a database without a `users` table, with KFE_KEK and DATABASE_URL
// (mysql://user:password@host:3306/db) exported; keep KFE_KEK:  npx tsx mysql.ts
import { type Generated, Kysely, MysqlDialect } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type Decrypted,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from 'kysely-field-encryption'
import { createPool } from 'mysql2'

// 1. Which columns are sensitive. An index (`email_bidx`) is a column of HMACs that makes the
//    encrypted column searchable by equality; `omitBlindIndexes` keeps them out of results.
const schema = encryptedSchema(
  {
    users: {
      email: encrypted.text({ index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] } }),
      ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16, normalize: ['digits'] } }),
      dob: encrypted.calendarDate(), // 'YYYY-MM-DD', no time zone
    },
  },
  { omitBlindIndexes: true },
)

// 2. The tables as kysely-codegen writes them (`npx kysely-codegen` after the migration below):
//    encrypted and index columns are varbinary, so Buffer. Decrypted<> gives the application's view.
export interface Users {
  id: Generated<number>
  name: string
  email: Buffer | null
  email_bidx: Buffer | null
  ssn: Buffer | null
  ssn_bidx: Buffer | null
  dob: Buffer | null
}
export interface GeneratedDB {
  users: Users
}
export type DB = Decrypted<GeneratedDB, typeof schema> // users.email: string | null, no email_bidx

// 3. The key-encrypting key (KEK): 32 random bytes, `openssl rand -hex 32`, from a secret store.
//    It wraps the per-table keys, which are stored (wrapped) in a `kfe_keys` table.
//    In production use AWS KMS or an HSM instead (docs/providers.md).
const encryption = fieldEncryption({ schema, keyProvider: localKeyProvider({ env: 'KFE_KEK' }) })
const db = new Kysely<DB>({
  dialect: encryption.wrap(new MysqlDialect({ pool: createPool({ uri: process.env.DATABASE_URL ?? '' }) })),
  plugins: [encryption.plugin],
})

// 4. The migration: varbinary columns for the encrypted values and their indexes, then the indexes.
async function migrate(): Promise<void> {
  await db.schema
    .createTable('users')
    .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('name', 'varchar(200)', (c) => c.notNull())
    .$call(addEncryptedColumns(schema, 'users', 'mysql'))
    .execute()
  await createBlindIndexes(db, schema, 'users')
  // Once, after the migrations (or `npx kfe init`): creates the table's keys, wrapped under the
  // KEK (keys already there must unwrap under it: UNWRAP_FAILED otherwise). Idempotent. Keys are
  // never created silently on first use.
  await encryption.init(db)
}

// 5. Write and search with plaintext; the database only sees ciphertext and HMACs.
async function main(): Promise<void> {
  await migrate()
  await db
    .insertInto('users')
    .values({ name: 'Ada', email: 'Ada@Example.org', ssn: '078-05-1120', dob: '1815-12-10' })
    .execute()
  const ada = await db
    .selectFrom('users')
    .selectAll()
    .where('email', '=', 'ada@example.org') // sent as: where `email_bidx` in (?)
    .executeTakeFirst()
  console.log(ada) // { id: 1, name: 'Ada', email: 'Ada@Example.org', ssn: '078-05-1120', dob: '1815-12-10' }
  await encryption.close()
  await db.destroy()
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
