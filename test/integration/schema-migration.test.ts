/** Migration helpers (issue 13): notNull per encrypted column; createBlindIndexes idempotent on every engine. */
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addEncryptedColumns, createBlindIndexes, encrypted, encryptedSchema } from '../../src/index.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'

describe.each(backends())('migration helpers on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('mig')
    const schema = encryptedSchema({
      [table]: {
        email: encrypted.text({ index: { name: 'email_bidx' } }),
        ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
      },
    })
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    let db: Kysely<any>
    beforeAll(async () => {
      db = new Kysely({ dialect: backend.createDialect() })
      await db.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .$call(addEncryptedColumns(schema, table, backend.family, { notNull: ['email'] }))
        .execute()
    })
    afterAll(async () => {
      await sql`drop table if exists ${sql.table(table)}`.execute(db)
      await db.destroy()
    })

    it('notNull: the encrypted column and its index column are NOT NULL; the others stay nullable', async () => {
      await expect(
        db
          .insertInto(table)
          .values({ id: 1, email_bidx: Buffer.alloc(32) })
          .execute(),
      ).rejects.toBeDefined()
      await expect(
        db
          .insertInto(table)
          .values({ id: 2, email: Buffer.alloc(40) })
          .execute(),
      ).rejects.toBeDefined()
      await db
        .insertInto(table)
        .values({ id: 3, email: Buffer.alloc(40), email_bidx: Buffer.alloc(32) })
        .execute()
      expect((await db.selectFrom(table).select('id').execute()).map((r) => r.id)).toEqual([3])
    })

    it('notNull naming a column that is not encrypted is CONFIG_INVALID', () => {
      expect(() => addEncryptedColumns(schema, table, backend.family, { notNull: ['nope'] })).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID' }),
      )
    })

    it('createBlindIndexes runs twice without error (MySQL looks the index up first), unique stays unique', async () => {
      await createBlindIndexes(db, schema, table)
      await createBlindIndexes(db, schema, table)
      await expect(
        db
          .insertInto(table)
          .values({ id: 4, email: Buffer.alloc(40), email_bidx: Buffer.alloc(32) })
          .execute(),
      ).rejects.toBeDefined()
    })
  })
})
