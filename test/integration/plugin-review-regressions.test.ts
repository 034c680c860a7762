import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KeyStore, localKeyProvider } from '../../src/index.js'
import { PENDING_PLANS_MAX } from '../../src/plugin/plan.js'
import { backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb } from '../support/encrypted-db.js'

/** Shapes a security review of the plugin found mishandled, each pinned by a test. */
describe.each(backends())('plugin review regressions [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const provider = localKeyProvider({ key: randomBytes(32) })
    let t: EncryptedTestDb
    beforeAll(async () => {
      t = await encryptedTestDb(backend, { keyProvider: provider })
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
