import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { insertAdaAndBob, useScannedTestDb } from '../support/scanned-db.js'

/**
 * Parts of a statement that no clause of its analysis read (helper-135): EXPLAIN's options, the
 * LIMIT of an UPDATE or DELETE, and OUTPUT. Raw SQL there was sent as written, its plaintext
 * parameters too; an EXPLAIN ANALYZE whose options held a whole query ran it. They are walked as
 * expressions now (analyze-expressions.ts `statementExtras`).
 */
describe.each(backends())('statement parts outside its clauses [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const fx = useScannedTestDb(backend, ['ada@x.io'], insertAdaAndBob)
    const t = fx.t
    const { users, plain } = t.names
    const v = 'ada@x.io'
    // The word after EXPLAIN, then a query of its own, the statement commented out.
    const smuggled =
      backend.family === 'postgres'
        ? sql`analyze) select id from ${sql.table(users)} where email = ${v} --`
        : sql`extended select id from ${sql.table(users)} where email = ${v} -- `

    it('raw SQL in them that reads an encrypted table, holds a value for one or names one is refused before anything is sent', async () => {
      const update = () => t.db.updateTable(users).set({ name: 'x' }).where('id', '=', 99)
      const remove = () => t.db.deleteFrom(users).where('id', '=', 99)
      const reads = sql<number>`(select count(*) from ${sql.table(users)} where email = ${v})`
      // `explain()` runs the query at once: each case is a thunk.
      const explain = (q: { explain(...a: never[]): Promise<unknown> }, options: ReturnType<typeof sql>) => ({
        execute: () => q.explain(undefined as never, options as never),
      })
      for (const query of [
        explain(t.db.selectFrom(users).select('id'), smuggled),
        explain(remove(), smuggled),
        update().limit(reads),
        remove().limit(reads),
        t.db.insertInto(plain).values({ id: 51, label: 'q' }).output(reads.as('n')),
        update().output(sql`(email = ${v})`.as('n')),
      ]) {
        const error = await fx.refused(query, 'QUERY_REFUSED')
        expect(error.operator).toBe('raw sql')
      }
      const named = await fx.refused(
        explain(t.db.selectFrom(users).select('id'), sql`${sql.ref('email')}`),
        'QUERY_REFUSED',
      )
      expect(named).toMatchObject({ column: 'email', operator: 'explain' })
      // An encrypted column as an OUTPUT value (MSSQL's `inserted.email` would be its ciphertext).
      const output = await fx.refused(
        t.db
          .deleteFrom(users)
          .where('id', '=', 99)
          .output(sql`${sql.ref('email')}`.as('e')),
        'QUERY_REFUSED',
      )
      expect(output.column).toBe('email')
    })

    it('what they hold otherwise is sent as before', async () => {
      if (backend.family === 'postgres') {
        const plan = await t.db
          .selectFrom(users)
          .select('id')
          .where('email', '=', v)
          .explain('json', sql`analyze`)
        expect(JSON.stringify(plan)).toContain('email_bidx')
      } else {
        // MySQL's UPDATE … LIMIT and DELETE … LIMIT.
        const updated = await t.db
          .updateTable(users)
          .set({ name: 'Ada L.' })
          .where('email', '=', v)
          .limit(1)
          .executeTakeFirst()
        expect(Number(updated.numUpdatedRows)).toBe(1)
        const deleted = await t.db.deleteFrom(plain).where('id', '=', 99).limit(1).executeTakeFirst()
        expect(Number(deleted.numDeletedRows)).toBe(0)
        const plan = await t.db.selectFrom(users).select('id').where('email', '=', v).explain()
        expect(JSON.stringify(plan)).toContain(users)
      }
    })
  })
})
