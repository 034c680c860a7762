import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type AnyEb, describeScopeRegressions } from './scope-regressions-suite.js'

describeScopeRegressions('second to fourth readings', ({ db, refused, u, o, p, pgFamily }) => {
  describe('a second reading of the fixes', () => {
    it('an alias matched ignoring case (MySQL), or read from a subquery of the select list, HAVING or ORDER BY, is refused', async () => {
      await refused(
        db
          .selectFrom(u)
          .select(['id', 'email as E'])
          .having('e' as never, '=', 'ada@x.io' as never),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .selectFrom(u)
          .select(['id', 'email as E'])
          .orderBy('e' as never),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .selectFrom(u)
          .select((eb: AnyEb) => [
            'id',
            'email as e',
            eb.selectFrom(p).select(eb.fn.countAll().as('c')).where('e', '=', 'ada@x.io').as('n'),
          ]),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .selectFrom(u)
          .select(['id', 'email as e'])
          .having((eb: AnyEb) => eb.exists(eb.selectFrom(p).select('id').where('e', '=', 'ada@x.io'))),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        db
          .selectFrom(u)
          .select(['id', 'email as e'])
          .orderBy((eb: AnyEb) =>
            eb.selectFrom(p).select(eb.fn.countAll().as('c')).where('e', '=', 'ada@x.io'),
          ),
        'AMBIGUOUS_COLUMN',
      )
    })

    it('WITH RECURSIVE: a CTE read before its definition under another case is refused when it carries an encrypted column', async () => {
      await refused(
        db
          .withRecursive('a', (d) => d.selectFrom('B').selectAll())
          .withRecursive('b', (d) => d.selectFrom(u).select(['id', 'email']))
          .selectFrom('a')
          .select(['id', 'email'])
          .where('email', '=', 'ada@x.io'),
        'QUERY_REFUSED',
      )
    })

    it('a SET target whose qualifier differs only in case from its table is refused', async () => {
      await refused(
        db
          .updateTable(`${u} as a`)
          .set('A.email' as never, 'zed@x.io' as never)
          .where('a.id', '=', 2),
        'AMBIGUOUS_COLUMN',
      )
    })

    it("MySQL's DELETE of an alias of USING: the condition is rewritten for the aliased table", async () => {
      await db.insertInto(u).values({ id: 70, name: 'Zed', email: 'zed@x.io' }).execute()
      const query = db
        .deleteFrom('a')
        .using(`${u} as a`)
        .where('a.email' as never, '=', 'zed@x.io' as never)
      expect(JSON.stringify(query.compile().parameters)).not.toContain('zed@x.io')
      if (pgFamily) {
        // PostgreSQL has no such form: it rejects the query (with no plaintext in it).
        await expect(query.execute()).rejects.toThrow()
        await db.deleteFrom(u).where('id', '=', 70).execute()
      } else {
        await query.execute()
      }
      expect(await db.selectFrom(u).select('id').where('id', '=', 70).execute()).toEqual([])
    })

    it('insert … select into a blind index column, or with ON DUPLICATE KEY UPDATE over an encrypted table, is refused', async () => {
      await refused(
        db
          .insertInto(u)
          .columns(['id', 'name', 'email_bidx'])
          .expression((eb: AnyEb) =>
            eb.selectFrom(p).select([sql<number>`id + 90`.as('id'), 'label', eb.val('zed@x.io').as('b')]),
          ),
        'QUERY_REFUSED',
      )
      await refused(
        db
          .insertInto(p)
          .columns(['id', 'label'])
          .expression((eb: AnyEb) => eb.selectFrom(u).select(['id', 'name']).where('id', '=', 2))
          .onDuplicateKeyUpdate({
            label: (eb: AnyEb) =>
              eb.case().when('email', '=', 'bob@x.io').then('is bob').else('not bob').end(),
          }),
        'QUERY_REFUSED',
      )
    })

    it.runIf(pgFamily)(
      'MERGE into a plain table from a subquery over an encrypted table: the subquery is rewritten',
      async () => {
        await db
          .mergeInto(`${p} as t`)
          .using(
            (eb: AnyEb) => eb.selectFrom(u).select(['id', 'name']).where('email', '=', 'ada@x.io').as('s'),
            's.id',
            't.id',
          )
          .whenMatched()
          .thenUpdateSet({ label: (eb: AnyEb) => eb.ref('s.name') })
          .execute()
        expect(await db.selectFrom(p).select('label').where('id', '=', 1).execute()).toEqual([
          { label: 'Ada' },
        ])
        // …and it may not pass an encrypted column on.
        await refused(
          db
            .mergeInto(`${p} as t`)
            .using((eb: AnyEb) => eb.selectFrom(u).select(['id', 'email']).as('s'), 's.id', 't.id')
            .whenMatched()
            .thenUpdateSet({ label: 'x' }),
          'QUERY_REFUSED',
        )
      },
    )
  })

  describe('a third reading', () => {
    it.runIf(pgFamily)(
      'selectAll of a relation of the enclosing query (LATERAL) decrypts its columns',
      async () => {
        const rows = await db
          .selectFrom(u)
          .innerJoinLateral(
            (eb: AnyEb) => eb.selectFrom(p).selectAll(u).as('l'),
            (j) => j.onTrue(),
          )
          .select(['l.email', 'l.id'])
          .where(`${u}.id`, '=', 1)
          .execute()
        expect(rows).toEqual([{ email: 'ada@x.io', id: 1 }])
      },
    )

    it('selectAll of a relation of the query that is not in scope is refused', async () => {
      await refused(
        db
          .with('c', (d) => d.selectFrom(u).select('email'))
          .selectFrom(p)
          .selectAll('c' as never),
        'AMBIGUOUS_COLUMN',
      )
    })

    it('an alias of a select-list subquery over an encrypted table, read from another select-list subquery, is refused', async () => {
      await refused(
        db
          .selectFrom(u)
          .select([
            `${u}.id`,
            (eb: AnyEb) =>
              eb.selectFrom(`${u} as i`).select('i.email').whereRef('i.id', '=', `${u}.id`).as('e'),
            (eb: AnyEb) =>
              eb
                .selectFrom(p)
                .select(`${p}.id`)
                .where('e', 'in', ['bob@x.io', 'zed@x.io'])
                .limit(1)
                .as('hit'),
          ])
          .where(`${u}.id`, '=', 2),
        'AMBIGUOUS_COLUMN',
      )
    })

    it.runIf(pgFamily)(
      'DELETE … USING … RETURNING * decrypts each returned column under its own table',
      async () => {
        await db.insertInto(u).values({ id: 80, name: 'Del', email: 'del@x.io' }).execute()
        await db.insertInto(o).values({ id: 80, user_id: 80, item: 'x', email: 'order@x.io' }).execute()
        const rows = await db
          .deleteFrom(u)
          .using(o)
          .whereRef(`${o}.user_id`, '=', `${u}.id`)
          .where(`${u}.id`, '=', 80)
          .returningAll()
          .execute()
        // RETURNING * lists the target's columns, then USING's: of the two `email`s the row
        // keeps the last, the order's, and it must be decrypted as the order's.
        expect(rows).toMatchObject([{ item: 'x', email: 'order@x.io' }])
        await db.deleteFrom(o).where('id', '=', 80).execute()
      },
    )

    it('copying an encrypted column from a derived table that does not pass its own index on is refused', async () => {
      const derived = (eb: AnyEb) =>
        eb.selectFrom(`${u} as s`).select(['s.id', 's.email', 's.ssn_bidx as email_bidx']).as('d')
      const query = pgFamily
        ? db
            .updateTable(u)
            .from(derived)
            .set((eb: AnyEb) => ({ email: eb.ref('d.email') }))
            .whereRef(`${u}.id`, '=', 'd.id')
            .where(`${u}.id`, '=', 2)
        : db
            .updateTable([u, derived] as never)
            .set(`${u}.email` as never, (eb: AnyEb) => eb.ref('d.email'))
            .whereRef(`${u}.id` as never, '=', 'd.id' as never)
            .where(`${u}.id` as never, '=', 2 as never)
      await refused(query, 'QUERY_REFUSED')
      expect(await db.selectFrom(u).select('id').where('email', '=', 'bob@x.io').execute()).toEqual([
        { id: 2 },
      ])
    })
  })

  describe('a fourth reading', () => {
    it("a derived table may not pass one row's encrypted column on with another row's blind index", async () => {
      const mixed = (eb: AnyEb) =>
        eb
          .selectFrom(`${u} as a`)
          .innerJoin(`${u} as b`, (j) => j.onRef('a.id', '<>', 'b.id'))
          .select(['a.id', 'a.email', 'b.email_bidx'])
          .as('d')
      await refused(
        db.selectFrom(mixed).select(['d.id', 'd.email']).where('d.email', '=', 'bob@x.io'),
        'QUERY_REFUSED',
      )
      // Nor a scalar subquery's value as the index.
      await refused(
        db
          .selectFrom((eb: AnyEb) =>
            eb
              .selectFrom(`${u} as a`)
              .select([
                'a.id',
                'a.email',
                (sub: AnyEb) =>
                  sub.selectFrom(`${u} as b`).select('b.email_bidx').where('b.id', '=', 2).as('email_bidx'),
              ])
              .as('d'),
          )
          .select(['d.id', 'd.email'])
          .where('d.email', '=', 'bob@x.io'),
        'QUERY_REFUSED',
      )
      // One relation's column and index, through a derived table and a CTE, are searched as usual.
      expect(
        await db
          .with('c', (d) => d.selectFrom(u).select(['id', 'email', 'email_bidx']))
          .selectFrom((eb: AnyEb) => eb.selectFrom('c').select(['c.id', 'c.email', 'c.email_bidx']).as('d'))
          .select(['d.id', 'd.email'])
          .where('d.email', '=', 'bob@x.io')
          .execute(),
      ).toEqual([{ id: 2, email: 'bob@x.io' }])
    })

    it('an alias of a select-list subquery that reads an encrypted column through a CTE, read by a later one, is refused', async () => {
      await refused(
        db
          .with('c', (d) => d.selectFrom(u).select(['id', 'email']))
          .selectFrom(u)
          .select([
            `${u}.id`,
            (eb: AnyEb) => eb.selectFrom('c').select('c.email').where('c.id', '=', 2).as('e'),
            (eb: AnyEb) =>
              eb
                .selectFrom(p)
                .select(`${p}.id`)
                .where('e', 'in', ['bob@x.io', 'zed@x.io'])
                .limit(1)
                .as('hit'),
          ]),
        'AMBIGUOUS_COLUMN',
      )
    })

    it('a correlated select-list subquery aliased with the name of the column it selects runs', async () => {
      expect(
        await db
          .selectFrom(u)
          .select([
            `${u}.id`,
            (eb: AnyEb) => eb.selectFrom(p).select('label').whereRef(`${p}.id`, '=', `${u}.id`).as('label'),
          ])
          .where(`${u}.id`, 'in', [1, 2])
          .orderBy(`${u}.id`)
          .execute(),
      ).toEqual([
        { id: 1, label: expect.any(String) },
        { id: 2, label: null },
      ])
    })
  })
})
