import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { insertAdaAndBob, useScannedTestDb } from '../support/scanned-db.js'

/**
 * Raw SQL inside a query that reads an encrypted table itself: `where('id', 'in',
 * sql\`(select id from users where email = ${v})\`)`. Its names are read against that table as
 * against the query's own relations (raw-operands.ts `readLevel`). Before, a search in it sent
 * its plaintext when the query's own tables were not annotated (the plugin did not look at the
 * query at all), and a table given by `sql.table()` was refused as a whole-row value even in a
 * FROM, where it is none.
 */
describe.each(backends())('raw SQL that reads an encrypted table itself [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const fx = useScannedTestDb(backend, ['ada@x.io'], insertAdaAndBob)
    const t = fx.t
    const { users, orders, plain } = t.names

    it('a search of it in the raw SQL is refused before anything is sent, whatever relation the query reads', async () => {
      const by = (raw: ReturnType<typeof sql>) => t.db.selectFrom(plain).selectAll().where('id', 'in', raw)
      // The table by its name as text, by sql.table(), under an alias, with and without AS.
      for (const query of [
        by(sql`(select id from ${sql.raw(users)} where email = ${'ada@x.io'})`),
        by(sql`(select id from ${sql.table(users)} where email = ${'ada@x.io'})`),
        by(sql`(select id from ${sql.table(users)} as x where x.email = ${'ada@x.io'})`),
        by(sql`(select id from ${sql.table(orders)} o where o.email = ${'ada@x.io'})`),
        t.db
          .selectFrom(users)
          .select('id')
          .where(sql<boolean>`exists (select 1 from ${sql.table(orders)} o where o.email = ${'ada@x.io'})`),
      ]) {
        const error = await fx.refused(query, 'QUERY_REFUSED')
        expect(error.message).toContain('naming encrypted column')
      }
    })

    it('its rows as whole-row values are refused (an alias, an alias.*, the table as a value)', async () => {
      for (const query of [
        t.db.selectFrom(plain).select(sql`(select to_json(x) from ${sql.table(users)} x limit 1)`.as('j')),
        t.db.selectFrom(plain).select(sql`(select x.* from ${sql.table(users)} x limit 1)`.as('j')),
        t.db.selectFrom(users).select(sql`to_json(${sql.table(users)})`.as('j')),
      ]) {
        const error = await fx.refused(query, 'QUERY_REFUSED')
        expect(error.operator).toBe('whole row')
      }
    })

    it('one that reads only its plain columns runs: sql.table() in FROM is no whole-row value', async () => {
      const ids = (rows: { id: unknown }[]) => rows.map((r) => Number(r.id)).sort()
      const inUsers = await t.db
        .selectFrom(users)
        .select('id')
        .where('id', 'in', sql`(select id from ${sql.table(users)})`)
        .execute()
      expect(ids(inUsers)).toEqual([1, 2])
      const asText = await t.db
        .selectFrom(users)
        .select('id')
        .where('id', 'in', sql`(select u2.id from ${sql.raw(users)} u2 where u2.name = ${'Ada'})`)
        .execute()
      expect(ids(asText)).toEqual([1])
      const [count] = await t.db
        .selectFrom(users)
        .select(sql<number>`(select count(*) from ${sql.table(orders)})`.as('n'))
        .where('email', '=', 'ada@x.io')
        .execute()
      expect(Number(count?.n)).toBe(0)
      expect(fx.scanner.count()).toBeGreaterThan(0)
    })
  })
})
