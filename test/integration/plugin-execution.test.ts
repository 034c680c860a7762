import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { useEncryptedTestDb } from '../support/encrypted-db.js'
import { expectCiphertextOf, expectIndexOf, ids } from './plugin-at-rest.js'

class Rollback extends Error {}

describe.each(backends())('plugin execution paths [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend)
    const u = t.names.users

    const rawCount = async (name: string) =>
      (await t.raw.selectFrom(u).select('id').where('name', '=', name).execute()).length

    it('transaction: insert and search inside, committed rows encrypted at rest', async () => {
      const inside = await t.db.transaction().execute(async (trx) => {
        await trx
          .insertInto(u)
          .values({ name: 'trx-commit', email: 'trx@x.io', ssn: '700-00-0001' })
          .execute()
        return trx.selectFrom(u).select(['name', 'email', 'ssn']).where('email', '=', 'trx@x.io').execute()
      })
      expect(inside).toEqual([{ name: 'trx-commit', email: 'trx@x.io', ssn: '700-00-0001' }])
      const stored = await t.raw
        .selectFrom(u)
        .selectAll()
        .where('name', '=', 'trx-commit')
        .executeTakeFirstOrThrow()
      await expectCiphertextOf(t, u, 'email', stored.email, 'trx@x.io')
      await expectIndexOf(t, u, 'email', stored.email_bidx, 'trx@x.io')
      expect(await t.db.selectFrom(u).select('name').where('ssn', '=', '700000001').execute()).toEqual([
        { name: 'trx-commit' },
      ])
    })

    it('transaction rollback leaves nothing behind', async () => {
      let seenInside: unknown[] = []
      await expect(
        t.db.transaction().execute(async (trx) => {
          await trx.insertInto(u).values({ name: 'trx-rollback', email: 'rollback@x.io' }).execute()
          seenInside = await trx.selectFrom(u).select('email').where('email', '=', 'rollback@x.io').execute()
          throw new Rollback('roll back')
        }),
      ).rejects.toBeInstanceOf(Rollback)
      expect(seenInside).toEqual([{ email: 'rollback@x.io' }])
      expect(await rawCount('trx-rollback')).toBe(0)
      expect(await t.db.selectFrom(u).select('id').where('email', '=', 'rollback@x.io').execute()).toEqual([])
    })

    it('db.connection(): several queries on one pinned connection', async () => {
      const back = await t.db.connection().execute(async (c) => {
        await c.insertInto(u).values({ name: 'conn', email: 'conn@x.io', score: 3.25 }).execute()
        return c
          .selectFrom(u)
          .select(['name', 'email', 'score'])
          .where('email', '=', 'CONN@x.io')
          .executeTakeFirst()
      })
      expect(back).toEqual({ name: 'conn', email: 'conn@x.io', score: 3.25 })
      const stored = await t.raw
        .selectFrom(u)
        .selectAll()
        .where('name', '=', 'conn')
        .executeTakeFirstOrThrow()
      await expectCiphertextOf(t, u, 'score', stored.score, 3.25)
    })

    it('stream() yields decrypted rows, chunk by chunk', async () => {
      const rows = Array.from({ length: 7 }, (_, i) => ({
        name: `stream-${i}`,
        tenant: 'stream',
        email: `stream${i}@x.io`,
        ssn: `800-00-000${i}`,
      }))
      await t.db.insertInto(u).values(rows).execute()
      const streamed: unknown[] = []
      for await (const row of t.db
        .selectFrom(u)
        .select(['name', 'email', 'ssn'])
        .where('tenant', '=', 'stream')
        .orderBy('name')
        .stream(3)) {
        streamed.push(row)
      }
      expect(streamed).toEqual(rows.map(({ name, email, ssn }) => ({ name, email, ssn })))
      // A search-index condition: false positives are removed per chunk.
      const found: unknown[] = []
      for await (const row of t.db.selectFrom(u).select('name').where('ssn', '=', '800-00-0004').stream(2)) {
        found.push(row)
      }
      expect(found).toEqual([{ name: 'stream-4' }])
    })

    it('executeTakeFirst / executeTakeFirstOrThrow on writes and reads', async () => {
      const inserted = await t.db
        .insertInto(u)
        .values({ name: 'first', email: 'first@x.io' })
        .executeTakeFirst()
      expect(Number(inserted.numInsertedOrUpdatedRows)).toBe(1)
      const row = await t.db
        .selectFrom(u)
        .select(['id', 'email'])
        .where('email', '=', 'first@x.io')
        .executeTakeFirstOrThrow()
      expect(row.email).toBe('first@x.io')
      expect(ids([row])).toHaveLength(1)
      await expect(
        t.db.selectFrom(u).select('id').where('email', '=', 'missing@x.io').executeTakeFirstOrThrow(),
      ).rejects.toThrow()
    })

    it('queries built on db but run concurrently keep their own plans', async () => {
      await t.db
        .insertInto(u)
        .values(Array.from({ length: 10 }, (_, i) => ({ name: `conc-${i}`, email: `conc${i}@x.io` })))
        .execute()
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          t.db.selectFrom(u).select(['name', 'email']).where('email', '=', `conc${i}@x.io`).execute(),
        ),
      )
      expect(results).toEqual(
        Array.from({ length: 10 }, (_, i) => [{ name: `conc-${i}`, email: `conc${i}@x.io` }]),
      )
    })
  })
})
