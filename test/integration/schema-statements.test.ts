import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import { insertAdaAndBob, useScannedTestDb } from '../support/scanned-db.js'

/**
 * Schema statements are sent as written, with their values in the SQL text (Kysely inlines
 * them). One that set an encrypted column against a value put the plaintext into the statement
 * and, on PostgreSQL, into the catalog: `createIndex(…).where('email', '=', v)` made a partial
 * index holding `v` (helper-135). Refused now (schema-statements.ts); the rest runs.
 */
describe.each(backends())('schema statements over an encrypted table [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const fx = useScannedTestDb(backend, ['ada@x.io'], insertAdaAndBob)
    const t = fx.t
    const { users } = t.names
    const v = 'ada@x.io'
    const index = `${users}_partial`

    it('an expression setting an encrypted column against a value is refused before anything is sent', async () => {
      const schema = t.db.schema
      for (const [statement, place] of [
        [
          schema
            .createIndex(index)
            .on(users)
            .column('name')
            .where('email' as never, '=', v),
          'index where',
        ],
        [
          schema.createIndex(index).on(users).column('name').where(sql<boolean>`email <> 'ada@x.io'`),
          'index where',
        ],
        [schema.alterTable(users).addCheckConstraint(`${users}_c`, sql`email <> ${sql.lit(v)}`), 'check'],
        [schema.alterTable(users).alterColumn('email', (c) => c.setDefault(v)), 'default'],
        [
          schema
            .alterTable(users)
            .modifyColumn('email', 'varchar(320)', (c) => c.generatedAlwaysAs(sql`name`)),
          'generated',
        ],
      ] as const) {
        const error = await fx.refused(statement, 'QUERY_REFUSED')
        expect(error).toMatchObject({ column: 'email', operator: place })
        expect(error.message).not.toContain(v)
      }
    })

    it('one that names it without a value, names its blind index, or sets a plain column runs', async () => {
      const schema = t.db.schema
      if (backend.family === 'postgres') {
        // Partial indexes: PostgreSQL only.
        await schema
          .createIndex(index)
          .on(users)
          .column('email_bidx')
          .where('email' as never, 'is not', null)
          .execute()
        await schema.dropIndex(index).execute()
        await schema
          .createIndex(index)
          .on(users)
          .column('name')
          .where('email_bidx' as never, 'is not', null)
          .execute()
        await schema.dropIndex(index).execute()
      }
      await schema
        .alterTable(users)
        .addColumn('note_text', 'varchar(20)', (c) => c.defaultTo('none'))
        .execute()
      const rows = await t.db
        .selectFrom(users)
        .select(['id', 'email', 'note_text' as never])
        .orderBy('id')
        .execute()
      expect(rows).toEqual([
        { id: 1, email: v, note_text: 'none' },
        { id: 2, email: 'bob@x.io', note_text: 'none' },
      ])
      await schema.alterTable(users).dropColumn('note_text').execute()
    })
  })
})
