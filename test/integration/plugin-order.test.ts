import {
  CamelCasePlugin,
  DeduplicateJoinsPlugin,
  HandleEmptyInListsPlugin,
  type Kysely,
  type KyselyPlugin,
  ParseJSONResultsPlugin,
  replaceWithNoncontingentExpression,
  sql,
  WithSchemaPlugin,
} from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb, type TestDB } from '../support/encrypted-db.js'
import { expectRedacted } from './plugin-at-rest.js'

/**
 * Every built-in Kysely plugin, installed before and after ours, over one list of query shapes
 * (issue 12, item 1): queries on encrypted tables keep working, and queries on plain tables
 * compile exactly as with the other plugin alone (json_agg/to_json of a table and `for update
 * of`, which WithSchemaPlugin builds with a bare identifier, included).
 */

/** The schema WithSchemaPlugin names: PostgreSQL's default, or MySQL's current database. */
function defaultSchema(backend: Backend): string {
  if (backend.family === 'postgres') return 'public'
  return new URL(inject('mysqlUrl') ?? 'mysql://x/test').pathname.slice(1)
}

const PLUGINS: ReadonlyArray<{ name: string; make: (backend: Backend) => KyselyPlugin }> = [
  { name: 'WithSchemaPlugin', make: (b) => new WithSchemaPlugin(defaultSchema(b)) },
  { name: 'CamelCasePlugin', make: () => new CamelCasePlugin() },
  { name: 'DeduplicateJoinsPlugin', make: () => new DeduplicateJoinsPlugin() },
  {
    name: 'HandleEmptyInListsPlugin',
    make: () => new HandleEmptyInListsPlugin({ strategy: replaceWithNoncontingentExpression }),
  },
  { name: 'ParseJSONResultsPlugin', make: () => new ParseJSONResultsPlugin() },
]

const ORDERS = PLUGINS.flatMap((plugin) => (['before', 'after'] as const).map((order) => ({ plugin, order })))

/**
 * One set of tables and keys per backend (its setup, a new PGlite included, is most of the
 * time); each case is the application's Kysely on it with its own plugin order, on emptied tables.
 */
describe.each(backends())('plugin order [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let shared: EncryptedTestDb
    beforeAll(async () => {
      shared = await encryptedTestDb(backend)
    })
    afterAll(async () => {
      await shared?.destroy()
    })

    describe.each(ORDERS)('$plugin.name $order ours', ({ plugin, order }) => {
      /** The application's Kysely: the wrapped dialect, ours and the other plugin in this order. */
      let db: Kysely<TestDB>
      /** The application's other plugin alone, on the raw dialect: what plain queries must compile to. */
      let bare: Kysely<TestDB>
      let raw: Kysely<TestDB>
      let u: string
      let o: string
      let p: string
      const camel = plugin.name === 'CamelCasePlugin'
      const uid = camel ? 'userId' : 'user_id'
      const pg = backend.family === 'postgres'

      beforeAll(async () => {
        ;({ users: u, orders: o, plain: p } = shared.names)
        raw = shared.raw
        for (const table of [u, o, p]) await sql`delete from ${sql.table(table)}`.execute(raw)
        const other = plugin.make(backend)
        const ours = shared.encryption.plugin
        const none = shared.db.withoutPlugins()
        db =
          order === 'before'
            ? none.withPlugin(other).withPlugin(ours)
            : none.withPlugin(ours).withPlugin(other)
        bare = raw.withPlugin(plugin.make(backend))
      })

      it('queries on encrypted tables: writes, searches, joins, CTEs, subqueries, locks', async () => {
        const insert = db.insertInto(u).values([
          { id: 1, name: 'ada', email: 'Ada@x.io', ssn: '111-11-1111' },
          { id: 2, name: 'bob', email: 'bob@x.io', ssn: null },
        ])
        expectRedacted(insert.compile(), ['Ada@x.io', '111-11-1111'])
        await insert.execute()
        await db
          .insertInto(o)
          .values({ id: 1, [uid]: 1, item: 'book', email: 'ada-order@x.io' })
          .execute()
        const stored = await raw.selectFrom(u).select(['email', 'email_bidx']).where('id', '=', 1).execute()
        expect(stored[0]?.email).toBeInstanceOf(Uint8Array)
        expect(stored[0]?.email_bidx).toBeInstanceOf(Uint8Array)

        expect(
          await db.selectFrom(u).select(['id', 'name']).where('email', '=', 'ada@x.io').execute(),
        ).toEqual([{ id: 1, name: 'ada' }])
        expect(await db.selectFrom(u).select('name').where('ssn', '=', '111111111').execute()).toEqual([
          { name: 'ada' },
        ])
        const all = await db
          .selectFrom(u)
          .selectAll()
          .where('email', 'in', ['ada@x.io', 'bob@x.io'])
          .orderBy('id')
          .execute()
        expect(all.map((r) => [r.id, r.email, r.ssn])).toEqual([
          [1, 'Ada@x.io', '111-11-1111'],
          [2, 'bob@x.io', null],
        ])
        expect(
          await db
            .selectFrom(`${o} as o`)
            .innerJoin(`${u} as u`, 'u.id', `o.${uid}`)
            .select(['o.item', 'u.email as mail'])
            .where('o.email', '=', 'ada-order@x.io')
            .execute(),
        ).toEqual([{ item: 'book', mail: 'Ada@x.io' }])
        expect(
          await db
            .with('c', (db) => db.selectFrom(u).select(['id', 'email', 'email_bidx']))
            .selectFrom('c')
            .select(['id', 'email'])
            .where('email', '=', 'bob@x.io')
            .execute(),
        ).toEqual([{ id: 2, email: 'bob@x.io' }])
        const sub = db.selectFrom(u).select('id').where('email', '=', 'ada@x.io')
        expect(await db.selectFrom(o).select('item').where(uid, 'in', sub).execute()).toEqual([
          { item: 'book' },
        ])
        expect(
          await db.selectFrom(u).select('id').where('email', '=', 'ada@x.io').forUpdate().execute(),
        ).toEqual([{ id: 1 }])
        if (pg) {
          expect(
            await db.selectFrom(u).select('id').where('email', '=', 'ada@x.io').forUpdate(u).execute(),
          ).toEqual([{ id: 1 }])
        }
        if (plugin.name === 'HandleEmptyInListsPlugin') {
          expect(await db.selectFrom(u).select('id').where('email', 'in', []).execute()).toEqual([])
        }

        await db.updateTable(u).set({ email: 'bob2@x.io' }).where('email', '=', 'bob@x.io').execute()
        expect(await db.selectFrom(u).select('id').where('email', '=', 'BOB2@x.io').execute()).toEqual([
          { id: 2 },
        ])
        const deleted = await db.deleteFrom(u).where('email', '=', 'bob2@x.io').executeTakeFirst()
        expect(deleted.numDeletedRows).toBe(1n)
        expect(await raw.selectFrom(u).select('id').execute()).toEqual([{ id: 1 }])
      })

      it('queries on plain tables compile exactly as with the other plugin alone, and run', async () => {
        const same = async (
          build: (db: Kysely<TestDB>) => { compile(): unknown; execute(): Promise<unknown> },
        ) => {
          const mine = build(db).compile() as { sql: string; parameters: readonly unknown[] }
          const theirs = build(bare).compile() as { sql: string; parameters: readonly unknown[] }
          expect(mine.sql).toBe(theirs.sql)
          expect(mine.parameters).toEqual(theirs.parameters)
          return build(db).execute()
        }
        await same((db) => db.insertInto(p).values([{ label: 'a' }, { label: 'b' }]))
        expect(await same((db) => db.selectFrom(p).select('label').where('label', '=', 'a'))).toEqual([
          { label: 'a' },
        ])
        await same((db) => db.updateTable(p).set({ label: 'c' }).where('label', '=', 'b'))
        const dedupe = plugin.name === 'DeduplicateJoinsPlugin'
        expect(
          await same((db) => {
            const q = db.selectFrom(`${p} as x`).innerJoin(`${p} as y`, 'x.id', 'y.id')
            return (dedupe ? q.innerJoin(`${p} as y`, 'x.id', 'y.id') : q)
              .select('x.label')
              .orderBy('x.label')
          }),
        ).toEqual([{ label: 'a' }, { label: 'c' }])
        expect(await same((db) => db.selectFrom(p).select('label').where('label', 'in', ['a', 'z']))).toEqual(
          [{ label: 'a' }],
        )
        if (plugin.name === 'HandleEmptyInListsPlugin')
          expect(await same((db) => db.selectFrom(p).select('label').where('label', 'in', []))).toEqual([])
        await same((db) => db.selectFrom(p).select('id').forUpdate())
        if (pg) {
          // WithSchemaPlugin keeps these table names unqualified (a bare IdentifierNode): they crashed.
          const agg = (await same((db) =>
            db.selectFrom(p).select((eb) => eb.fn.jsonAgg(p).as('rows')),
          )) as Array<{ rows: unknown }>
          expect(agg).toHaveLength(1)
          const one = (await same((db) =>
            db
              .selectFrom(p)
              .select((eb) => eb.fn.toJson(p).as('row'))
              .where('label', '=', 'a'),
          )) as Array<{ row: unknown }>
          expect(JSON.stringify(one[0]?.row)).toContain('"label":"a"')
          await same((db) => db.selectFrom(p).select('id').forUpdate(p))
          await same((db) => db.selectFrom(p).select('id').forShare(p))
        }
        await same((db) => db.deleteFrom(p).where('label', '=', 'c'))
        expect(await raw.selectFrom(p).select('label').execute()).toEqual([{ label: 'a' }])
      })
    })
  })
})
