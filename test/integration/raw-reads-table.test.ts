import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { insertAdaAndBob, useScannedTestDb } from '../support/scanned-db.js'

/**
 * Raw SQL inside a builder query that reads an encrypted table itself: `where('id', 'in',
 * sql\`(select id from users where email = ${v})\`)`. The plugin cannot tell what it does with
 * that table's columns, so it refuses it (raw-operands.ts `refuseRawRead`), whatever the query's
 * own tables. Before, such SQL sent its plaintext when the query's own tables were not annotated
 * (the plugin did not look at the query), or when it named the table as text.
 */
describe.each(backends())('raw SQL that reads an encrypted table itself [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const fx = useScannedTestDb(backend, ['ada@x.io'], insertAdaAndBob)
    const t = fx.t
    const { users, orders, plain } = t.names
    const v = 'ada@x.io'
    const readsItself = async (query: { execute(): Promise<unknown> }) => {
      const error = await fx.refused(query, 'QUERY_REFUSED')
      expect(error.operator).toBe('raw sql')
      expect(error.message).toMatch(/reads encrypted table \S+ itself/)
    }

    it('a search of it is refused before anything is sent, whatever relation the query reads', async () => {
      const inPlain = (raw: ReturnType<typeof sql>) =>
        t.db.selectFrom(plain).select('id').where('id', 'in', raw)
      const inUsers = (raw: ReturnType<typeof sql>) =>
        t.db.selectFrom(users).select('id').where('id', 'in', raw)
      for (const query of [
        // The table as text, by sql.table(), by sql.id(), under an alias.
        inPlain(sql`(select id from ${sql.raw(users)} where email = ${v})`),
        inPlain(sql`(select id from ${sql.table(users)} where email = ${v})`),
        inPlain(sql`(select id from ${sql.id(users)} as x where x.email = ${v})`),
        inUsers(sql`(select user_id from ${sql.raw(orders)} o where o.email = ${v})`),
        // Its search in nested raw SQL, or its FROM in nested raw SQL (helper-132's A1).
        inPlain(sql`(select id from ${sql.table(users)} where ${sql`email = ${v}`})`),
        inPlain(
          sql`(select id from ${sql.table(users)} where ${sql.join([sql`email = ${v}`, sql`id > 0`], sql` and `)})`,
        ),
        inPlain(sql`(${sql`select id from ${sql.table(users)}`} where email = ${v})`),
        inPlain(sql`(${sql`select id`} ${sql.raw(`from ${users}`)} where email = ${v})`),
        // An alias after a comment, a literal that hides the name from a word-by-word reading.
        inPlain(sql`(select u.id from ${sql.table(users)} --x\n u where u.email = ${v})`),
        inPlain(sql`(select id from ${sql.raw(users)} where name <> 'O\\'' and email = ${v} and name <> '')`),
        t.db
          .selectFrom(users)
          .select('id')
          .where(sql<boolean>`exists (select 1 from ${sql.table(orders)} o where o.email = ${v})`),
      ]) {
        await readsItself(query)
      }
    })

    it('its rows as values are refused (json_agg of it, a select * in nested raw SQL, the table as a value)', async () => {
      await readsItself(
        t.db.selectFrom(users).select(sql`(select json_agg(u) from ${sql.table(users)} --x\n u)`.as('j')),
      )
      await readsItself(
        t.db
          .selectFrom(plain)
          .select(sql`(select count(*) from (${sql`select *`} from ${sql.table(users)}) x)`.as('n')),
      )
      const value = await fx.refused(
        t.db.selectFrom(users).select(sql`to_json(${sql.table(users)})`.as('j')),
        'QUERY_REFUSED',
      )
      expect(value.operator).toBe('whole row')
    })

    it('one that reads only its plain columns is refused too, with the builder form as the hint; the builder form runs', async () => {
      const error = await fx.refused(
        t.db
          .selectFrom(users)
          .select('id')
          .where('id', 'in', sql`(select id from ${sql.raw(users)} where name = ${'Ada'})`),
        'QUERY_REFUSED',
      )
      expect(error.hint).toContain("db.selectFrom('")
      const rows = await t.db
        .selectFrom(users)
        .select('id')
        .where('id', 'in', t.db.selectFrom(users).select('id').where('name', '=', 'Ada'))
        .where('email', '=', v)
        .execute()
      expect(rows.map((r) => Number(r.id))).toEqual([1])
    })

    it('in the places raw SQL was not read before: modifyFront/modifyEnd, a raw alias, a raw SET target, a CTE named in raw SQL (helper-133)', async () => {
      const count = sql<number>`(select count(*) from ${sql.table(users)} where email = ${v})`
      for (const query of [
        t.db
          .selectFrom(plain)
          .select('id')
          .modifyEnd(sql`union select id from ${sql.table(users)} where email = ${v}`),
        t.db.selectFrom(plain).select('id').modifyFront(sql`${count} as n,`),
        t.db
          .updateTable(plain)
          .set({ name: 'Zed' })
          .where('id', '>', 100)
          .modifyEnd(sql`and exists (select 1 from ${sql.table(users)} where email = ${v})`),
        t.db
          .deleteFrom(plain)
          .where('id', '>', 100)
          .modifyEnd(sql`and id in (select id from ${sql.raw(users)} where email = ${v})`),
        t.db.selectFrom(plain).select(sql`1`.as(sql`one, ${count} as n`)),
        t.db
          .selectFrom(
            sql.table(plain).as(sql`x where exists (select 1 from ${sql.table(users)} where email = ${v})`),
          )
          .selectAll(),
        t.db
          .updateTable(plain)
          .set(
            sql`name = coalesce((select name from ${sql.table(users)} where email = ${v}), 'n'), id`,
            sql`id`,
          ),
        t.db
          .with('cu', (db) => db.selectFrom(users).select(['id', 'email']))
          .selectFrom(plain)
          .select('id')
          .where('id', 'in', sql`(select id from cu where email = ${v})`),
      ]) {
        await readsItself(query)
      }
      // Raw SQL in them that names the query's own encrypted columns: refused as raw SQL elsewhere is.
      for (const query of [
        t.db.selectFrom(users).select('id').where('id', '>', 0).modifyEnd(sql`and email = ${v}`),
        t.db
          .selectFrom(users)
          .select('id')
          .modifyFront(sql`${sql.ref('email')} as e2,`),
        t.db.deleteFrom(users).where('id', '>', 100).modifyEnd(sql`and email = ${v}`),
        t.db.selectFrom(users).select(sql`1`.as(sql`one, (email = ${v}) as m`)),
      ]) {
        const error = await fx.refused(query, 'QUERY_REFUSED')
        expect(error.operator).toBe('raw sql')
      }
      // What still runs: a row lock beside a search, a raw alias that is a name.
      const locked = await t.db
        .selectFrom(users)
        .select('id')
        .where('email', '=', v)
        .modifyEnd(sql`for update`)
        .execute()
      expect(locked.map((r) => Number(r.id))).toEqual([1])
      const named = await t.db
        .selectFrom(users)
        .select(sql<number>`1`.as(sql`y`))
        .where('email', '=', v)
        .execute()
      expect(named).toHaveLength(1)
      // Raw SQL that only qualifies by such a CTE's name (a correlated reference) does not read it.
      const correlated = await t.db
        .with('cu', (db) => db.selectFrom(users).select(['id', 'email']))
        .selectFrom('cu')
        .select([
          'cu.id',
          sql<number>`(select count(*) from ${sql.table(plain)} p where p.id = cu.id)`.as('n'),
        ])
        .orderBy('cu.id')
        .execute()
      expect(correlated.map((r) => [Number(r.id), Number(r.n)])).toEqual([
        [1, 0],
        [2, 0],
      ])
      // An upsert in modifyEnd that qualifies by its own table; a CTE's name in a literal, a
      // comment or as a function's argument (helper-134).
      const upsert = t.db.insertInto(users).values({ id: 9, name: 'Nia', email: 'nia@x.io' })
      // The table's name written in the SQL text, as an application writes it (sql.raw here: the
      // fixture's names are generated).
      await upsert
        .modifyEnd(
          sql.raw(
            backend.family === 'postgres'
              ? `on conflict (id) do update set name = excluded.name where ${users}.tenant is distinct from excluded.tenant`
              : `on duplicate key update name = concat(${users}.name, values(name))`,
          ),
        )
        .execute()
      const words = await t.db
        .with('u', (db) => db.selectFrom(users).select(['id', 'email']))
        .selectFrom('u')
        .select(['u.id', sql<string>`concat('from u', ${sql.lit('x')}) /* taken from u */`.as('w')])
        .where('u.id', '=', 9)
        .execute()
      expect(words.map((r) => String(r.w))).toEqual(['from ux'])
      await t.raw.deleteFrom(users).where('id', '=', 9).execute()
      if (backend.family === 'postgres') {
        // Row locks written as raw SQL: two clauses, names by sql.raw and sql.ref.
        for (const lock of [
          sql`for update of ${sql.raw(users)}`,
          sql`for update of ${sql.table(users)} for share of ${sql.table(orders)}`,
        ]) {
          const rows = await t.db
            .selectFrom(users)
            .innerJoin(orders, `${orders}.id`, `${users}.id`)
            .select(`${users}.id`)
            .where(`${users}.email`, '=', v)
            .modifyEnd(lock)
            .execute()
          expect(rows).toEqual([])
        }
        const aliased = await t.db
          .selectFrom(`${users} as u`)
          .select('u.id')
          .where('u.email', '=', v)
          .modifyEnd(sql`for update of ${sql.ref('u')} skip locked`)
          .execute()
        expect(aliased.map((r) => Number(r.id))).toEqual([1])
        const of = await t.db
          .selectFrom(users)
          .select('id')
          .where('email', '=', v)
          .modifyEnd(sql`for update of ${sql.table(users)}`)
          .execute()
        expect(of.map((r) => Number(r.id))).toEqual([1])
      }
    })

    it("raw SQL in modifyFront/modifyEnd: a refusal's hint names the builder's forms, which run; a LIMIT before a row lock runs", async () => {
      // helper-134: these ran before ad99b2b read modifiers, and the hint then named only where().
      const refusedModifiers = [
        t.db.selectFrom(users).select('id').modifyFront(sql`distinct on (email_bidx)`),
        t.db
          .insertInto(users)
          .values({ id: 7, name: 'Gus', email: 'gus@x.io' })
          .modifyEnd(sql`on conflict (email_bidx) do nothing`),
      ]
      for (const query of refusedModifiers) {
        const error = await fx.refused(query, 'QUERY_REFUSED')
        expect(error.operator).toBe('raw sql')
        expect(error.hint).toContain('onConflict((oc) => oc.column(')
        expect(error.hint).toContain('distinctOn(')
        // The message says it once, and ends before the hint.
        expect(error.message.split('Hint:')).toHaveLength(2)
      }
      // A LIMIT then a row lock (`update … of`, not an UPDATE): no value, no read.
      const lock =
        backend.family === 'postgres'
          ? sql`limit 1 for update of ${sql.table(users)}`
          : sql`limit 1 for update`
      const locked = await t.db
        .selectFrom(users)
        .select('id')
        .where('email', '=', v)
        .modifyEnd(lock)
        .execute()
      expect(locked.map((r) => Number(r.id))).toEqual([1])
      // Beside a truncated index's post filter it limits rows before the filter: refused.
      const limited = await fx.refused(
        t.db.selectFrom(users).select('id').where('ssn', '=', '123-45-6789').modifyEnd(lock),
        'QUERY_REFUSED',
      )
      expect(limited.message).toContain('raw SQL modifiers')
      if (backend.family === 'postgres') {
        const distinct = await t.db
          .selectFrom(users)
          .select(['id', 'email'])
          .distinctOn('email_bidx')
          .orderBy('email_bidx')
          .orderBy('id')
          .execute()
        expect(distinct.map((r) => r.email).sort()).toEqual(['ada@x.io', 'bob@x.io'])
        const skipped = await t.db
          .insertInto(users)
          .values({ id: 7, name: 'Gus', email: 'ADA@x.io ' })
          .onConflict((oc) => oc.column('email_bidx').doNothing())
          .execute()
        expect(skipped.map((r) => Number(r.numInsertedOrUpdatedRows))).toEqual([0])
      }
    })

    it.runIf(backend.family === 'postgres')(
      'a conflict target written as an expression is read like any expression (helper-133)',
      async () => {
        const upsert = () => t.db.insertInto(users).values({ id: 9, name: 'ADA', email: 'gus@x.io' })
        // Sent as written before, its parameter too (the database then found no such constraint).
        const raw = await fx.refused(
          upsert().onConflict((oc) => oc.expression(sql`(email = ${v})`).doNothing()),
          'QUERY_REFUSED',
        )
        expect(raw.operator).toBe('raw sql')
        const fn = await fx.refused(
          upsert().onConflict((oc) => oc.expression(sql`lower(${sql.ref('email')})`).doNothing()),
          'QUERY_REFUSED',
        )
        expect(fn.column).toBe('email')
        // One over plain columns runs.
        const index = `${users}_lower_name`
        await sql`create unique index ${sql.id(index)} on ${sql.table(users)} (lower(name))`.execute(t.raw)
        try {
          const skipped = await upsert()
            .onConflict((oc) => oc.expression(sql`lower(name)`).doNothing())
            .execute()
          expect(skipped.map((r) => Number(r.numInsertedOrUpdatedRows))).toEqual([0])
        } finally {
          await sql`drop index ${sql.id(index)}`.execute(t.raw)
        }
      },
    )

    it('raw SQL that reads only tables of no annotation runs, and a raw statement is sent as written', async () => {
      const rows = await t.db
        .selectFrom(users)
        .select('id')
        .where('id', 'not in', sql`(select id from ${sql.table(plain)})`)
        .orderBy('id')
        .execute()
      expect(rows.map((r) => Number(r.id))).toEqual([1, 2])
      const raw = await sql<{
        id: number
      }>`select id from ${sql.table(users)} where email_bidx is not null order by id`.execute(t.db)
      expect(raw.rows.map((r) => Number(r.id))).toEqual([1, 2])
    })
  })
})
