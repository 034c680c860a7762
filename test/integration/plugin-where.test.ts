import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { useEncryptedTestDb } from '../support/encrypted-db.js'
import { dialectSql, expectIndexOf, expectRedacted, expectRefused, ids } from './plugin-at-rest.js'

const USERS = [
  { id: 1, name: 'Ada', tenant: 't1', email: 'ada@x.io', ssn: '111-11-1111', score: 10 },
  { id: 2, name: 'Bob', tenant: 't1', email: 'bob@x.io', ssn: '222-22-2222', score: 20 },
  { id: 3, name: 'Cy', tenant: 't2', email: 'cy@x.io', ssn: null, score: null },
  { id: 4, name: 'Di', tenant: 't2', email: null, ssn: '444-44-4444', score: 40 },
]

describe.each(backends())('plugin where [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useEncryptedTestDb(backend, {
      seed: async (t) => {
        await t.db.insertInto(u).values(USERS).execute()
      },
    })
    const u = t.names.users

    const users = () => t.db.selectFrom(u).select(['id', 'email'])

    it('= on a unique index: the SQL searches the index column, parameters are redacted', async () => {
      const query = t.db.selectFrom(u).selectAll().where('email', '=', 'ada@x.io')
      const compiled = query.compile()
      expect(compiled.sql).toBe(dialectSql(backend, `select * from "${u}" where "email_bidx" in ($1)`))
      expect(compiled.parameters.map(String)).toEqual([`[kfe:probe ${u}.email_bidx]`])
      expectRedacted(compiled, ['ada@x.io'])
      expect(ids(await query.execute())).toEqual([1])
      expect(ids(await t.db.selectFrom(u).select('id').where('score', '=', 40).execute())).toEqual([4])
    })

    it('<> and != on a unique index exclude the value (and NULLs, as SQL does)', async () => {
      expect(ids(await users().where('email', '<>', 'ada@x.io').execute())).toEqual([2, 3])
      expect(ids(await users().where('email', '!=', 'bob@x.io').execute())).toEqual([1, 3])
      expectRedacted(users().where('email', '<>', 'ada@x.io').compile(), ['ada@x.io'])
    })

    it('in and not in', async () => {
      const query = users().where('email', 'in', ['ada@x.io', 'cy@x.io', 'nobody@x.io'])
      expect(query.compile().sql).toBe(
        dialectSql(backend, `select "id", "email" from "${u}" where "email_bidx" in ($1, $2, $3)`),
      )
      expectRedacted(query.compile(), ['ada@x.io', 'cy@x.io', 'nobody@x.io'])
      expect(ids(await query.execute())).toEqual([1, 3])
      expect(ids(await users().where('email', 'not in', ['ada@x.io', 'cy@x.io']).execute())).toEqual([2])
      expect(ids(await users().where('score', 'in', [10, 40]).execute())).toEqual([1, 4])
    })

    it('is null / is not null stay on the ciphertext column', async () => {
      const query = users().where('email', 'is', null)
      expect(query.compile().sql).toBe(
        dialectSql(backend, `select "id", "email" from "${u}" where "email" is null`),
      )
      expect(ids(await query.execute())).toEqual([4])
      expect(ids(await users().where('email', 'is not', null).execute())).toEqual([1, 2, 3])
      expect(ids(await users().where('ssn', 'is', null).execute())).toEqual([3])
    })

    it('and / or / not combinations', async () => {
      const or = users().where((eb) => eb.or([eb('email', '=', 'ada@x.io'), eb('score', '=', 40)]))
      expectRedacted(or.compile(), ['ada@x.io'])
      expect(ids(await or.execute())).toEqual([1, 4])
      // A search index (false positives) under OR/NOT cannot be post-filtered row by row: refused.
      await expectRefused(
        () =>
          users()
            .where((eb) => eb.or([eb('email', '=', 'ada@x.io'), eb('ssn', '=', '444-44-4444')]))
            .execute(),
        'QUERY_REFUSED',
      )
      const and = users().where((eb) => eb.and([eb('email', '=', 'bob@x.io'), eb('tenant', '=', 't1')]))
      expect(ids(await and.execute())).toEqual([2])
      const andMiss = users().where((eb) => eb.and([eb('email', '=', 'bob@x.io'), eb('tenant', '=', 't2')]))
      expect(ids(await andMiss.execute())).toEqual([])
      const not = users().where((eb) => eb.not(eb('email', '=', 'ada@x.io')))
      expect(ids(await not.execute())).toEqual([2, 3])
      const nested = users().where((eb) =>
        eb.and([eb('tenant', '=', 't1'), eb.or([eb('email', '=', 'ada@x.io'), eb('email', '=', 'cy@x.io')])]),
      )
      expect(ids(await nested.execute())).toEqual([1])
      const chained = users().where('tenant', '=', 't2').where('ssn', '=', '444444444')
      expect(ids(await chained.execute())).toEqual([4])
    })

    it('object form eb.and({ … })', async () => {
      const query = users().where((eb) => eb.and({ email: 'bob@x.io', tenant: 't1' }))
      expectRedacted(query.compile(), ['bob@x.io'])
      expect(ids(await query.execute())).toEqual([2])
      expect(
        ids(
          await users()
            .where((eb) => eb.or({ email: 'cy@x.io', tenant: 't1' }))
            .execute(),
        ),
      ).toEqual([1, 2, 3])
    })

    it('normalization: a value stored as "A@X.io " is found by "a@x.io" and returned as written', async () => {
      await t.db.insertInto(u).values({ id: 5, name: 'Norm', email: 'A@X.io ' }).execute()
      expect(await users().where('email', '=', 'a@x.io').execute()).toEqual([{ id: 5, email: 'A@X.io ' }])
      expect(ids(await users().where('email', '=', '  a@X.IO').execute())).toEqual([5])
      const stored = await t.raw
        .selectFrom(u)
        .select('email_bidx')
        .where('id', '=', 5)
        .executeTakeFirstOrThrow()
      await expectIndexOf(t, u, 'email', stored.email_bidx, 'a@x.io')
      // ssn normalizes to digits only.
      expect(ids(await users().where('ssn', '=', '111 11 1111').execute())).toEqual([1])
    })

    it('a search index (ssn) returns only true matches', async () => {
      const query = t.db.selectFrom(u).select(['id', 'ssn']).where('ssn', '=', '222-22-2222')
      expect(query.compile().sql).toBe(
        dialectSql(
          backend,
          `select "id", "ssn", "${u}"."ssn" as "__kfe_fp_0" from "${u}" where "ssn_bidx" in ($1)`,
        ),
      )
      expect(await query.execute()).toEqual([{ id: 2, ssn: '222-22-2222' }])
      expect(ids(await users().where('ssn', 'in', ['111-11-1111', '444-44-4444']).execute())).toEqual([1, 4])
    })

    it('explain() of a search returns the plan rows as they are (nothing decrypted, nothing filtered)', async () => {
      for (const column of ['email', 'ssn'] as const) {
        const plan = await users()
          .where(column, '=', column === 'email' ? 'ada@x.io' : '111-11-1111')
          .explain()
        expect(plan.length).toBeGreaterThan(0)
      }
    })

    it('= with a list of one value is that value in parentheses: searched as =', async () => {
      expect(
        ids(
          await users()
            .where('email', '=', ['ada@x.io'] as never)
            .execute(),
        ),
      ).toEqual([1])
    })

    it('a search index with an explicit sort direction runs (asc/desc are words, not functions)', async () => {
      const search = () => users().where('ssn', 'in', ['111-11-1111', '444-44-4444'])
      const order = async (q: ReturnType<typeof search>) => (await q.execute()).map((r) => Number(r.id))
      expect(await order(search().orderBy('id', 'desc'))).toEqual([4, 1])
      expect(await order(search().orderBy('id', 'asc'))).toEqual([1, 4])
      // MariaDB has no NULLS LAST.
      if (backend.family === 'postgres')
        expect(await order(search().orderBy('id', (ob) => ob.desc().nullsLast()))).toEqual([4, 1])
    })
  })
})
