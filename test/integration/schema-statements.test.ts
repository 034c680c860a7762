import { expressionBuilder, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { insertAdaAndBob, useScannedTestDb } from '../support/scanned-db.js'

/**
 * Schema statements are sent as written, with their values in the SQL text (Kysely inlines
 * them). One that set an encrypted column against a value put the plaintext into the statement
 * and, on PostgreSQL, into the catalog: `createIndex(…).where('email', '=', v)` made a partial
 * index holding `v` (helper-135). A comparison written with the builder, and a default of an
 * encrypted column, are refused now (schema-statements.ts); raw SQL is sent as written.
 */
describe.each(backends())('schema statements over an encrypted table [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    const fx = useScannedTestDb(backend, ['ada@x.io'], insertAdaAndBob)
    const t = fx.t
    const { users } = t.names
    const v = 'ada@x.io'
    const index = `${users}_partial`

    it('a comparison setting an encrypted column against a value, or a default of one, is refused before anything is sent', async () => {
      const schema = t.db.schema
      const eb = expressionBuilder<TestDB, never>()
      const email = 'email' as never
      for (const [statement, place] of [
        [schema.createIndex(index).on(users).column('name').where(email, '=', v), 'index where'],
        [
          schema
            .createIndex(index)
            .on(users)
            .column('name')
            .where((w) => w(w.fn('lower', [email]), 'in', [v, 'bob@x.io'])),
          'index where',
        ],
        [
          schema
            .createIndex(index)
            .on(users)
            .expression(eb(email, '=', sql.lit(v) as never)),
          'index',
        ],
        [schema.alterTable(users).addCheckConstraint(`${users}_c`, eb(email, '<>', v as never)), 'check'],
        [
          schema
            .alterTable(users)
            .addColumn('is_ada', 'boolean', (c) => c.generatedAlwaysAs(eb(email, '=', v as never)).stored()),
          'generated',
        ],
        [schema.alterTable(users).alterColumn('email', (c) => c.setDefault(v)), 'default'],
        // A literal in a quoting the SQL text may use: PostgreSQL's dollar quotes (helper-137).
        [schema.alterTable(users).alterColumn('email', (c) => c.setDefault(sql`$$ada@x.io$$`)), 'default'],
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
      const email = 'email' as never
      if (backend.family === 'postgres') {
        // Partial indexes: PostgreSQL only. A value beside the column, for a plain one (helper-137).
        await schema
          .createIndex(index)
          .on(users)
          .column('email_bidx')
          .where((w) => w.and([w(email, 'is not', null), w('tenant' as never, '=', 'acme' as never)]))
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
      // Raw SQL is sent as written: a bound on the ciphertext's length.
      await schema
        .alterTable(users)
        .addCheckConstraint(`${users}_len`, sql`octet_length(email) < 4096`)
        .execute()
      await schema.alterTable(users).dropConstraint(`${users}_len`).execute()
      await schema
        .alterTable(users)
        .alterColumn('email', (c) => c.setDefault(null))
        .execute()
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
