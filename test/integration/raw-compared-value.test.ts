import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { useScannedTestDb } from '../support/scanned-db.js'

/**
 * A comparison with raw SQL for its value whose text goes on past the value
 * (`where('id', '=', sql\`${1} or id <> ${1}\`)`), beside a search. Kysely prints raw SQL as
 * written, so the database read `email_bidx = … and id = 1 or id <> 1` as
 * `(email_bidx = … and id = 1) or id <> 1`: a select returned the other rows to the search's row
 * check, which dropped them, and an update wrote them (the differential fuzzer, seed 20261213 on
 * PostgreSQL). The plugin sends such a comparison in parentheses, as it sends a raw condition:
 * the statement means what the query's tree says.
 */
describe.each(backends())('a raw compared value beside a search [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const fx = useScannedTestDb(backend, [], async (t) => {
      await t.db
        .insertInto(t.names.users)
        .values([
          { id: 1, name: 'ada', email: 'ada@x.io' },
          { id: 2, name: 'bob', email: 'bob@x.io' },
          { id: 3, name: 'cy', email: 'cy@x.io' },
        ])
        .execute()
    })
    const t = fx.t
    const pastTheValue = () => sql<number>`${1} or ${sql.ref('id')} <> ${1}`

    it('a select sends the comparison in parentheses', async () => {
      const rows = await t.db
        .selectFrom(t.names.users)
        .select('id')
        .where('email', '=', 'ada@x.io')
        .where((e) => e('id', '=', pastTheValue()))
        .execute()
      expect(rows.map((r) => Number(r.id))).toEqual([1])
      const sent = fx.scanner.queries.map((q) => q.sql).find((s) => s.includes('email_bidx'))
      expect(sent).toMatch(/and \(["`]id["`] = (\$\d+|\?) or ["`]id["`] <> (\$\d+|\?)\)/)
    })

    it('exists and between over raw SQL beside a search go in parentheses too (helper-131)', async () => {
      const u = t.names.users
      const exists = await t.db
        .selectFrom(u)
        .select('id')
        .where('email', '=', 'ada@x.io')
        .where((e) => e.exists(sql`(select 1 where 1 = 0) or ${sql.ref('id')} <> ${1}`))
        .execute()
      expect(exists).toEqual([])
      const between = await t.db
        .selectFrom(u)
        .select('id')
        .where('email', '=', 'ada@x.io')
        .where((e) => e.between('id', 5, sql<number>`${5} or ${sql.ref('id')} <> ${1}`))
        .execute()
      expect(between).toEqual([])
      const update = await t.db
        .updateTable(u)
        .set({ name: 'unchanged?' })
        .where('email', '=', 'ada@x.io')
        .where((e) => e.exists(sql`(select 1 where 1 = 0) or ${sql.ref('id')} <> ${1}`))
        .executeTakeFirst()
      expect(Number(update.numUpdatedRows)).toBe(0)
    })

    it('an update writes only the rows the tree says', async () => {
      const result = await t.db
        .updateTable(t.names.users)
        .set({ name: 'changed' })
        .where('email', '=', 'ada@x.io')
        .where((e) => e('id', '=', pastTheValue()))
        .executeTakeFirst()
      expect(Number(result.numUpdatedRows)).toBe(1)
      const names = await t.db.selectFrom(t.names.users).select(['id', 'name']).orderBy('id').execute()
      expect(names.map((r) => [Number(r.id), r.name])).toEqual([
        [1, 'changed'],
        [2, 'bob'],
        [3, 'cy'],
      ])
    })
  })
})
