import type { Kysely } from 'kysely'
import { beforeAll, describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { insertAdaAndBob, useScannedTestDb } from '../support/scanned-db.js'

/** Every plaintext these tests use: none may ever reach the driver. */
const SECRETS = ['ada@x.io', 'bob@x.io']

/**
 * Bugs the differential fuzzer (test/fuzz, docs/fuzzing.md) found, each pinned on every backend
 * with a leak scanner between the wrapper and the driver.
 */
describe.each(backends())('plugin fuzz regressions [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const { t, refused } = useScannedTestDb(backend, SECRETS, async (t) => {
      await insertAdaAndBob(t)
      await t.db.insertInto(o).values({ id: 1, user_id: 1, item: 'pen', email: 'ada@x.io' }).execute()
    })
    // biome-ignore lint/suspicious/noExplicitAny: table names are generated per file.
    let db: Kysely<any>
    beforeAll(() => {
      db = t.db
    })
    const { users: u, orders: o } = t.names

    // Fuzz seed 12 (npm run fuzz -- --seed 12): `select ["email" as "name", "id" as "name"]` sent
    // the query, took the key "name" for the ciphertext of email, and failed decrypting the id
    // the driver returned under that key (NOT_CIPHERTEXT) where plain Kysely returned { name: 1 }.
    it('two select-list outputs of one name, one of them encrypted, are refused before sending', async () => {
      await refused(db.selectFrom(o).select(['email as name', 'id as name']), 'QUERY_REFUSED')
      await refused(db.selectFrom(o).select(['id as email', 'email']), 'QUERY_REFUSED')
      await refused(
        db.selectFrom(u).select(['email', (eb) => eb.fn('upper', ['name']).as('email')]),
        'QUERY_REFUSED',
      )
      await refused(
        db
          .selectFrom(o)
          .select(['item as e', (eb) => eb.selectFrom(u).select('email').where('id', '=', 1).as('e')]),
        'QUERY_REFUSED',
      )
    })

    it('outputs of one name that are all plaintext, or all the same encrypted column, still run', async () => {
      const rows = await db.selectFrom(o).select(['item as name', 'id as name']).execute()
      expect(rows).toEqual([{ name: 1 }])
      const distinct = await db.selectFrom(o).select(['item as i', 'email as e']).execute()
      expect(distinct).toEqual([{ i: 'pen', e: 'ada@x.io' }])
      // The same encrypted column twice under one name (the driver keeps the last: either decrypts).
      const twice = await db
        .selectFrom(`${u} as a`)
        .innerJoin(`${u} as b`, 'b.id', 'a.id')
        .select(['a.email', 'b.email'])
        .where('a.id', '=', 2)
        .execute()
      expect(twice).toEqual([{ email: 'bob@x.io' }])
    })

    // Fuzz seed 20261205 (npm run fuzz -- --runs 5000 --backend mysql, case 4144): `select
    // ["user_id" as "email"] … order by "email"` was refused ("order by on encrypted column
    // orders.email", or AMBIGUOUS_COLUMN with a join) although ORDER BY takes a bare output name
    // for that output first, on PostgreSQL and MySQL alike: the query sorts plaintext only.
    it('ORDER BY a plaintext output named like an encrypted column sorts by that output', async () => {
      const one = await db.selectFrom(u).select(['id as email', 'name']).orderBy('email', 'desc').execute()
      expect(one).toEqual([
        { email: 2, name: 'Bob' },
        { email: 1, name: 'Ada' },
      ])
      // Two relations with an encrypted email in scope (an unqualified `email` would be ambiguous).
      const joined = await db
        .selectFrom(`${u} as uu`)
        .leftJoin(o, `${o}.user_id`, 'uu.id')
        .select(['uu.id as email', `${o}.item`])
        .orderBy('email', 'desc')
        .execute()
      expect(joined).toEqual([
        { email: 2, item: null },
        { email: 1, item: 'pen' },
      ])
      // An expression's output, and a plain column of a derived table, named like the encrypted column.
      const expression = await db
        .selectFrom(u)
        .select((eb) => eb.fn<string>('upper', ['name']).as('email'))
        .orderBy('email')
        .execute()
      expect(expression).toEqual([{ email: 'ADA' }, { email: 'BOB' }])
      const derived = await db
        .selectFrom((eb) => eb.selectFrom(o).select(['item as email', 'user_id']).as('d'))
        .innerJoin(`${u} as uu`, 'uu.id', 'd.user_id')
        .select(['d.email', 'uu.email as address'])
        .orderBy('email')
        .execute()
      expect(derived).toEqual([{ email: 'pen', address: 'ada@x.io' }])
    })

    it('ORDER BY a name that is, or may be, an encrypted column or output is still refused', async () => {
      // The encrypted column itself, not selected under that name.
      await refused(db.selectFrom(u).select(['id']).orderBy('email'), 'QUERY_REFUSED')
      // An output that differs in case: PostgreSQL would sort by the encrypted column.
      await refused(db.selectFrom(u).select(['id as Email']).orderBy('email'), 'QUERY_REFUSED')
      // An alias of the encrypted column, and a qualified name (an input column, not the output).
      await refused(db.selectFrom(u).select(['email as e', 'id']).orderBy('e'), 'AMBIGUOUS_COLUMN')
      await refused(db.selectFrom(u).select(['id as email']).orderBy(`${u}.email`), 'QUERY_REFUSED')
      // The output name inside an expression names the input column there (PostgreSQL).
      await refused(
        db
          .selectFrom(u)
          .select(['id as email'])
          .orderBy((eb) => eb.fn('lower', ['email'])),
        'QUERY_REFUSED',
      )
    })
  })
})
