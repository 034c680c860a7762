import { type Kysely, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type EncryptedSchema, encrypted, encryptedSchema, type MigrationPhase } from '../../src/index.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import { usePlaintextColumns } from '../support/plaintext-columns.js'

/**
 * While both forms are written (`dual-writing`, `backfilled`), a row is read as its plaintext when
 * it has one, and as its encrypted value otherwise (a row a `cut-over` process wrote). Both come
 * back as the column's codec gives them, so that one result holds one type per column: a
 * numeric's `'1.50'` is `1.5`, a date's Date is `'1990-05-17'` for `calendarDate`, MySQL's
 * tinyint 0/1 a boolean.
 */
describe.each(backends())(
  'dual-writing: a plaintext is read as its codec value [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const table = uniqueName('mig_types')
      const columns = ['amount', 'born', 'flag'] as const
      const schema = (phase: MigrationPhase): EncryptedSchema =>
        encryptedSchema({
          [table]: {
            amount: encrypted.number({ storedAs: 'amount_encrypted', migration: phase }),
            born: encrypted.calendarDate({ storedAs: 'born_encrypted', migration: phase }),
            flag: encrypted.boolean({ storedAs: 'flag_encrypted', migration: phase }),
          },
        })
      const t = usePlaintextColumns(backend, {
        table,
        columns,
        schema,
        backfill: true,
        readerPhase: 'backfilled',
        async create(raw) {
          const [decimal, flag] =
            backend.family === 'mysql' ? ['decimal(10,2)', 'tinyint(1)'] : ['numeric(10,2)', 'boolean']
          await sql`create table ${sql.table(table)} (id integer primary key, amount ${sql.raw(decimal)}, born date, flag ${sql.raw(flag)})`.execute(
            raw,
          )
          await sql`insert into ${sql.table(table)} (id, amount, born, flag) values (1, 1.50, '1990-05-17', ${sql.raw(backend.family === 'mysql' ? '1' : 'true')})`.execute(
            raw,
          )
        },
      })

      it('a row read from its plaintext has the values its encrypted form decrypts to', async () => {
        // biome-ignore lint/suspicious/noExplicitAny: the table is named at run time.
        const db = t.readerDb as Kysely<any>
        const row = await db
          .selectFrom(table)
          .select(['id', ...columns])
          .executeTakeFirstOrThrow()
        expect(row).toEqual({ id: 1, amount: 1.5, born: '1990-05-17', flag: true })
        // biome-ignore lint/suspicious/noExplicitAny: the table is named at run time.
        const stored = await (t.raw as Kysely<any>)
          .selectFrom(table)
          .select(columns.map((c) => `${c}_encrypted as ${c}`))
          .executeTakeFirstOrThrow()
        for (const column of columns)
          expect(await t.reader.decrypt(table, column, stored[column])).toEqual(row[column])
      })
    })
  },
)
