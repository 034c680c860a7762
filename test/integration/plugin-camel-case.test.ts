import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb, withCamelCase } from '../support/encrypted-db.js'
import { expectCiphertextOf, expectIndexOf, expectRedacted } from './plugin-at-rest.js'

const cases = backends().flatMap((backend) =>
  (['before', 'after'] as const).map((order) => ({ backend, order, name: backend.name })),
)

describe.each(cases)('plugin CamelCasePlugin $order ours [$name]', ({ backend, order }) => {
  describe.runIf(backend.available)('', () => {
    let t: EncryptedTestDb
    let u: string
    let o: string

    beforeAll(async () => {
      t = await encryptedTestDb(backend, { plugins: withCamelCase(order) })
      u = t.names.users
      o = t.names.orders
      await t.db
        .insertInto(u)
        .values([
          { id: 1, name: 'Ada', email: 'Ada@x.io', ssn: '111-11-1111' },
          { id: 2, name: 'Bob', email: 'bob@x.io', ssn: null },
        ])
        .execute()
      await t.db
        .insertInto(o)
        .values([
          { id: 1, userId: 1, item: 'book', email: 'ada-order@x.io' },
          { id: 2, userId: 2, item: 'pen', email: null },
        ])
        .execute()
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('writes: ciphertext and snake_case index columns at rest', async () => {
      const user = await t.raw.selectFrom(u).selectAll().where('id', '=', 1).executeTakeFirstOrThrow()
      await expectCiphertextOf(t, u, 'email', user.email, 'Ada@x.io')
      await expectIndexOf(t, u, 'email', user.email_bidx, 'ada@x.io')
      const order1 = await t.raw.selectFrom(o).selectAll().where('id', '=', 1).executeTakeFirstOrThrow()
      expect(order1.user_id).toBe(1)
      await expectCiphertextOf(t, o, 'email', order1.email, 'ada-order@x.io')
      await expectIndexOf(t, o, 'email', order1.email_bidx, 'ada-order@x.io')
    })

    it('selectAll returns camelCase keys with decrypted values', async () => {
      const orders = await t.db.selectFrom(o).selectAll().orderBy('id').execute()
      expect(orders).toMatchObject([
        { id: 1, userId: 1, item: 'book', email: 'ada-order@x.io' },
        { id: 2, userId: 2, item: 'pen', email: null },
      ])
      expect(orders[0]?.emailBidx).toBeInstanceOf(Uint8Array)
      expect(orders[0]).not.toHaveProperty('user_id')
    })

    it('where on annotated columns, joins and aliases in camelCase', async () => {
      const query = t.db.selectFrom(u).select(['id', 'email', 'ssn']).where('email', '=', 'ada@x.io')
      expectRedacted(query.compile(), ['ada@x.io'])
      expect(await query.execute()).toEqual([{ id: 1, email: 'Ada@x.io', ssn: '111-11-1111' }])
      expect(await t.db.selectFrom(u).select('name').where('ssn', '=', '111111111').execute()).toEqual([
        { name: 'Ada' },
      ])
      const joined = await t.db
        .selectFrom(`${o} as o`)
        .innerJoin(`${u} as u`, 'u.id', 'o.userId')
        .select(['o.item', 'u.email as userEmail', 'o.email as orderEmail'])
        .where('o.email', '=', 'ada-order@x.io')
        .execute()
      expect(joined).toEqual([{ item: 'book', userEmail: 'Ada@x.io', orderEmail: 'ada-order@x.io' }])
    })

    it('update and set NULL keep the snake_case index in step', async () => {
      await t.db.updateTable(o).set({ email: 'pen@x.io' }).where('userId', '=', 2).execute()
      expect(
        await t.db.selectFrom(o).select(['id', 'userId']).where('email', '=', 'pen@x.io').execute(),
      ).toEqual([{ id: 2, userId: 2 }])
      await t.db.updateTable(o).set({ email: null }).where('email', '=', 'pen@x.io').execute()
      const stored = await t.raw
        .selectFrom(o)
        .select(['email', 'email_bidx'])
        .where('id', '=', 2)
        .executeTakeFirstOrThrow()
      expect(stored).toEqual({ email: null, email_bidx: null })
    })
  })
})
