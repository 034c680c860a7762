import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  CodecError,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'

// biome-ignore lint/suspicious/noExplicitAny: table names are generated per test file.
type AnyDB = Record<string, any>

const PEOPLE = [
  { id: 1, name: 'Ada', email: 'ada@x.io', ssn: '111-11-1111', dob: '1815-12-10' },
  { id: 2, name: 'Bob', email: 'bob@x.io', ssn: '222-22-2222', dob: '2000-02-29' },
  { id: 3, name: 'Cy', email: 'cy@x.io', ssn: null, dob: null },
]
const INDEX_COLUMNS = ['email_bidx', 'ssn_bidx', 'dob_bidx']

describe.each(backends())('omitBlindIndexes and calendarDate [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const people = uniqueName('people')
    const notes = uniqueName('notes')
    const keys = uniqueName('kfe_keys')
    const schema = encryptedSchema(
      {
        [people]: {
          email: encrypted.text({ index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] } }),
          ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 8, normalize: ['digits'] } }),
          dob: encrypted.calendarDate({ index: { name: 'dob_bidx' } }),
        },
        // Another table: its index column must not be taken for one of `people`'s.
        [notes]: { body: encrypted.text({ index: { name: 'body_bidx' } }) },
      },
      { omitBlindIndexes: true },
    )
    let encryption: FieldEncryption
    let db: Kysely<AnyDB>
    let raw: Kysely<AnyDB>

    beforeAll(async () => {
      encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ key: randomBytes(32) }),
        keyTable: keys,
        verifySchema: onlyTables(),
      })
      const [app, plain] = backend.createDialectPair()
      db = new Kysely<AnyDB>({ dialect: encryption.wrap(app), plugins: [encryption.plugin] })
      raw = new Kysely<AnyDB>({ dialect: plain })
      await db.schema
        .createTable(people)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('name', 'varchar(50)', (c) => c.notNull())
        .$call(addEncryptedColumns(schema, people, backend.family))
        .execute()
      await db.schema
        .createTable(notes)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('person_id', 'integer')
        .$call(addEncryptedColumns(schema, notes, backend.family))
        .execute()
      await createBlindIndexes(db, schema, people)
      await createBlindIndexes(db, schema, notes)
      await encryption.init(db)
      await db.insertInto(people).values(PEOPLE).execute()
      await db.insertInto(notes).values({ id: 1, person_id: 1, body: 'first' }).execute()
    })
    afterAll(async () => {
      if (db !== undefined) {
        for (const t of [people, notes, keys]) await sql`drop table if exists ${sql.table(t)}`.execute(raw)
        await encryption.close()
        await db.destroy()
        if (backend.name !== 'pglite') await raw.destroy()
      }
    })

    it('selectAll() returns the decrypted row without its index columns, which are still written', async () => {
      const rows = await db.selectFrom(people).selectAll().orderBy('id').execute()
      expect(rows).toEqual(PEOPLE)
      for (const row of rows) for (const name of INDEX_COLUMNS) expect(row).not.toHaveProperty(name)
      const stored = await raw.selectFrom(people).selectAll().orderBy('id').execute()
      expect(stored[0]?.email_bidx).toBeInstanceOf(Uint8Array)
      expect(stored[0]?.dob_bidx).toBeInstanceOf(Uint8Array)
      expect(stored[2]?.ssn_bidx).toBeNull()
    })

    it('searches still go through the indexes, false positives of an 8-bit index removed', async () => {
      expect(await db.selectFrom(people).selectAll().where('email', '=', ' BOB@x.io ').execute()).toEqual([
        PEOPLE[1],
      ])
      expect(await db.selectFrom(people).selectAll().where('ssn', '=', '111111111').execute()).toEqual([
        PEOPLE[0],
      ])
      expect(
        await db.selectFrom(people).select(['id', 'dob']).where('dob', '=', '2000-02-29').execute(),
      ).toEqual([{ id: 2, dob: '2000-02-29' }])
    })

    it('selectAll over a join drops the index columns of every encrypted table, keeps plain columns', async () => {
      const rows = await db
        .selectFrom(`${people} as p`)
        .innerJoin(`${notes} as n`, 'n.person_id', 'p.id')
        .selectAll('n')
        .select(['p.name', 'p.email'])
        .execute()
      expect(rows).toEqual([{ id: 1, person_id: 1, body: 'first', name: 'Ada', email: 'ada@x.io' }])
    })

    it.runIf(backend.family === 'postgres')('returningAll() leaves the index columns out too', async () => {
      const row = await db
        .insertInto(people)
        .values({ id: 4, name: 'Di', email: 'di@x.io', ssn: null, dob: '1999-12-31' })
        .returningAll()
        .executeTakeFirstOrThrow()
      expect(row).toEqual({ id: 4, name: 'Di', email: 'di@x.io', ssn: null, dob: '1999-12-31' })
      await db.deleteFrom(people).where('id', '=', 4).execute()
    })

    it('a stream leaves the index columns out of every row', async () => {
      const streamed: unknown[] = []
      for await (const row of db.selectFrom(people).selectAll().orderBy('id').stream(2)) streamed.push(row)
      expect(streamed).toEqual(PEOPLE)
    })

    it('calendarDate: the same YYYY-MM-DD string back; an impossible day is refused before anything is sent', async () => {
      const before = await raw
        .selectFrom(people)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
      const error = await db
        .insertInto(people)
        .values({ id: 9, name: 'Ed', email: 'ed@x.io', ssn: null, dob: '2023-02-29' })
        .execute()
        .then(
          () => undefined,
          (e: unknown) => e,
        )
      expect(error).toBeInstanceOf(CodecError)
      expect((error as CodecError).code).toBe('CODEC_INVALID_VALUE')
      expect((error as Error).message).not.toContain('2023-02-29')
      const after = await raw
        .selectFrom(people)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
      expect(Number(after.n)).toBe(Number(before.n))
    })
  })
})
