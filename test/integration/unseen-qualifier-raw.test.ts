import { sql } from 'kysely'
import { beforeAll, describe, expect, it } from 'vitest'
import { encrypted } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { useOwnTable } from '../support/own-table.js'

/**
 * A qualifier that names no relation of the query is refused, unless raw SQL of the query holds
 * the word (raw SQL may declare a relation the plugin cannot see: MySQL's jsonArrayFrom reads
 * `agg.id` from `… as agg`). The fuzzer found that exception letting a plaintext through:
 * `.where(sql\`nowhere.id = 1\`).where('nowhere.secret', '=', v)` sent `v` as a parameter, and
 * the database rejected the name only after receiving it (helper-86, seed 203 on MariaDB).
 */
describe.each(backends())(
  'a qualifier only raw SQL names, compared with a value [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOwnTable(backend, {
        prefix: 'unseen_raw',
        columns: { secret: encrypted.text({ index: { name: 'secret_bidx' } }) },
        create: (table) =>
          table.addColumn('id', 'integer', (c) => c.primaryKey()).addColumn('label', 'varchar(32)'),
        options: () => ({ verifySchema: false }),
      })
      beforeAll(async () => {
        await t.db.insertInto(t.table).values({ id: 1, label: 'one', secret: 'S-1' }).execute()
      })

      it('a column named like an encrypted one is refused before anything is sent (AMBIGUOUS_COLUMN)', async () => {
        const query = t.db
          .selectFrom(`${t.table} as t`)
          .select('t.id')
          .where(sql<boolean>`nowhere.id = 1`)
          .where('nowhere.secret' as never, '=', 'kq-tag-secret-1' as never)
        await expect(query.execute()).rejects.toMatchObject({ code: 'AMBIGUOUS_COLUMN' })
      })

      it('a column a derived table of the query passes an encrypted column on as is refused too', async () => {
        const query = t.db
          .selectFrom(t.db.selectFrom(t.table).select(['id', 'secret as secret_x']).as('d'))
          .select('d.id')
          .where(sql<boolean>`nowhere.id = 1`)
          .where('nowhere.secret_x' as never, '=', 'kq-tag-secret-1' as never)
        await expect(query.execute()).rejects.toMatchObject({ code: 'AMBIGUOUS_COLUMN' })
      })

      it('every other shape a value may sit in beside such a column is refused too (helper-88)', async () => {
        const base = () =>
          t.db.selectFrom(`${t.table} as t`).select('t.id').where(sql<boolean>`nowhere.id = 1`)
        const shapes = [
          base().where((eb) => eb(eb.fn('lower', ['nowhere.secret' as never]), '=', 'kq-1')),
          base().where((eb) => eb.between('nowhere.secret' as never, 'kq-2a' as never, 'kq-2b' as never)),
          base().where((eb) => eb(eb.cast('nowhere.secret' as never, 'text'), '=', 'kq-3')),
          base().where(sql.ref('nowhere.secret'), '=', 'kq-4'),
          base().where('nowhere.secret' as never, '=', sql`lower(${'kq-5'})` as never),
          base().select(sql`case when ${sql.ref('nowhere.secret')} = ${'kq-6'} then 1 end`.as('c')),
        ]
        for (const query of shapes) {
          await expect(query.execute()).rejects.toMatchObject({ code: 'AMBIGUOUS_COLUMN' })
        }
        const update = t.db
          .updateTable(t.table)
          .set({ label: 'z' })
          .where(sql<boolean>`nowhere.id = 1`)
          .where((eb) => eb.between('nowhere.secret' as never, 'kq-7a' as never, 'kq-7b' as never))
        await expect(update.execute()).rejects.toMatchObject({ code: 'AMBIGUOUS_COLUMN' })
      })

      it('a plain column of a relation raw SQL declares still runs', async () => {
        const rows = await t.db
          .selectFrom([`${t.table} as a`, sql`${sql.table(t.table)}`.as('pl') as never])
          .select(['a.id', 'a.secret'])
          .where(sql<boolean>`pl.id = a.id`)
          .where('pl.label' as never, '=', 'one' as never)
          .execute()
        expect(rows).toEqual([{ id: 1, secret: 'S-1' }])
      })
    })
  },
)
