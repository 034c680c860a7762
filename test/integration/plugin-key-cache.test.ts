import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema, fieldEncryption, localKeyProvider } from '../../src/index.js'
import { backends, uniqueName } from '../support/backends.js'

/** A key cache smaller than what one query needs must fail clearly, never use a wiped key. */
describe.each(backends())('plugin with a tiny key cache [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('tiny')
    const keyTable = uniqueName('kfe_keys')
    const schema = encryptedSchema({ [table]: { email: encrypted.text({ index: { name: 'email_bidx' } }) } })
    const [dialect] = backend.createDialectPair()
    const bytea = backend.family === 'postgres' ? 'bytea' : 'blob'
    // One provider (KEK) shared by both rings, so they read each other's keys.
    const kek = randomBytes(32)
    const small = fieldEncryption({
      schema,
      keyProvider: localKeyProvider({ key: kek }),
      keyTable,
      cache: { max: 1 },
    })
    const enough = fieldEncryption({
      schema,
      keyProvider: localKeyProvider({ key: kek }),
      keyTable,
      cache: { max: 2 },
    })
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    let db: Kysely<any>
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    let dbSmall: Kysely<any>

    beforeAll(async () => {
      db = new Kysely({ dialect: enough.wrap(dialect), plugins: [enough.plugin] })
      await sql`create table ${sql.table(table)} (id int primary key, email ${sql.raw(bytea)}, email_bidx ${sql.raw(backend.family === 'postgres' ? 'bytea' : 'varbinary(32)')})`.execute(
        db,
      )
      dbSmall = new Kysely({ dialect: small.wrap(dialect), plugins: [small.plugin] })
    })
    afterAll(async () => {
      await sql`drop table if exists ${sql.table(table)}`.execute(db)
      await sql`drop table if exists ${sql.table(keyTable)}`.execute(db)
      await db.destroy()
    })

    it('max 2 holds the data and index keys an insert needs', async () => {
      await db.insertInto(table).values({ id: 1, email: 'a@x.io' }).execute()
      const rows = await db.selectFrom(table).select(['id', 'email']).where('email', '=', 'a@x.io').execute()
      expect(rows).toEqual([{ id: 1, email: 'a@x.io' }])
    })

    it('max 1 cannot hold both: the insert fails with KEY_NOT_FOUND naming cache.max, and writes nothing', async () => {
      await expect(
        dbSmall.insertInto(table).values({ id: 2, email: 'b@x.io' }).execute(),
      ).rejects.toMatchObject({
        code: 'KEY_NOT_FOUND',
        message: expect.stringContaining('cache.max'),
      })
      const count = await db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
      expect(Number(count.n)).toBe(1)
    })
  })
})
