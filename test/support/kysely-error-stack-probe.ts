// Run as a child process by test/integration/kysely-error-stack.test.ts: Kysely's own test "error
// stack should contain the userland stack" (test/node/src/error-stack.test.ts in kysely), with
// encryption.plugin and encryption.wrap installed and `person.first_name` encrypted. Outside the
// test runner, so the stack ends where an application's would. Prints one JSON line per query.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { PGlite } from '@electric-sql/pglite'
import { type Dialect, Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { createPool } from 'mysql2'
import pg from 'pg'
import {
  addEncryptedColumns,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'

const [backend, url, suffix] = process.argv.slice(2) as [string, string, string]
const person = `person_${suffix}`
const keyTable = `kfe_keys_${suffix}`

function dialect(): Dialect {
  if (backend === 'postgres') return new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) })
  if (backend === 'mysql') return new MysqlDialect({ pool: createPool({ uri: url }) })
  // PGlite: \`url\` is the test run's template of a new database (test/support/pglite.ts).
  return new PGliteDialect(new PGlite({ loadDataDir: new Blob([readFileSync(url)]) }))
}

async function userland(): Promise<void> {
  const family = backend === 'mysql' ? 'mysql' : 'postgres'
  const schema = encryptedSchema({
    [person]: { first_name: encrypted.text({ index: { name: 'first_name_bidx' } }) },
  })
  const encryption = fieldEncryption({
    schema,
    keyProvider: localKeyProvider({ key: randomBytes(32) }),
    keyTable,
    // Tables are created through this instance before any key exists: keys on first use
    // (development mode). The explicit init path has its own tests (key-init.test.ts).
    autoCreateKeys: true,
    // Other files' tables share the database: only the annotated tables are checked.
    verifySchema: { unannotatedTables: false },
  })
  // biome-ignore lint/suspicious/noExplicitAny: the probe's table name is generated.
  const db = new Kysely<any>({ dialect: encryption.wrap(dialect()), plugins: [encryption.plugin] })
  try {
    await db.schema
      .createTable(person)
      .addColumn('id', 'integer')
      .addColumn('gender', 'varchar(10)')
      .$call(addEncryptedColumns(schema, person, family))
      .execute()
    for (const query of [
      db.selectFrom(person).select(sql`doesnt_exists`.as('d')),
      db.updateTable(person).set({ first_name: sql`doesnt_exists` }),
      db.deleteFrom(person).where(sql`doesnt_exists`, '=', 1),
      db.insertInto(person).values({ first_name: sql`doesnt_exists`, gender: 'other' }),
      { execute: () => sql`select doesnt_exists`.execute(db) },
    ]) {
      try {
        await query.execute()
        console.log(JSON.stringify({ code: null, last: null }))
      } catch (err) {
        const e = err as { code?: unknown; stack: string }
        const lines = e.stack.split('\n')
        console.log(JSON.stringify({ code: String(e.code ?? 'none'), last: lines[lines.length - 1] }))
      }
    }
  } finally {
    await sql`drop table if exists ${sql.table(person)}`.execute(db.withoutPlugins())
    await sql`drop table if exists ${sql.table(keyTable)}`.execute(db.withoutPlugins())
    await encryption.close()
    await db.destroy()
  }
}

// Started from a plain callback, as a test runner such as mocha starts a test: nothing awaits
// `userland` in an async function, so the async stack ends at it.
setImmediate(() => {
  userland().catch((error: unknown) => {
    console.error(error)
    process.exitCode = 1
  })
})
