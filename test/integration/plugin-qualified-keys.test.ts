/**
 * A table annotated by its schema-qualified name (`public.users`; on MySQL `<database>.users`)
 * and queried without its schema, as most applications write it: the plugin takes the unqualified
 * name for the annotated table (the connection's search path decides, which it cannot see), and
 * refuses the name when several schemas' tables are annotated under it. Before, such a query was
 * taken for a plaintext table: writes stored the plaintext and searches sent it.
 */
import { randomBytes } from 'node:crypto'
import type { PGlite } from '@electric-sql/pglite'
import { type Dialect, Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, backends, dropTables, onlyTables, uniqueName } from '../support/backends.js'
import { type ScanningDialect, scanningDialect } from '../support/leak-scanner.js'
import { newPGlite } from '../support/pglite.js'

// biome-ignore lint/suspicious/noExplicitAny: table names are generated per run.
type AnyDB = Record<string, any>

const SECRET = 'qualified-secret-4417@x.io'

describe.each(backends())('schema-qualified table keys on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('qk')
    const keyTable = `${table}_keys`
    let pglite: PGlite | undefined
    let raw: Kysely<AnyDB>
    let encryption: FieldEncryption
    let db: Kysely<AnyDB>
    let wire: ScanningDialect
    let qualified: string
    const newDialect = (): Dialect => {
      if (backend.name !== 'pglite') return backend.createDialect()
      pglite ??= newPGlite()
      return new PGliteDialect(pglite)
    }
    const columns = { email: encrypted.text({ index: { name: 'email_bidx' } }) }

    beforeAll(async () => {
      raw = new Kysely<AnyDB>({ dialect: newDialect() })
      const { rows } = await sql<{ s: string }>`select ${sql.raw(
        backend.family === 'postgres' ? 'current_schema()' : 'database()',
      )} as s`.execute(raw)
      qualified = `${rows[0]?.s}.${table}`
      const schema = encryptedSchema({ [qualified]: columns })
      await raw.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .$call(addEncryptedColumns(schema, qualified, backend.family))
        .execute()
      await createBlindIndexes(raw, schema, qualified)
      encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ key: randomBytes(32) }),
        keyTable,
        autoCreateKeys: true,
        verifySchema: onlyTables(table),
      })
      wire = scanningDialect(newDialect(), () => [SECRET])
      db = new Kysely<AnyDB>({ dialect: encryption.wrap(wire), plugins: [encryption.plugin] })
    })
    afterAll(async () => {
      // Tables first: destroying a Kysely over PGlite closes the instance both share.
      await dropTables(raw, [table, keyTable])
      await db?.destroy()
      await encryption?.close()
      // On PGlite, db.destroy() closed the instance raw shares.
      if (backend.name !== 'pglite') await raw?.destroy()
    })

    it('an unqualified write, search and read are encrypted, searched by index and decrypted', async () => {
      await db.insertInto(table).values({ id: 1, email: SECRET }).execute()
      await db.updateTable(table).set({ email: SECRET }).where('id', '=', 1).execute()
      expect(
        await db.selectFrom(table).select(['id', 'email']).where('email', '=', SECRET).execute(),
      ).toEqual([{ id: 1, email: SECRET }])
      expect(wire.hits()).toEqual([])
      // The qualified name in another case (MySQL with lower_case_table_names folds it onto the
      // annotated table): refused, never passed through.
      for (const name of [
        qualified.toUpperCase(),
        `${qualified.slice(0, qualified.indexOf('.'))}.${table.toUpperCase()}`,
      ])
        expect(() => db.insertInto(name).values({ id: 3, email: SECRET }).compile()).toThrow(
          expect.objectContaining({ code: 'AMBIGUOUS_COLUMN' }),
        )
      const stored = await raw.selectFrom(table).select(['email', 'email_bidx']).executeTakeFirstOrThrow()
      expect(Buffer.from(stored.email).includes(Buffer.from(SECRET))).toBe(false)
      expect(await encryption.decrypt(qualified, 'email', stored.email)).toBe(SECRET)
      expect(
        Buffer.from(stored.email_bidx).equals((await encryption.indexOf(qualified, 'email', SECRET))[0]!),
      ).toBe(true)
    })

    it('a name annotated in two schemas is refused without its schema, before anything is sent', async () => {
      const other = backend.family === 'postgres' ? 'kfe_other' : 'kfe_other_db'
      const two = fieldEncryption({
        schema: encryptedSchema({ [qualified]: columns, [`${other}.${table}`]: columns }),
        keyProvider: localKeyProvider({ key: randomBytes(32) }),
        verifySchema: false,
      })
      // Its own PGlite: closing this instance closes its dialect's database.
      const own = backend.name === 'pglite' ? newPGlite() : undefined
      const twoDb = new Kysely<AnyDB>({
        dialect: two.wrap(own === undefined ? newDialect() : new PGliteDialect(own)),
        plugins: [two.plugin],
      })
      try {
        for (const query of [
          twoDb.insertInto(table).values({ id: 2, email: SECRET }),
          twoDb.selectFrom(table).selectAll().where('email', '=', SECRET),
        ]) {
          expect(() => query.compile()).toThrow(expect.objectContaining({ code: 'AMBIGUOUS_COLUMN' }))
        }
        // A near spelling is refused too; a CTE of that name, and another schema's table, are not
        // the annotated tables and pass through unchanged.
        expect(() =>
          twoDb.insertInto(table.toUpperCase()).values({ id: 2, email: SECRET }).compile(),
        ).toThrow(expect.objectContaining({ code: 'AMBIGUOUS_COLUMN' }))
        const cte = twoDb
          .with(table, (db) => db.selectFrom(keyTable).select('logical_table as email'))
          .selectFrom(table)
          .selectAll()
          .where('email', '=', 'x')
          .compile()
        expect(cte.parameters).toEqual(['x'])
        const elsewhere = twoDb
          .withSchema('kfe_elsewhere')
          .selectFrom(table)
          .selectAll()
          .where('email', '=', 'x')
          .compile()
        expect(elsewhere.parameters).toEqual(['x'])
        // Named with its schema, it is the one table of that name.
        const schemaName = qualified.slice(0, qualified.indexOf('.'))
        const named = twoDb
          .withSchema(schemaName)
          .selectFrom(table)
          .selectAll()
          .where('email', '=', SECRET)
          .compile()
        expect(named.sql).toContain('email_bidx')
      } finally {
        await twoDb.destroy()
        await two.close()
        await own?.close().catch(() => undefined)
      }
    })
  })
})
