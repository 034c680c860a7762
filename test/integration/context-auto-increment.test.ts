import { randomBytes } from 'node:crypto'
import { Kysely, MysqlDialect, sql } from 'kysely'
import { createPool } from 'mysql2'
import { describe, expect, inject, it } from 'vitest'
import {
  addEncryptedColumns,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'
import { useOwnTable } from '../support/own-table.js'
import { useSuiteFixture } from '../support/suite-fixture.js'

/**
 * MySQL/MariaDB store the next AUTO_INCREMENT value for an inserted 0 (or '0'), unless the
 * session's sql_mode holds NO_AUTO_VALUE_ON_ZERO: the plugin bound the row's ciphertexts to "0",
 * the row got id 1, and it never decrypted (DECRYPT_AUTH_FAILED). Such an insert is refused
 * before anything is sent (CONTEXT_MISSING), as other values the database would generate are.
 */
const mysqlBackends = backends().filter((b) => b.family === 'mysql')

describe.each(mysqlBackends)('an AUTO_INCREMENT context column given 0 [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOwnTable(backend, {
      prefix: 'ctx_autoinc',
      columns: { ssn: encrypted.text() },
      tableOptions: { context: ['id'] },
      create: (table) =>
        table
          .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
          .addColumn('label', 'varchar(16)'),
      options: (table) => ({ verifySchema: onlyTables(table) }),
    })
    const stored = async () =>
      (await t.raw.selectFrom(t.table).select('id').orderBy('id').execute()).map((r) => Number(r.id))

    it('an insert of id 0, "0" or 0n is refused before anything is sent (CONTEXT_MISSING)', async () => {
      for (const id of [0, '0', 0n]) {
        await expect(t.db.insertInto(t.table).values({ id, ssn: 'S-0' }).execute()).rejects.toMatchObject({
          code: 'CONTEXT_MISSING',
          message: expect.stringContaining('context column id is 0 in an AUTO_INCREMENT column'),
        })
      }
      // One row of several: the whole statement is refused.
      await expect(
        t.db
          .insertInto(t.table)
          .values([
            { id: 5, ssn: 'S-5' },
            { id: 0, ssn: 'S-0' },
          ])
          .execute(),
      ).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
      expect(await stored()).toEqual([])
    })

    it('an upsert (on duplicate key update) of id 0 is refused the same way', async () => {
      const upsert = t.db
        .insertInto(t.table)
        .values({ id: 0, ssn: 'S-0', label: 'a' })
        .onDuplicateKeyUpdate({ label: 'b' })
      await expect(upsert.execute()).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
      expect(await stored()).toEqual([])
    })

    it('an id of its own, and a row without ciphertexts, are written; an update where id = 0 is not refused', async () => {
      await t.db.insertInto(t.table).values({ id: 7, ssn: 'S-7' }).execute()
      // Nothing bound to the id: MySQL generates it, and nothing needs it.
      await t.db.insertInto(t.table).values({ id: 0, ssn: null, label: 'plain' }).execute()
      const rows = await t.db.selectFrom(t.table).select(['id', 'ssn']).orderBy('id').execute()
      expect(rows.map((r) => [Number(r.id), r.ssn])).toEqual([
        [7, 'S-7'],
        [8, null],
      ])
      // An UPDATE stores the 0 it is given: no id is generated, so it matches (no) row 0.
      const u = await t.db.updateTable(t.table).set({ ssn: 'S-x' }).where('id', '=', 0).executeTakeFirst()
      expect(u.numUpdatedRows).toBe(0n)
    })
  })
})

describe.each(mysqlBackends)('… under NO_AUTO_VALUE_ON_ZERO [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useSuiteFixture(
      'noAutoValueOnZero',
      async () => {
        const table = uniqueName('ctx_autoinc_zero')
        const keyTable = `${table}_keys`
        const schema = encryptedSchema(
          { [table]: { ssn: encrypted.text() } },
          { tables: { [table]: { context: ['id'] } } },
        )
        const encryption = fieldEncryption({
          schema,
          keyProvider: localKeyProvider({ id: 'local:ctx_autoinc_zero', key: randomBytes(32) }),
          keyTable,
          verifySchema: onlyTables(table),
        })
        // Every connection of the application's pool, as the fix of a sql_mode problem says.
        const pool = createPool({ uri: inject('mysqlUrl') ?? '', connectionLimit: 2 })
        pool.on('connection', (conn) => {
          conn.query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        })
        // biome-ignore lint/suspicious/noExplicitAny: generated table name
        const raw = new Kysely<any>({ dialect: backend.createDialect() })
        await raw.schema
          .createTable(table)
          .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
          .$call(addEncryptedColumns(schema, table, 'mysql'))
          .execute()
        // biome-ignore lint/suspicious/noExplicitAny: generated table name
        const db = new Kysely<any>({
          dialect: encryption.wrap(new MysqlDialect({ pool })),
          plugins: [encryption.plugin],
        })
        await encryption.init(db)
        return { table, keyTable, encryption, raw, db }
      },
      async (f) => {
        await sql`drop table if exists ${sql.table(f.table)}`.execute(f.raw)
        await sql`drop table if exists ${sql.table(f.keyTable)}`.execute(f.raw)
        await f.encryption.close()
        await f.db.destroy()
        await f.raw.destroy()
      },
    )

    it('an insert of id 0 runs, stores 0 and reads back', async () => {
      await t.db.insertInto(t.table).values({ id: 0, ssn: 'S-0' }).execute()
      expect((await t.raw.selectFrom(t.table).select('id').execute()).map((r) => Number(r.id))).toEqual([0])
      expect(await t.db.selectFrom(t.table).select(['id', 'ssn']).execute()).toEqual([{ id: 0, ssn: 'S-0' }])
    })
  })
})
