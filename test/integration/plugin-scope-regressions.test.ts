import { sql } from 'kysely'
import * as mysqlHelpers from 'kysely/helpers/mysql'
import { describe, expect, it } from 'vitest'
import { QueryRefusedError } from '../../src/index.js'
import { type AnyEb, describeScopeRegressions } from './scope-regressions-suite.js'

describeScopeRegressions('writes, CTEs, aliases', ({ db, refused, u, o, p, pgFamily }) => {
  describe('write targets and the values of writes', () => {
    it('a CTE named like an encrypted table cannot stand for it as the table an INSERT, UPDATE or DELETE writes', async () => {
      const shadow = () => db.with(u, (d) => d.selectFrom(p).select('id'))
      await refused(
        shadow().insertInto(u).values({ id: 60, name: 'Zed', email: 'zed@x.io' }),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        shadow().updateTable(u).set({ email: 'secret-value' }).where('id', '=', 1),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        shadow().deleteFrom(u).where('email', '=', 'bob@x.io').returning(['id', 'email']),
        'AMBIGUOUS_COLUMN',
      )
    })

    it('insert … select into plain columns of an encrypted table: the SELECT is rewritten (a CTE, or a builder made from eb)', async () => {
      const fromCte = db
        .with('c', (d) => d.selectFrom(u).select(['id', 'name', 'email', 'email_bidx']))
        .insertInto(o)
        .columns(['id', 'user_id', 'item'])
        .expression((eb) =>
          eb
            .selectFrom('c')
            .select([sql<number>`id + 300`.as('id'), 'id as uid', 'name'])
            .where('email', '=', 'bob@x.io'),
        )
      if (pgFamily) {
        // MySQL and MariaDB have no WITH before INSERT.
        await fromCte.execute()
        expect(
          await db.selectFrom(o).select(['id', 'user_id', 'item']).where('id', '=', 302).execute(),
        ).toEqual([{ id: 302, user_id: 2, item: 'Bob' }])
      } else {
        expect(JSON.stringify(fromCte.compile().parameters)).not.toContain('bob@x.io')
      }
      await db
        .insertInto(o)
        .columns(['id', 'user_id', 'item'])
        .expression((eb) =>
          eb
            .selectFrom(u)
            .select([sql<number>`id + 400`.as('id'), 'id as uid', 'name'])
            .where('email', '=', 'ada@x.io'),
        )
        .execute()
      expect(
        await db.selectFrom(o).select(['id', 'user_id', 'item']).where('id', '=', 401).execute(),
      ).toEqual([{ id: 401, user_id: 1, item: 'Ada' }])
      // …and it may not pass an encrypted column on into a plain one.
      await refused(
        db
          .insertInto(o)
          .columns(['id', 'user_id', 'item'])
          .expression((eb) => eb.selectFrom(u).select(['id', 'id as uid', 'email'])),
        'QUERY_REFUSED',
      )
    })

    it('a subquery in the value of a plain column of an encrypted table is rewritten', async () => {
      await db
        .insertInto(o)
        .values((eb) => ({
          id: 50,
          user_id: 1,
          item: eb.selectFrom(u).select('name').where('email', '=', 'ada@x.io').limit(1),
        }))
        .execute()
      expect(await db.selectFrom(o).select(['item']).where('id', '=', 50).execute()).toEqual([
        { item: 'Ada' },
      ])
    })

    it('ON CONFLICT / ON DUPLICATE KEY UPDATE of an insert into a plain table: subqueries in it are rewritten', async () => {
      const insert = db.insertInto(p).values({ id: 1, label: 'x' })
      if (pgFamily) {
        await insert
          .onConflict((oc) =>
            oc.column('id').doUpdateSet({
              label: (eb: AnyEb) => eb.selectFrom(u).select('name').where('email', '=', 'ada@x.io').limit(1),
            }),
          )
          .execute()
        expect(await db.selectFrom(p).select('label').where('id', '=', 1).execute()).toEqual([
          { label: 'Ada' },
        ])
        await db
          .insertInto(p)
          .values({ id: 1, label: 'x' })
          .onConflict((oc) =>
            oc
              .column('id')
              .doUpdateSet({ label: 'Bob exists' })
              .where((eb) => eb.exists(eb.selectFrom(u).select('id').where('email', '=', 'bob@x.io'))),
          )
          .execute()
        expect(await db.selectFrom(p).select('label').where('id', '=', 1).execute()).toEqual([
          { label: 'Bob exists' },
        ])
      } else {
        await insert
          .onDuplicateKeyUpdate({
            label: (eb: AnyEb) => eb.selectFrom(u).select('name').where('email', '=', 'bob@x.io').limit(1),
          })
          .execute()
        expect(await db.selectFrom(p).select('label').where('id', '=', 1).execute()).toEqual([
          { label: 'Bob' },
        ])
      }
    })
  })

  describe('CTEs', () => {
    it('WITH RECURSIVE: a CTE read before its definition is refused when it carries an encrypted column', async () => {
      await refused(
        db
          .withRecursive('a', (d) => d.selectFrom('b').selectAll())
          .withRecursive('b', (d) => d.selectFrom(u).select(['id', 'email']))
          .selectFrom('a')
          .select(['id', 'email'])
          .where('email', '=', 'ada@x.io'),
        'QUERY_REFUSED',
      )
      // Without an encrypted column, the same order is a query like any other.
      const rows = await db
        .withRecursive('a', (d) => d.selectFrom('b').selectAll())
        .withRecursive('b', (d) => d.selectFrom(p).select(['id', 'label']))
        .selectFrom('a')
        .select(['id', 'label'])
        .execute()
      expect(rows.length).toBeGreaterThan(0)
    })

    it('WITH RECURSIVE named like an encrypted table reads itself, not the table', async () => {
      const query = db
        .withRecursive(
          `${u}(n)` as never,
          (d) =>
            d
              .selectNoFrom(sql<number>`1`.as('n'))
              .unionAll((eb) =>
                eb.selectFrom(u).select(sql<number>`n + 1`.as('n')).where('n', '<', 3),
              ) as never,
        )
        .selectFrom(u)
        .select('n')
      // The recursive branch reads the CTE's own n: no encrypted column anywhere.
      expect((await query.execute()).map((r) => Number(r.n))).toEqual([1, 2, 3])
    })

    it('names that differ only in case from a CTE, a derived table column or an encrypted table are refused', async () => {
      await refused(
        db
          .selectFrom((eb) => eb.selectFrom(u).select(['id', 'email as e', 'email_bidx']).as('d'))
          .select(['d.id', 'd.E'])
          .where('d.E', '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .with('c', (d) => d.selectFrom(u).select(['id', 'email', 'email_bidx']))
          .selectFrom('c')
          .select(['id', 'EMAIL'])
          .where('EMAIL', '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .with('cc', (d) => d.selectFrom(u).select(['id', 'email', 'email_bidx']))
          .selectFrom('CC')
          .select(['id', 'email'])
          .where('email', '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .selectFrom(u.toUpperCase())
          .select('id')
          .where('email', '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
    })
  })

  describe('select-list aliases and qualifiers', () => {
    it('an alias of an encrypted column in ORDER BY, GROUP BY, HAVING or WHERE is refused', async () => {
      await refused(db.selectFrom(u).select(['id', 'email as e']).orderBy('e'), 'AMBIGUOUS_COLUMN')
      await refused(
        db
          .selectFrom(u)
          .select((eb) => ['email as e', eb.fn.countAll().as('n')])
          .groupBy('e'),
        'AMBIGUOUS_COLUMN',
      )
      // The alias shadows the plain column `name` of the same table.
      await refused(db.selectFrom(u).select(['id', 'email as name']).orderBy('name'), 'AMBIGUOUS_COLUMN')
      await refused(
        db
          .selectFrom(u)
          .select(['id', 'email as e'])
          .having('e' as never, '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .selectFrom(u)
          .select(['id', 'email as e'])
          .where('e' as never, '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
      if (pgFamily) {
        await refused(
          db
            .selectFrom(u)
            .select(['id', 'email as e'])
            .distinctOn('e' as never),
          'AMBIGUOUS_COLUMN',
        )
      }
      // The column itself, under an alias or beside it, is searched and returned as usual.
      expect(
        await db
          .selectFrom(u)
          .select(['id', 'email as e'])
          .where('email', '=', 'ada@x.io')
          .orderBy('id')
          .execute(),
      ).toEqual([{ id: 1, e: 'ada@x.io' }])
      expect(
        await db
          .selectFrom(u)
          .select(['id', 'email'])
          .where('email', '=', 'bob@x.io')
          .orderBy('id')
          .execute(),
      ).toEqual([{ id: 2, email: 'bob@x.io' }])
    })

    it('a qualifier that names nothing of the query is refused where the query reads an encrypted table', async () => {
      // A misspelt alias: the database would reject the query after receiving the value.
      await refused(
        db
          .selectFrom(`${u} as a`)
          .select('a.id')
          .where('x.email' as never, '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
      await refused(db.selectFrom(`${u} as a`).select('x.email_bidx' as never), 'AMBIGUOUS_COLUMN')
      // Any column: a derived table's output carries an encrypted column under a name of its own
      // (found by the fuzzer once the generator made such qualifiers).
      await refused(
        db
          .selectFrom((eb) => eb.selectFrom(u).select(['id', 'email as contact']).as('d'))
          .select('d.id')
          .where('nowhere.contact' as never, '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .selectFrom(`${u} as a`)
          .select('a.id')
          .where('x.name' as never, '=', 'Ada' as never),
        'AMBIGUOUS_COLUMN',
      )
      // Raw SQL elsewhere in the query that holds the word only in a comment or a literal.
      const raws = [sql<boolean>`true /* x */`, sql<boolean>`'x' <> ''`, sql<boolean>`true -- x\n`]
      for (const raw of raws) {
        await refused(
          db
            .selectFrom(`${u} as a`)
            .select('a.id')
            .where(raw)
            .where('x.email' as never, '=', 'ada@x.io' as never),
          'AMBIGUOUS_COLUMN',
        )
      }
      // A query that reads no encrypted table is not the plugin's to analyze: the database rejects it.
      const plain = await db
        .selectFrom(p)
        .select('id')
        .where('x.label' as never, '=', 'one' as never)
        .execute()
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(plain).toBeInstanceOf(Error)
      expect(plain).not.toBeInstanceOf(QueryRefusedError)
      // A qualifier raw SQL may declare: MySQL's jsonArrayFrom reads agg.id from "… as agg", here in a
      // query of the encrypted table. Compiled only (the plugin runs at compile time): neither
      // MariaDB nor PostgreSQL 15 runs its json_arrayagg.
      const compiled = db
        .selectFrom(u)
        .select((eb) => [
          'id',
          mysqlHelpers.jsonArrayFrom(eb.selectFrom(p).select(['id', 'label as tag'])).as('list'),
        ])
        .where('email', '=', 'ada@x.io')
        .compile()
      expect(compiled.sql).toMatch(/agg.\..tag/)
      expect(JSON.stringify(compiled.parameters)).not.toContain('ada@x.io')
      // …but not one named like an encrypted column (agg.email): the plugin cannot tell what agg
      // is, and a value beside such a reference could be that column's plaintext (helper-86, -88).
      expect(() =>
        db
          .selectFrom(u)
          .select((eb) => [
            mysqlHelpers.jsonArrayFrom(eb.selectFrom(p).select(['id', 'label as email'])).as('list'),
          ])
          .compile(),
      ).toThrow(/agg\.email" names no relation of this query the plugin can see/)
      // …and one raw SQL names as `${sql.id(…)}`: a plain table's column, run.
      const declared = await db
        .selectFrom([`${u} as a`, sql`${sql.table(p)} as ${sql.id('pl')}` as never])
        .select(['a.id', 'pl.label' as never])
        .where('pl.id' as never, '=', 1 as never)
        .execute()
      const users = await db.selectFrom(u).select('id').execute()
      const labels = await db.selectFrom(p).select('label').where('id', '=', 1).execute()
      expect(declared).toHaveLength(users.length * labels.length)
      expect(labels.length).toBeGreaterThan(0)
    })

    it('a qualifier naming a relation of the query that is not in scope there is refused', async () => {
      await refused(
        db
          .selectFrom(`${u} as a`)
          .innerJoin(
            (eb) =>
              eb
                .selectFrom(o)
                .select(['id', 'user_id'])
                .where('a.email' as never, '=', 'ada@x.io' as never)
                .as('b'),
            'b.user_id',
            'a.id',
          )
          .select('a.id'),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .with('c', (d) => d.selectFrom(u).select(['id', 'email', 'email_bidx']))
          .selectFrom(o)
          .select('id')
          .where('c.email' as never, '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
    })
  })
})
