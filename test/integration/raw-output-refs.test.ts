import { sql } from 'kysely'
import { beforeAll, describe, expect, it } from 'vitest'
import { encrypted } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { useOwnTable } from '../support/own-table.js'

/**
 * Raw SQL in ORDER BY or GROUP BY naming a select-list alias of an encrypted column, or a
 * position, was sent as it is: the database sorted or grouped by ciphertext (one group per row),
 * silently (helper-89's fuzzer, seed 11 on PGlite). The same name through `orderBy('c0')` was
 * refused already.
 */
describe.each(backends())(
  'raw ORDER BY / GROUP BY naming an encrypted output [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOwnTable(backend, {
        prefix: 'raw_out',
        columns: { ssn: encrypted.text() },
        create: (table) =>
          table.addColumn('id', 'integer', (c) => c.primaryKey()).addColumn('label', 'varchar(8)'),
        options: () => ({ verifySchema: false }),
      })
      beforeAll(async () => {
        await t.db
          .insertInto(t.table)
          .values([
            { id: 1, label: 'b', ssn: 'S-1' },
            { id: 2, label: 'a', ssn: 'S-2' },
          ])
          .execute()
      })

      it('is refused before anything is sent (QUERY_REFUSED)', async () => {
        const queries = [
          t.db.selectFrom(t.table).select(['id', 'ssn as c0']).orderBy(sql`c0`),
          t.db.selectFrom(t.table).select(['id', 'ssn as c0']).orderBy(sql`C0 desc`),
          t.db
            .selectFrom(t.table)
            .select(['ssn as c0', (eb) => eb.fn.countAll().as('n')])
            .groupBy(sql`c0`),
          t.db.selectFrom(t.table).select(['id', 'ssn']).orderBy(sql`2`),
          // Positions in every other form (helper-90), and HAVING, where MySQL reads aliases.
          t.db.selectFrom(t.table).select(['id', 'ssn']).orderBy(sql`2 desc`),
          t.db.selectFrom(t.table).select(['id', 'ssn']).orderBy(sql`2 nulls last`),
          t.db.selectFrom(t.table).selectAll().orderBy(sql`3 desc`),
          t.db.selectFrom(t.table).select(['id', 'ssn']).orderBy(sql.lit(2)),
          t.db
            .selectFrom(t.table)
            .select(['id', 'ssn'])
            .orderBy(sql`${sql.lit(2)}`),
          t.db
            .selectFrom(t.table)
            .select(['ssn', (eb) => eb.fn.countAll().as('n')])
            .groupBy(sql`1, 2`),
          t.db
            .selectFrom(t.table)
            .select(['ssn', (eb) => eb.fn.countAll().as('n')])
            .groupBy([sql.lit(1), sql.lit(2)] as never),
          t.db
            .selectFrom(t.table)
            .select(['id', 'ssn as c0'])
            .groupBy('id')
            .having(sql<boolean>`c0 = ${'S-1'}`),
        ]
        for (const query of queries) {
          await expect(query.execute()).rejects.toMatchObject({ code: 'QUERY_REFUSED', column: 'ssn' })
        }
      })

      it('a plaintext output named like the encrypted column sorts through sql.ref as through its name (helper-89, seed 202)', async () => {
        for (const by of [sql`${sql.ref('ssn')}`, 'ssn']) {
          const rows = await t.db
            .selectFrom(t.table)
            .select(['id', 'label as ssn'])
            .orderBy(by as never)
            .execute()
          expect(rows).toEqual([
            { id: 2, ssn: 'a' },
            { id: 1, ssn: 'b' },
          ])
        }
      })

      it('a plaintext output named in raw SQL still sorts', async () => {
        const rows = await t.db
          .selectFrom(t.table)
          .select(['id', 'label as l0', 'ssn'])
          .orderBy(sql`l0`)
          .execute()
        expect(rows).toEqual([
          { id: 2, l0: 'a', ssn: 'S-2' },
          { id: 1, l0: 'b', ssn: 'S-1' },
        ])
      })
    })
  },
)
