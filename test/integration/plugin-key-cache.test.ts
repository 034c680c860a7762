import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema, fieldEncryption, KeyStore, localKeyProvider } from '../../src/index.js'
import { backends, onlyTables, uniqueName } from '../support/backends.js'

/** A key cache smaller than what one query needs must fail clearly, never use a wiped key. */
describe.each(backends())('plugin with a tiny key cache [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('tiny')
    const keyTable = uniqueName('kfe_keys')
    const schema = encryptedSchema({ [table]: { email: encrypted.text({ index: { name: 'email_bidx' } }) } })
    const [dialect] = backend.createDialectPair()
    const bytea = backend.family === 'postgres' ? 'bytea' : 'mediumblob'
    // One provider (KEK) shared by both rings, so they read each other's keys.
    const kek = randomBytes(32)
    const small = fieldEncryption({
      schema,
      keyProvider: localKeyProvider({ key: kek }),
      keyTable,
      cache: { max: 1 },
      verifySchema: onlyTables(),
    })
    const enough = fieldEncryption({
      schema,
      keyProvider: localKeyProvider({ key: kek }),
      keyTable,
      cache: { max: 2 },
      verifySchema: onlyTables(),
    })
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    let db: Kysely<any>
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    let dbSmall: Kysely<any>

    beforeAll(async () => {
      db = new Kysely({ dialect: enough.wrap(dialect), plugins: [enough.plugin] })
      await sql`create table ${sql.table(table)} (id int primary key, email ${sql.raw(bytea)}, email_bidx ${sql.raw(backend.family === 'postgres' ? 'bytea' : 'varbinary(32)')} unique)`.execute(
        db,
      )
      dbSmall = new Kysely({ dialect: small.wrap(dialect), plugins: [small.plugin] })
      await enough.init(db)
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

    it('rows under a data key version the reader has not cached, after rows it has: every row decrypted, in order, one provider call for it', async () => {
      // biome-ignore lint/suspicious/noExplicitAny: generated table name
      const fromTen = (k: Kysely<any>) =>
        k.selectFrom(table).select(['id', 'email']).where('id', '>=', 10).orderBy('id').execute()
      await db
        .insertInto(table)
        .values([
          { id: 10, email: 'v1a@x.io' },
          { id: 11, email: 'v1b@x.io' },
        ])
        .execute()
      // Data key version 2 becomes the write key; the rows above stay under version 1.
      const generated = await localKeyProvider({ key: kek }).generateDataKey({
        logicalTable: table,
        purpose: 'data',
        version: 2,
      })
      generated.plaintext.fill(0)
      // biome-ignore lint/suspicious/noExplicitAny: generated table name
      const plain = new Kysely<any>({ dialect })
      const store = new KeyStore(plain, { tableName: keyTable })
      await store.stage(table, 'data', [generated.wrapped])
      await store.activate(table, 'data', 2)
      enough.keyRing().refresh()
      await db.insertInto(table).values({ id: 12, email: 'v2a@x.io' }).execute()
      await db.insertInto(table).values({ id: 13, email: 'v2b@x.io' }).execute()
      const versions = await fromTen(plain)
      // The key version is the second byte of a v1 ciphertext (docs/format.md).
      expect(versions.map((r) => (r.email as Uint8Array)[1])).toEqual([1, 1, 2, 2])

      const reader = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ key: kek }),
        keyTable,
        verifySchema: onlyTables(),
      })
      // biome-ignore lint/suspicious/noExplicitAny: generated table name
      const dbReader = new Kysely<any>({ dialect: reader.wrap(dialect), plugins: [reader.plugin] })
      // Version 1 only: a read of a version-1 row.
      expect(await dbReader.selectFrom(table).select('email').where('id', '=', 10).execute()).toEqual([
        { email: 'v1a@x.io' },
      ])
      expect(reader.stats().keys?.providerCalls).toBe(1)
      // Rows 10 and 11 decrypt from the cache; row 12 needs version 2 halfway through the batch.
      const rows = await fromTen(dbReader)
      expect(rows).toEqual([
        { id: 10, email: 'v1a@x.io' },
        { id: 11, email: 'v1b@x.io' },
        { id: 12, email: 'v2a@x.io' },
        { id: 13, email: 'v2b@x.io' },
      ])
      expect(reader.stats().keys?.providerCalls).toBe(2)
      await reader.close()
    })

    it('a cache of one key: version 1 wiped while version 2 loads, a later row needs it again: KEY_NOT_FOUND naming cache.max', async () => {
      // Rows 10 and 11 are under data key version 1, row 12 under version 2 (test above).
      small.keyRing().refresh()
      await expect(
        dbSmall
          .selectFrom(table)
          .select(['id', 'email'])
          .where('id', 'in', [10, 11, 12])
          .orderBy(sql`case id when 10 then 1 when 12 then 2 else 3 end`)
          .execute(),
      ).rejects.toMatchObject({ code: 'KEY_NOT_FOUND', message: expect.stringContaining('cache.max') })
    })
  })
})
