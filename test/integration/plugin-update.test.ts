import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { useEncryptedTestDb } from '../support/encrypted-db.js'
import { dialectSql, expectCiphertextOf, expectIndexOf, expectRedacted } from './plugin-at-rest.js'

describe.each(backends())('plugin update [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend, {
      seed: async (t) => {
        await t.db
          .insertInto(u)
          .values([
            { id: 1, name: 'upd-1', email: 'upd1@x.io', ssn: '100-00-0001', score: 1 },
            { id: 2, name: 'upd-2', email: 'upd2@x.io', ssn: '100-00-0002', score: 2 },
            { id: 3, name: 'upd-3', email: 'upd3@x.io', ssn: '100-00-0003', score: 3 },
            { id: 4, name: 'upd-4', email: 'upd4@x.io', ssn: '100-00-0004', score: 4 },
          ])
          .execute()
      },
    })
    const u = t.names.users

    const rawRow = (id: number) =>
      t.raw.selectFrom(u).selectAll().where('id', '=', id).executeTakeFirstOrThrow()
    const byEmail = (email: string) =>
      t.db.selectFrom(u).select(['id', 'email']).where('email', '=', email).execute()

    it('set of annotated columns: new ciphertext and index, the old value is no longer found', async () => {
      const query = t.db
        .updateTable(u)
        .set({ email: 'Upd1-New@x.io', ssn: '200-00-0001' })
        .where('id', '=', 1)
      const compiled = query.compile()
      expect(compiled.sql).toBe(
        dialectSql(
          backend,
          `update "${u}" set "email" = $1, "email_bidx" = $2, "ssn" = $3, "ssn_bidx" = $4 where "id" = $5`,
        ),
      )
      expectRedacted(compiled, ['Upd1-New@x.io', '200-00-0001'])
      const result = await query.executeTakeFirst()
      expect(result.numUpdatedRows).toBe(1n)

      expect(await byEmail('upd1-new@x.io')).toEqual([{ id: 1, email: 'Upd1-New@x.io' }])
      expect(await byEmail('upd1@x.io')).toEqual([])
      const stored = await rawRow(1)
      await expectCiphertextOf(t, u, 'email', stored.email, 'Upd1-New@x.io')
      await expectIndexOf(t, u, 'email', stored.email_bidx, 'upd1-new@x.io')
      await expectIndexOf(t, u, 'ssn', stored.ssn_bidx, '200000001')
    })

    it('set NULL clears the ciphertext and the blind index', async () => {
      await t.db.updateTable(u).set({ email: null, ssn: null, score: null }).where('id', '=', 2).execute()
      const stored = await rawRow(2)
      expect([
        stored.email,
        stored.email_bidx,
        stored.ssn,
        stored.ssn_bidx,
        stored.score,
        stored.score_bidx,
      ]).toEqual([null, null, null, null, null, null])
      expect(await byEmail('upd2@x.io')).toEqual([])
      expect(await t.db.selectFrom(u).select('id').where('score', '=', 2).execute()).toEqual([])
      expect(await t.db.selectFrom(u).select(['id', 'email']).where('email', 'is', null).execute()).toEqual([
        { id: 2, email: null },
      ])
    })

    it('where on an annotated column updates only the matching row', async () => {
      const query = t.db.updateTable(u).set({ name: 'upd-3-renamed' }).where('email', '=', 'UPD3@x.io')
      expect(query.compile().sql).toBe(
        dialectSql(backend, `update "${u}" set "name" = $1 where "email_bidx" in ($2)`),
      )
      expectRedacted(query.compile(), ['UPD3@x.io', 'upd3@x.io'])
      const result = await query.executeTakeFirst()
      expect(result.numUpdatedRows).toBe(1n)
      expect(await t.db.selectFrom(u).select('name').where('id', '=', 3).executeTakeFirst()).toEqual({
        name: 'upd-3-renamed',
      })
      expect((await rawRow(4)).name).toBe('upd-4')
      // Set and where on the same annotated column.
      await t.db.updateTable(u).set({ email: 'upd3-b@x.io' }).where('email', '=', 'upd3@x.io').execute()
      expect(await byEmail('upd3-b@x.io')).toEqual([{ id: 3, email: 'upd3-b@x.io' }])
      await expectIndexOf(t, u, 'email', (await rawRow(3)).email_bidx, 'upd3-b@x.io')
    })

    it.runIf(backend.family === 'postgres')(
      'returning decrypts the updated values (PostgreSQL)',
      async () => {
        const back = await t.db
          .updateTable(u)
          .set({ email: 'upd4-new@x.io', score: 44 })
          .where('id', '=', 4)
          .returning(['id', 'email', 'ssn', 'score'])
          .execute()
        expect(back).toEqual([{ id: 4, email: 'upd4-new@x.io', ssn: '100-00-0004', score: 44 }])
        const all = await t.db
          .updateTable(u)
          .set({ tenant: 't4' })
          .where('email', '=', 'upd4-new@x.io')
          .returningAll()
          .execute()
        expect(all).toMatchObject([
          { id: 4, tenant: 't4', email: 'upd4-new@x.io', ssn: '100-00-0004', score: 44 },
        ])
      },
    )
  })
})
