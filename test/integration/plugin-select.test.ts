import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { useEncryptedTestDb } from '../support/encrypted-db.js'
import { dialectSql, expectRedacted, expectRefused } from './plugin-at-rest.js'

const USERS = [
  { id: 1, name: 'Ada', tenant: 't1', email: 'ada@x.io', ssn: '111-11-1111', score: 10 },
  { id: 2, name: 'Bob', tenant: 't1', email: 'bob@x.io', ssn: '222-22-2222', score: 20 },
  { id: 3, name: 'Cy', tenant: 't2', email: null, ssn: null, score: null },
]
const ORDERS = [
  { id: 1, user_id: 1, item: 'book', email: 'ada-orders@x.io' },
  { id: 2, user_id: 1, item: 'pen', email: 'ada-pen@x.io' },
  { id: 3, user_id: 2, item: 'ink', email: null },
]

describe.each(backends())('plugin select [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend, {
      seed: async (t) => {
        await t.db.insertInto(u).values(USERS).execute()
        await t.db.insertInto(o).values(ORDERS).execute()
      },
    })
    const { users: u, orders: o } = t.names

    it('select of annotated and plain columns', async () => {
      const query = t.db.selectFrom(u).select(['id', 'email', 'ssn', 'score']).orderBy('id')
      expect(query.compile().sql).toBe(
        dialectSql(backend, `select "id", "email", "ssn", "score" from "${u}" order by "id"`),
      )
      expect(await query.execute()).toEqual(
        USERS.map(({ id, email, ssn, score }) => ({ id, email, ssn, score })),
      )
    })

    it('selectAll and selectAll(table) decrypt every annotated column', async () => {
      const all = await t.db.selectFrom(u).selectAll().orderBy('id').execute()
      expect(all).toMatchObject(USERS)
      const qualified = await t.db.selectFrom(u).selectAll(u).orderBy('id').execute()
      expect(qualified).toMatchObject(USERS)
      // Index columns come back as stored bytes, untouched.
      expect(all[0]?.email_bidx).toBeInstanceOf(Uint8Array)
    })

    it('table and column aliases', async () => {
      const rows = await t.db
        .selectFrom(`${u} as u`)
        .select(['u.id', 'u.email as e', 'u.ssn as s'])
        .where('u.email', '=', 'bob@x.io')
        .execute()
      expect(rows).toEqual([{ id: 2, e: 'bob@x.io', s: '222-22-2222' }])
      const all = await t.db.selectFrom(`${u} as u`).selectAll('u').where('u.id', '=', 1).execute()
      expect(all).toMatchObject([USERS[0]])
    })

    it('inner join: annotated columns of two tables in one row', async () => {
      const query = t.db
        .selectFrom(`${u} as u`)
        .innerJoin(`${o} as o`, 'o.user_id', 'u.id')
        .select(['o.id', 'u.email as user_email', 'o.email as order_email', 'o.item'])
        .where('u.email', '=', 'ada@x.io')
        .orderBy('o.id')
      expectRedacted(query.compile(), ['ada@x.io'])
      expect(await query.execute()).toEqual([
        { id: 1, user_email: 'ada@x.io', order_email: 'ada-orders@x.io', item: 'book' },
        { id: 2, user_email: 'ada@x.io', order_email: 'ada-pen@x.io', item: 'pen' },
      ])
    })

    it('left join: missing right side gives NULLs; where on the joined table', async () => {
      const rows = await t.db
        .selectFrom(`${u} as u`)
        .leftJoin(`${o} as o`, 'o.user_id', 'u.id')
        .select(['u.id', 'u.email as user_email', 'o.email as order_email'])
        .orderBy('u.id')
        .orderBy('o.id')
        .execute()
      expect(rows).toEqual([
        { id: 1, user_email: 'ada@x.io', order_email: 'ada-orders@x.io' },
        { id: 1, user_email: 'ada@x.io', order_email: 'ada-pen@x.io' },
        { id: 2, user_email: 'bob@x.io', order_email: null },
        { id: 3, user_email: null, order_email: null },
      ])
      const byOrder = await t.db
        .selectFrom(`${u} as u`)
        .leftJoin(`${o} as o`, 'o.user_id', 'u.id')
        .select(['u.name', 'o.item'])
        .where('o.email', '=', 'ADA-PEN@x.io')
        .execute()
      expect(byOrder).toEqual([{ name: 'Ada', item: 'pen' }])
    })

    it('the same column name in two joined tables: unqualified is AMBIGUOUS_COLUMN, qualified works', async () => {
      const joined = () => t.db.selectFrom(u).innerJoin(o, `${o}.user_id`, `${u}.id`)
      const selected = await expectRefused(() => joined().select('email').execute(), 'AMBIGUOUS_COLUMN')
      expect(selected.message).not.toContain('@x.io')
      await expectRefused(
        () => joined().select(`${u}.id`).where('email', '=', 'ada@x.io').execute(),
        'AMBIGUOUS_COLUMN',
      )
      const rows = await joined()
        .select([`${u}.email as u_email`, `${o}.email as o_email`])
        .where(`${o}.email`, '=', 'ada-orders@x.io')
        .execute()
      expect(rows).toEqual([{ u_email: 'ada@x.io', o_email: 'ada-orders@x.io' }])
    })

    it('derived table passing annotated columns through', async () => {
      const rows = await t.db
        .selectFrom((eb) => eb.selectFrom(u).select(['id', 'email', 'email_bidx']).as('d'))
        .selectAll()
        .orderBy('id')
        .execute()
      expect(rows.map(({ id, email }) => ({ id, email }))).toEqual(
        USERS.map(({ id, email }) => ({ id, email })),
      )
      const filtered = await t.db
        .selectFrom((eb) => eb.selectFrom(u).select(['id', 'email', 'email_bidx']).as('d'))
        .select(['d.id', 'd.email'])
        .where('d.email', '=', 'bob@x.io')
        .execute()
      expect(filtered).toEqual([{ id: 2, email: 'bob@x.io' }])
    })

    it('CTE passing annotated columns through, with a where on the CTE column', async () => {
      const all = await t.db
        .with('c', (db) => db.selectFrom(u).selectAll())
        .selectFrom('c')
        .select(['id', 'email'])
        .orderBy('id')
        .execute()
      expect(all).toEqual(USERS.map(({ id, email }) => ({ id, email })))
      const query = t.db
        .with('c', (db) => db.selectFrom(u).selectAll())
        .selectFrom('c')
        .select('email')
        .where('email', '=', 'ada@x.io')
      expect(query.compile().sql).toContain(dialectSql(backend, `where "email_bidx" in ($1)`))
      expectRedacted(query.compile(), ['ada@x.io'])
      expect(await query.execute()).toEqual([{ email: 'ada@x.io' }])
      const bySsn = await t.db
        .with('c', (db) => db.selectFrom(u).select(['id', 'ssn', 'ssn_bidx']))
        .selectFrom('c')
        .select(['id', 'ssn'])
        .where('ssn', '=', '222222222')
        .execute()
      expect(bySsn).toEqual([{ id: 2, ssn: '222-22-2222' }])
    })

    it('derived tables, joined derived tables and set-operation branches see the CTEs of their query', async () => {
      // Each subquery below reads the CTE of the query around it: its comparison must be rewritten
      // to the blind index (never sent as plaintext) and its outputs decrypted.
      const derived = t.db
        .with('c', (db) => db.selectFrom(u).selectAll())
        .selectFrom((eb) =>
          eb.selectFrom('c').select(['id', 'email']).where('email', '=', 'bob@x.io').as('d'),
        )
        .selectAll()
      expectRedacted(derived.compile(), ['bob@x.io'])
      expect(await derived.execute()).toEqual([{ id: 2, email: 'bob@x.io' }])
      const joined = t.db
        .with('c', (db) => db.selectFrom(u).selectAll())
        .selectFrom(`${o} as o`)
        .innerJoin(
          (eb) => eb.selectFrom('c').select(['id', 'ssn']).where('email', '=', 'ada@x.io').as('d'),
          'd.id',
          'o.user_id',
        )
        .select(['o.id', 'd.ssn'])
        .orderBy('o.id')
      expectRedacted(joined.compile(), ['ada@x.io'])
      expect(await joined.execute()).toEqual([
        { id: 1, ssn: '111-11-1111' },
        { id: 2, ssn: '111-11-1111' },
      ])
      const union = t.db
        .with('c', (db) => db.selectFrom(u).selectAll())
        .selectFrom(o)
        .select('id')
        .where('id', '=', 3)
        .union((eb) => eb.selectFrom('c').select('id').where('email', '=', 'ada@x.io'))
      expectRedacted(union.compile(), ['ada@x.io'])
      expect((await union.execute()).map((r) => r.id).sort()).toEqual([1, 3])
    })

    it('scalar subquery selecting one annotated column', async () => {
      const rows = await t.db
        .selectFrom(o)
        .select((eb) => ['id', eb.selectFrom(u).select('email').where('id', '=', 1).as('e')])
        .where('id', '=', 3)
        .execute()
      expect(rows).toEqual([{ id: 3, e: 'ada@x.io' }])
      const correlated = await t.db
        .selectFrom(`${o} as o`)
        .select((eb) => [
          'o.id',
          eb.selectFrom(`${u} as u`).select('u.ssn').whereRef('u.id', '=', 'o.user_id').as('owner_ssn'),
        ])
        .orderBy('o.id')
        .execute()
      expect(correlated).toEqual([
        { id: 1, owner_ssn: '111-11-1111' },
        { id: 2, owner_ssn: '111-11-1111' },
        { id: 3, owner_ssn: '222-22-2222' },
      ])
    })

    it('executeTakeFirst / executeTakeFirstOrThrow decrypt the row', async () => {
      const first = await t.db
        .selectFrom(u)
        .select(['id', 'ssn'])
        .where('email', '=', 'bob@x.io')
        .executeTakeFirst()
      expect(first).toEqual({ id: 2, ssn: '222-22-2222' })
      const none = await t.db.selectFrom(u).select('id').where('email', '=', 'none@x.io').executeTakeFirst()
      expect(none).toBeUndefined()
      const sure = await t.db.selectFrom(u).selectAll().where('id', '=', 1).executeTakeFirstOrThrow()
      expect(sure).toMatchObject(USERS[0] as object)
      await expect(
        t.db.selectFrom(u).select('id').where('email', '=', 'none@x.io').executeTakeFirstOrThrow(),
      ).rejects.toThrow()
    })
  })
})
