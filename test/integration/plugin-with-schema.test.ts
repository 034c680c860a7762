import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addEncryptedColumns, createBlindIndexes } from '../../src/index.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb } from '../support/encrypted-db.js'
import { expectCiphertextOf, expectIndexOf, expectRedacted } from './plugin-at-rest.js'

// PostgreSQL schemas; on MySQL a "schema" is another database, which the test user may not create.
const postgresFamily = backends().filter((b) => b.family === 'postgres')

describe.each(postgresFamily)('plugin withSchema [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let u: string
    const s = uniqueName('s')

    beforeAll(async () => {
      t = await encryptedTestDb(backend)
      u = t.names.users
      // The same table name as the fixture's, in another schema: encryptedSchema keys are unqualified.
      await sql`create schema ${sql.id(s)}`.execute(t.raw)
      await t.raw
        .withSchema(s)
        .schema.createTable(u)
        .addColumn('id', 'serial', (c) => c.primaryKey())
        .addColumn('name', 'varchar(100)', (c) => c.notNull())
        .addColumn('tenant', 'varchar(50)')
        .$call(addEncryptedColumns(t.schema, u, 'postgres'))
        .execute()
      await createBlindIndexes(t.raw.withSchema(s), t.schema, u)
    })
    afterAll(async () => {
      await sql`drop schema if exists ${sql.id(s)} cascade`.execute(t.raw)
      await t?.destroy()
    })

    it('insert and search through db.withSchema(s): encrypted at rest in that schema', async () => {
      const insert = t.db
        .withSchema(s)
        .insertInto(u)
        .values({ name: 'in-schema', email: 'schema@x.io', ssn: '600-00-0001' })
      expect(insert.compile().sql).toContain(`insert into "${s}"."${u}"`)
      expectRedacted(insert.compile(), ['schema@x.io', '600-00-0001'])
      await insert.execute()

      const query = t.db
        .withSchema(s)
        .selectFrom(u)
        .select(['name', 'email', 'ssn'])
        .where('email', '=', 'schema@x.io')
      expect(query.compile().sql).toBe(
        `select "name", "email", "ssn" from "${s}"."${u}" where "email_bidx" in ($1)`,
      )
      expect(await query.execute()).toEqual([{ name: 'in-schema', email: 'schema@x.io', ssn: '600-00-0001' }])
      expect(
        await t.db.withSchema(s).selectFrom(u).select('name').where('ssn', '=', '600000001').execute(),
      ).toEqual([{ name: 'in-schema' }])

      const stored = await t.raw.withSchema(s).selectFrom(u).selectAll().executeTakeFirstOrThrow()
      await expectCiphertextOf(t, u, 'email', stored.email, 'schema@x.io')
      await expectIndexOf(t, u, 'email', stored.email_bidx, 'schema@x.io')
      // Nothing went to the table of the same name in the default schema.
      expect(await t.raw.selectFrom(u).select('id').execute()).toEqual([])
    })

    it('update, selectAll and delete through withSchema', async () => {
      await t.db
        .withSchema(s)
        .updateTable(u)
        .set({ email: 'schema2@x.io' })
        .where('email', '=', 'schema@x.io')
        .execute()
      const all = await t.db.withSchema(s).selectFrom(u).selectAll().execute()
      expect(all).toMatchObject([{ name: 'in-schema', email: 'schema2@x.io', ssn: '600-00-0001' }])
      const deleted = await t.db
        .withSchema(s)
        .deleteFrom(u)
        .where('email', '=', 'schema2@x.io')
        .executeTakeFirst()
      expect(deleted.numDeletedRows).toBe(1n)
      expect(await t.raw.withSchema(s).selectFrom(u).select('id').execute()).toEqual([])
    })
  })
})
