import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type AnyEb, describeScopeRegressions } from './scope-regressions-suite.js'

describeScopeRegressions('fifth and sixth readings', ({ db, refused, u, o, p, pgFamily }) => {
  describe('a fifth reading: blind indexes written beside their columns, and the post-filter', () => {
    it('a blind index set beside its column must be the value the plugin derives for it', async () => {
      await refused(
        db
          .updateTable(u)
          .set((eb: AnyEb) => ({ email: 'secret-value', email_bidx: eb.ref('email_bidx') }))
          .where('id', '=', 2),
        'QUERY_REFUSED',
      )
      await refused(
        db
          .updateTable(u)
          .set((eb: AnyEb) => ({ email: null, email_bidx: eb.ref('email_bidx') }))
          .where('id', '=', 2),
        'QUERY_REFUSED',
      )
      await refused(
        db.insertInto(u).values({ id: 95, name: 'Zed', email: 'zed@x.io', email_bidx: Buffer.alloc(32) }),
        'QUERY_REFUSED',
      )
      const conflict = db.insertInto(u).values({ id: 1, name: 'Ada', email: 'zed@x.io' })
      await refused(
        pgFamily
          ? conflict.onConflict((oc) =>
              oc.column('id').doUpdateSet((eb: AnyEb) => ({
                email: eb.ref('excluded.email'),
                email_bidx: eb.ref(`${u}.email_bidx`),
              })),
            )
          : conflict.onDuplicateKeyUpdate((eb: AnyEb) => ({
              email: eb.fn('values', [eb.ref('email')]),
              email_bidx: eb.ref(`${u}.email_bidx`),
            })),
        'QUERY_REFUSED',
      )
      // On its own, an index takes only index bytes (or itself); NULL would unlink it from its column.
      await refused(db.updateTable(u).set({ email_bidx: null }).where('id', '=', 2), 'QUERY_REFUSED')
      expect(await db.selectFrom(u).select('id').where('email', '=', 'bob@x.io').execute()).toEqual([
        { id: 2 },
      ])
    })

    it('the verify pass refuses an encrypted column written without its blind index (plugin bypassed)', async () => {
      const bypass = db.withoutPlugins()
      await refused(bypass.updateTable(u).set({ email: null }).where('id', '=', 2), 'PLAINTEXT_WRITE')
      if (pgFamily) {
        await refused(
          bypass
            .updateTable(`${u} as a`)
            .from(`${u} as b`)
            .set((eb: AnyEb) => ({ email: eb.ref('b.email') }))
            .whereRef('a.id', '=', 'b.id'),
          'PLAINTEXT_WRITE',
        )
      }
      expect(await db.selectFrom(u).select('id').where('email', '=', 'bob@x.io').execute()).toEqual([
        { id: 2 },
      ])
    })

    it('a search-index condition beside a function that may combine rows, or raw SQL, in the select list is refused', async () => {
      await refused(
        db
          .selectFrom(u)
          .select((eb: AnyEb) => eb.fn('json_arrayagg', ['id']).as('ids'))
          .where('ssn', '=', '123-45-6789'),
        'QUERY_REFUSED',
      )
      await refused(
        db.selectFrom(u).select(sql<number>`count(*)`.as('n')).where('ssn', '=', '123-45-6789'),
        'QUERY_REFUSED',
      )
      // Row-by-row functions are fine.
      expect(
        await db
          .selectFrom(u)
          .select((eb: AnyEb) => ['id', eb.fn('upper', ['name']).as('shout')])
          .where('ssn', '=', '123-45-6789')
          .execute(),
      ).toEqual([])
    })

    it("a user's output named __kfe_fp_<n> at the top level is kept beside the plugin's own hidden column", async () => {
      await db.updateTable(u).set({ ssn: '111-22-3333' }).where('id', '=', 1).execute()
      try {
        // Not a reference: the plugin numbers its own after it (two outputs of one name would
        // leave only the last in the row).
        const value = db
          .selectFrom(u)
          .select((eb: AnyEb) => ['id', eb.val('x').as('__kfe_fp_0')])
          .where('ssn', '=', '111-22-3333')
        expect(value.compile().sql).toContain('__kfe_fp_1')
        expect(await value.execute()).toEqual([{ id: 1, __kfe_fp_0: 'x' }])
        // In the plugin's very form: still the user's output, decrypted and kept.
        const same = db
          .selectFrom(u)
          .select(['id', `${u}.ssn as __kfe_fp_0`])
          .where('ssn', '=', '111-22-3333')
        expect(await same.execute()).toEqual([{ id: 1, __kfe_fp_0: '111-22-3333' }])
        // A compiled query run twice takes the verify pass: the same rows.
        const compiled = same.compile()
        for (let run = 0; run < 2; run++)
          expect((await db.executeQuery(compiled)).rows).toEqual([{ id: 1, __kfe_fp_0: '111-22-3333' }])
      } finally {
        await db.updateTable(u).set({ ssn: null }).where('id', '=', 1).execute()
      }
    })

    it("the plugin's own hidden column of a search through a derived table or CTE passes when its query is a subquery", async () => {
      const viaDerived = db
        .selectFrom(db.selectFrom(u).select(['id', 'email', 'email_bidx']).as('d'))
        .select('d.id')
        .where('d.email', '=', 'ada@x.io')
      expect(viaDerived.compile().sql).toContain('__kfe_fp_0')
      expect(await db.selectFrom(u).select('id').where('id', 'in', viaDerived).execute()).toEqual([{ id: 1 }])
      expect(await db.selectFrom(viaDerived.as('q')).selectAll().execute()).toEqual([{ id: 1 }])
      const viaCte = db
        .with('c', (qb) => qb.selectFrom(u).select(['id', 'email', 'email_bidx']))
        .selectFrom('c')
        .select('c.id')
        .where('c.email', '=', 'bob@x.io')
      expect(await db.selectFrom(u).select('id').where('id', 'in', viaCte).execute()).toEqual([{ id: 2 }])
    })

    it.runIf(pgFamily)(
      'a RETURNING list may name an output __kfe_fp_<n> (nothing drops it there)',
      async () => {
        const rows = await db
          .with('x', (qb) =>
            qb
              .updateTable(u)
              .set({ name: 'Ada' })
              .where('id', '=', 1)
              .returning(['id', 'name as __kfe_fp_0']),
          )
          .selectFrom('x')
          .selectAll()
          .execute()
        expect(rows).toEqual([{ id: 1, __kfe_fp_0: 'Ada' }])
      },
    )

    it('a user alias that starts like a hidden column does not derail the hidden columns', async () => {
      await db.updateTable(u).set({ ssn: '111-22-3333' }).where('id', '=', 1).execute()
      const query = db
        .selectFrom(`${u} as a`)
        .innerJoin(`${u} as b`, (j) => j.onTrue())
        .select(['a.id', 'b.id as bid', 'a.name as __kfe_fp_x'])
        .where('a.ssn', '=', '111-22-3333')
        .where('b.ssn', '=', '111-22-3333')
      expect(query.compile().sql).toMatch(/__kfe_fp_0[\s\S]*__kfe_fp_1/)
      expect(await query.execute()).toEqual([{ id: 1, bid: 1, __kfe_fp_x: 'Ada' }])
      await db.updateTable(u).set({ ssn: null }).where('id', '=', 1).execute()
    })
  })

  describe('a sixth reading: tables given as raw SQL, and aggregates around a search', () => {
    it('sql.table() alone names its table; other raw SQL naming an encrypted table as a relation is refused', async () => {
      expect(
        await db
          .selectFrom(sql.table(u).as('x'))
          .select(['x.id', 'x.email'])
          .where('x.email' as never, '=', 'ada@x.io' as never)
          .execute(),
      ).toEqual([{ id: 1, email: 'ada@x.io' }])
      await db
        .updateTable(sql.table(u).as('x') as never)
        .set({ email: 'secret-value' } as never)
        .where('x.id' as never, '=', 2 as never)
        .execute()
      expect(await db.selectFrom(u).select('id').where('email', '=', 'secret-value').execute()).toEqual([
        { id: 2 },
      ])
      await db.updateTable(u).set({ email: 'bob@x.io' }).where('id', '=', 2).execute()
      await refused(
        db
          .selectFrom(sql`(select * from ${sql.table(u)})`.as('x'))
          .select('x.id')
          .where('x.email' as never, '=', 'ada@x.io' as never),
        'QUERY_REFUSED',
      )
      await refused(
        db
          .deleteFrom(sql`only ${sql.table(u)}`.as('x') as never)
          .where('x.email' as never, '=', 'bob@x.io' as never),
        'QUERY_REFUSED',
      )
    })

    it('a search-index condition beside an aggregate of the outer rows, in a select-list subquery or ORDER BY, is refused', async () => {
      await refused(
        db
          .selectFrom(u)
          .select((eb: AnyEb) => [
            eb
              .selectFrom(p)
              .select((e2: AnyEb) => e2.fn.count(`${u}.id`).as('c'))
              .as('n'),
          ])
          .where('ssn', '=', '123-45-6789'),
        'QUERY_REFUSED',
      )
      await refused(
        db
          .selectFrom(u)
          .select(['name'])
          .where('ssn', '=', '123-45-6789')
          .orderBy((eb: AnyEb) => eb.fn.countAll()),
        'QUERY_REFUSED',
      )
      // An aggregate of the subquery's own rows is per outer row, and fine.
      expect(
        await db
          .selectFrom(u)
          .select((eb: AnyEb) => [
            'id',
            eb
              .selectFrom(o)
              .select((e2: AnyEb) => e2.fn.countAll().as('c'))
              .whereRef(`${o}.user_id`, '=', `${u}.id`)
              .as('orders'),
          ])
          .where('ssn', '=', '123-45-6789')
          .execute(),
      ).toEqual([])
    })
  })
})
