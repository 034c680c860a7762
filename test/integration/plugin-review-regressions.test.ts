import { randomBytes } from 'node:crypto'
import { type Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KeyStore, localKeyProvider, QueryRefusedError } from '../../src/index.js'
import { PENDING_PLANS_MAX } from '../../src/plugin/plan.js'
import { backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb, type TestDB } from '../support/encrypted-db.js'
import { type ScanningDialect, scanningDialect } from '../support/leak-scanner.js'

/**
 * `*` in raw SQL that the database expands over a relation with encrypted columns, or over one
 * whose columns replace an encrypted output of their name: ciphertexts came back as values, or
 * decryption failed after the query ran (NOT_CIPHERTEXT). Each is refused before sending.
 */
const RAW_STARS: ReadonlyArray<{
  name: string
  family?: 'postgres' | 'mysql'
  operator: string
  build: (db: Kysely<TestDB>, u: string, o: string) => { compile(): unknown; execute(): Promise<unknown> }
}> = [
  {
    name: 'R.* over an alias r (PostgreSQL folds the unquoted name)',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(`${u} as r`).select(sql`R.*` as never),
  },
  {
    name: 'r.email, R.* (the * brings every ciphertext back)',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(`${u} as r`).select(['r.email', sql`R.*` as never]),
  },
  {
    name: 'the table name in upper case, through sql.raw',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(u).select(sql.raw(`${u.toUpperCase()}.*`) as never),
  },
  {
    name: 'row_to_json(R) over an alias r',
    family: 'postgres',
    operator: 'whole row',
    build: (db, u) => db.selectFrom(`${u} as r`).select(sql`row_to_json(R)`.as('j')),
  },
  {
    name: "p.* of a derived table after an encrypted output named like one of p's columns",
    operator: 'select all',
    build: (db, u, o) =>
      db
        .selectFrom(`${u} as r`)
        .innerJoin(
          (eb) => eb.selectFrom(o).select(['user_id', 'item']).as('p'),
          (j) => j.onRef('p.user_id', '=', 'r.id'),
        )
        .select(['r.email as item', sql`p.*` as never]),
  },
]

/** Shapes a security review of the plugin found mishandled, each pinned by a test. */
describe.each(backends())('plugin review regressions [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const provider = localKeyProvider({ key: randomBytes(32) })
    let t: EncryptedTestDb
    let scanner: ScanningDialect
    beforeAll(async () => {
      t = await encryptedTestDb(backend, {
        keyProvider: provider,
        wrapInner: (d) => {
          scanner = scanningDialect(d, () => ['a@x.io', 'b@x.io'])
          return scanner
        },
      })
      await t.db
        .insertInto(t.names.users)
        .values([
          { id: 1, name: 'a', email: 'a@x.io', ssn: '111-11-1111' },
          { id: 2, name: 'b', email: 'b@x.io', ssn: '222-22-2222' },
        ])
        .execute()
      await t.db
        .insertInto(t.names.orders)
        .values({ id: 1, user_id: 1, item: 'pen', email: 'a@x.io' })
        .execute()
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('a compiled query whose parameters were swapped for plaintext is refused (PLAINTEXT_WRITE), nothing sent', async () => {
      const compiled = t.db
        .insertInto(t.names.users)
        .values({ id: 9, name: 'swap', email: 'x@x.io' })
        .compile()
      const swapped = compiled.parameters.map((p) =>
        typeof p === 'object' && p !== null && 'reveal' in p ? 'plain@x.io' : p,
      )
      await expect(t.db.executeQuery({ ...compiled, parameters: swapped })).rejects.toMatchObject({
        code: 'PLAINTEXT_WRITE',
      })
      const rows = await t.raw.selectFrom(t.names.users).select('id').where('id', '=', 9).execute()
      expect(rows).toEqual([])
    })

    it('a compiled query runs again and after more than PENDING_PLANS_MAX others were built: the verify pass serves it', async () => {
      const lookup = t.db
        .selectFrom(t.names.users)
        .select(['id', 'email'])
        .where('email', '=', 'a@x.io')
        .compile()
      expect((await t.db.executeQuery(lookup)).rows).toEqual([{ id: 1, email: 'a@x.io' }])
      // The plugin's plan was taken by the first run: the second derives it again from the tree.
      expect((await t.db.executeQuery(lookup)).rows).toEqual([{ id: 1, email: 'a@x.io' }])
      const insert = t.db
        .insertInto(t.names.users)
        .values({ id: 7, name: 'late', email: 'late@x.io' })
        .compile()
      // Built but never run: these push the first two out of the pending plans.
      for (let i = 0; i <= PENDING_PLANS_MAX; i++) {
        t.db.selectFrom(t.names.users).selectAll().where('email', '=', `n${i}@x.io`).compile()
      }
      const swapped = insert.parameters.map((p) =>
        typeof p === 'object' && p !== null && 'reveal' in p ? 'plain@x.io' : p,
      )
      await expect(t.db.executeQuery({ ...insert, parameters: swapped })).rejects.toMatchObject({
        code: 'PLAINTEXT_WRITE',
      })
      await t.db.executeQuery(insert)
      const stored = await t.raw
        .selectFrom(t.names.users)
        .select('email')
        .where('id', '=', 7)
        .executeTakeFirstOrThrow()
      expect(Buffer.isBuffer(stored.email) || stored.email instanceof Uint8Array).toBe(true)
      expect(Buffer.from(stored.email as Uint8Array).includes('late@x.io')).toBe(false)
      expect(
        await t.db.selectFrom(t.names.users).select('email').where('id', '=', 7).executeTakeFirstOrThrow(),
      ).toEqual({ email: 'late@x.io' })
      await t.db.deleteFrom(t.names.users).where('id', '=', 7).execute()
    })

    for (const c of RAW_STARS) {
      if (c.family !== undefined && c.family !== backend.family) continue
      it(`a * in raw SQL: ${c.name} is refused before sending`, async () => {
        const build = () => c.build(t.db, t.names.users, t.names.orders)
        let error: unknown
        try {
          build().compile()
        } catch (e) {
          error = e
        }
        expect(error).toBeInstanceOf(QueryRefusedError)
        expect(error).toMatchObject({
          code: 'QUERY_REFUSED',
          operator: c.operator,
          table: t.names.users,
          column: 'email',
        })
        const before = scanner.count()
        await expect(build().execute()).rejects.toMatchObject({ code: 'QUERY_REFUSED', operator: c.operator })
        expect(scanner.count()).toBe(before)
      })
    }

    it('raw SQL naming an encrypted column through a qualifier in another case (R.email) is refused before sending', async () => {
      const u = t.names.users
      const shapes = [
        () => t.db.selectFrom(`${u} as r`).select('id').where(sql<boolean>`R.email = ${'a@x.io'}`),
        () =>
          t.db
            .selectFrom(u)
            .select('id')
            .where(sql.raw(`${u.toUpperCase()}.email`), '=', 'a@x.io'),
      ]
      for (const build of shapes) {
        expect(() => build().compile()).toThrow(QueryRefusedError)
        const before = scanner.count()
        await expect(build().execute()).rejects.toMatchObject({
          code: 'QUERY_REFUSED',
          operator: 'raw sql',
          table: u,
          column: 'email',
        })
        expect(scanner.count()).toBe(before)
      }
      // The same qualifier on a plain column still runs (PostgreSQL; MySQL's aliases keep their case).
      if (backend.family !== 'postgres') return
      const rows = await t.db
        .selectFrom(`${u} as r`)
        .select('id')
        .where(sql<boolean>`R.name = ${'a'}`)
        .execute()
      expect(rows).toEqual([{ id: 1 }])
    })

    it('a * in raw SQL that is no select-list * of an encrypted relation still runs', async () => {
      const u = t.names.users
      const rows = await t.db
        .selectFrom(`${u} as r`)
        .select([
          'r.email',
          sql<number>`count(*) over ()`.as('n'),
          sql<string>`'r.*, R.*'`.as('lit'),
          sql<number>`1 /* r.*, R.*, * */`.as('one'),
        ])
        .where('r.id', '=', 1)
        .execute()
      expect(rows.map((r) => ({ ...r, n: Number(r.n), one: Number(r.one) }))).toEqual([
        { email: 'a@x.io', n: 1, lit: 'r.*, R.*', one: 1 },
      ])
      // A raw * of a relation without encrypted columns, before the encrypted output it could shadow.
      const joined = await t.db
        .selectFrom(`${u} as r`)
        .innerJoin(
          (eb) => eb.selectFrom(t.names.orders).select(['user_id', 'item']).as('p'),
          (j) => j.onRef('p.user_id', '=', 'r.id'),
        )
        .select([sql`p.*` as never, 'r.email as item'])
        .execute()
      expect(joined).toEqual([{ user_id: 1, item: 'a@x.io' }])
    })

    // MariaDB through kysely's MySQL dialect has no INSERT … RETURNING.
    it.runIf(backend.family === 'postgres')(
      'insert … returning an unqualified encrypted column decrypts it (no ambiguity with excluded)',
      async () => {
        const row = await t.db
          .insertInto(t.names.users)
          .values({ id: 3, name: 'c', email: 'c@x.io' })
          .returning(['id', 'email'])
          .executeTakeFirstOrThrow()
        expect(row).toEqual({ id: 3, email: 'c@x.io' })
      },
    )

    it('a self-join on a unique blind index works with one index version and is refused while two are live', async () => {
      const u = t.names.users
      const pairs = () =>
        t.db
          .selectFrom(`${u} as p`)
          .innerJoin(`${u} as q`, 'q.email', 'p.email')
          .select(['p.id as p', 'q.id as q'])
          .where('p.id', '=', 1)
          .execute()
      expect(await pairs()).toEqual([{ p: 1, q: 1 }])
      const store = new KeyStore(t.raw, { tableName: t.names.keys })
      const generated = await provider.generateDataKey({ logicalTable: u, purpose: 'index', version: 2 })
      generated.plaintext.fill(0)
      await store.stage(u, 'index', [generated.wrapped])
      t.encryption.keyRing().refresh()
      await expect(pairs()).rejects.toMatchObject({ code: 'QUERY_REFUSED', table: u })
    })

    it.runIf(backend.family === 'mysql')(
      'a multi-table UPDATE (MySQL) encrypts what it writes into every table',
      async () => {
        const { users: u, orders: o } = t.names
        await t.db
          .updateTable([u, o] as never)
          .set(`${u}.ssn` as never, '999-99-9999' as never)
          .set(`${o}.email` as never, 'moved@x.io' as never)
          .whereRef(`${u}.id` as never, '=', `${o}.user_id` as never)
          .where(`${o}.id` as never, '=', 1 as never)
          .execute()
        const raw = await t.raw.selectFrom(u).select('ssn').where('id', '=', 1).executeTakeFirstOrThrow()
        expect(Buffer.from(raw.ssn as Uint8Array).includes(Buffer.from('999-99-9999'))).toBe(false)
        const app = await t.db
          .selectFrom(o)
          .select(['id', 'email'])
          .where('email', '=', 'moved@x.io')
          .execute()
        expect(app).toEqual([{ id: 1, email: 'moved@x.io' }])
        const user = await t.db.selectFrom(u).select(['ssn']).where('id', '=', 1).executeTakeFirstOrThrow()
        expect(user.ssn).toBe('999-99-9999')
      },
    )
  })
})
