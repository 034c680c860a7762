import { randomBytes } from 'node:crypto'
import { Kysely, MysqlDialect, sql } from 'kysely'
import { createPool } from 'mysql2'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import {
  addEncryptedColumns,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
  QueryRefusedError,
} from '../../src/index.js'
import { onlyTables, uniqueName } from '../support/backends.js'

/**
 * MySQL/MariaDB `INSERT IGNORE` turns a strict sql_mode's errors into warnings: NULL (or no
 * value) for a column declared NOT NULL is stored as empty bytes, and every read of that row then
 * fails (NOT_CIPHERTEXT), where without IGNORE the database refuses the row. The plugin refuses
 * such an INSERT into an encrypted NOT NULL column before sending it (the schema check's catalog
 * says which columns are NOT NULL); a nullable encrypted column, and IGNORE's own purpose (a
 * duplicate key skipped), are untouched.
 */
const mysqlUrl = inject('mysqlUrl')

describe.runIf(mysqlUrl !== null)('INSERT IGNORE into an encrypted NOT NULL column (MySQL)', () => {
  const table = uniqueName('ins_ignore')
  const keyTable = `${table}_keys`
  const schema = encryptedSchema({
    [table]: { ssn: encrypted.text({ maxBytes: 16 }), note: encrypted.text({ maxBytes: 16 }) },
  })
  // biome-ignore lint/suspicious/noExplicitAny: generated table name
  let raw: Kysely<any>
  // biome-ignore lint/suspicious/noExplicitAny: generated table name
  let db: Kysely<any>
  const encryption = fieldEncryption({
    schema,
    keyProvider: localKeyProvider({ id: 'local:ins-ignore', key: randomBytes(32) }),
    keyTable,
    verifySchema: onlyTables(table),
  })
  beforeAll(async () => {
    raw = new Kysely({ dialect: new MysqlDialect({ pool: createPool({ uri: mysqlUrl ?? '' }) }) })
    await raw.schema
      .createTable(table)
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .$call(addEncryptedColumns(schema, table, 'mysql'))
      .execute()
    // ssn NOT NULL (its width as addEncryptedColumns made it), note nullable.
    const { rows } = await sql<{ t: string }>`select column_type as t from information_schema.columns
      where table_schema = database() and table_name = ${table} and column_name = 'ssn'`.execute(raw)
    await sql`alter table ${sql.table(table)} modify ssn ${sql.raw(rows[0]?.t ?? '')} not null`.execute(raw)
    db = new Kysely({
      dialect: encryption.wrap(new MysqlDialect({ pool: createPool({ uri: mysqlUrl ?? '' }) })),
      plugins: [encryption.plugin],
    })
    await encryption.init(db)
  }, 120_000)
  afterAll(async () => {
    await encryption.close()
    await db?.destroy()
    await sql`drop table if exists ${sql.table(table)}`.execute(raw)
    await sql`drop table if exists ${sql.table(keyTable)}`.execute(raw)
    await raw?.destroy()
  })

  const refused = async (run: Promise<unknown>, what: RegExp) => {
    const e = (await run.catch((error: unknown) => error)) as QueryRefusedError
    expect(e).toBeInstanceOf(QueryRefusedError)
    expect(e).toMatchObject({ code: 'QUERY_REFUSED', column: 'ssn', operator: 'insert ignore' })
    expect(e.message).toMatch(what)
  }

  it('is refused before sending: NULL, no value, DEFAULT in a multi-row insert, ON DUPLICATE KEY UPDATE to NULL', async () => {
    await refused(
      db.insertInto(table).ignore().values({ id: 1, ssn: null, note: 'n' }).execute(),
      /gets NULL/,
    )
    await refused(db.insertInto(table).ignore().values({ id: 2, note: 'n' }).execute(), /gets no value/)
    // Kysely writes DEFAULT where a row of a multi-row insert lacks a column the others have.
    await refused(
      db
        .insertInto(table)
        .ignore()
        .values([{ id: 3, ssn: 'S-3' }, { id: 4 }])
        .execute(),
      /gets NULL/,
    )
    await refused(
      db
        .insertInto(table)
        .ignore()
        .values({ id: 5, ssn: 'S-5' })
        .onDuplicateKeyUpdate({ ssn: null })
        .execute(),
      /set to NULL/,
    )
    // INSERT IGNORE … SELECT into the plain columns only (helper-92: VALUES alone was checked).
    await refused(
      db
        .insertInto(table)
        .ignore()
        .columns(['id'])
        .expression(db.selectNoFrom(sql<number>`6`.as('id')))
        .execute(),
      /gets no value/,
    )
    await refused(db.insertInto(table).ignore().defaultValues().execute(), /gets no value/)
    expect(await raw.selectFrom(table).select('id').execute()).toEqual([])
  })

  it('a value for it goes through, a nullable encrypted column takes NULL, and a duplicate key is still ignored', async () => {
    await db.insertInto(table).ignore().values({ id: 10, ssn: 'S-10', note: null }).execute()
    await db.insertInto(table).ignore().values({ id: 10, ssn: 'S-other' }).execute()
    expect(await db.selectFrom(table).select(['id', 'ssn', 'note']).where('id', '=', 10).execute()).toEqual([
      { id: 10, ssn: 'S-10', note: null },
    ])
    // Without IGNORE the database itself refuses a NULL (strict sql_mode): not the plugin's refusal.
    const e = await db
      .insertInto(table)
      .values({ id: 11, ssn: null })
      .execute()
      .catch((error: unknown) => error)
    expect(e).not.toBeInstanceOf(QueryRefusedError)
    expect(String((e as Error).message)).toMatch(/cannot be null/i)
  })
})
