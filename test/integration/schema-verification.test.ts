/**
 * Schema mistakes are caught before the first write (issue 13): `encryption.verifySchema(db)`,
 * and the wrapper's own check before the first query that writes or needs keys. One setup per
 * backend; each test makes its own tables (a per-file prefix) and its own `fieldEncryption`.
 */
import { randomBytes } from 'node:crypto'
import type { PGlite } from '@electric-sql/pglite'
import { type Dialect, Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
  type SchemaMismatchError,
  type SchemaProblem,
  type VerifySchemaOptions,
} from '../../src/index.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import { type ScanningDialect, scanningDialect } from '../support/leak-scanner.js'
import { newPGlite } from '../support/pglite.js'

// biome-ignore lint/suspicious/noExplicitAny: table names are generated per test.
type AnyDB = Record<string, any>

const SECRET = 'typo@example.org'

/** Queries of a schema check: the catalog reads (the sampling queries name the tables). */
/**
 * A catalog query of the schema check. Not `init`'s own look at the key table's `logical_table`
 * collation (MySQL, src/keys/key-table.ts): key-table upkeep, not the check.
 */
// The key table's own catalog reads (its collation, whether it exists) are not the check's.
// The catalog's own reads (its columns and unique indexes). The session's settings, which the
// check reads first, are read by the key store before each write on MySQL too: not counted.
const isCatalogQuery = (q: { sql: string }) =>
  /information_schema|pg_index/.test(q.sql) &&
  !q.sql.includes("column_name = 'logical_table'") &&
  !q.sql.includes('as table_exists')

describe.each(backends())('schema verification on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const prefix = uniqueName('sv')
    let n = 0
    /** A table name of this file: the reverse check looks at these only (the database is shared). */
    const table = (name: string) => `${prefix}_${n}_${name}`
    /** The reverse check looks at this test's tables only (the database is shared). */
    const mine = (): VerifySchemaOptions => {
      const own = `${prefix}_${n}_`
      return { unannotatedTables: (t) => t.startsWith(own) }
    }
    const kek = randomBytes(32)
    let pglite: PGlite | undefined
    let raw: Kysely<AnyDB>
    const opened: Kysely<AnyDB>[] = []
    const instances: FieldEncryption[] = []
    const newDialect = (): Dialect => {
      if (backend.name !== 'pglite') return backend.createDialect()
      pglite ??= newPGlite()
      return new PGliteDialect(pglite)
    }
    const family = backend.family

    /** A wrapped Kysely over a scanning dialect, with its own `fieldEncryption`. */
    function app(
      schema: EncryptedSchema,
      verify: boolean | VerifySchemaOptions = mine(),
    ): { db: Kysely<AnyDB>; encryption: FieldEncryption; wire: ScanningDialect } {
      const encryption = fieldEncryption({
        schema,
        // One KEK for the file: every instance reads what another wrote.
        keyProvider: localKeyProvider({ key: kek }),
        keyTable: `${prefix}_keys`,
        verifySchema: verify,
      })
      instances.push(encryption)
      const wire = scanningDialect(newDialect(), () => [SECRET])
      const db = new Kysely<AnyDB>({ dialect: encryption.wrap(wire), plugins: [encryption.plugin] })
      opened.push(db)
      return { db, encryption, wire }
    }

    const id = family === 'postgres' ? 'serial' : 'integer'
    const idCol = (c: { primaryKey(): typeof c; autoIncrement(): typeof c }) =>
      family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()

    /** The table `schema` annotates as `name`, created as `as` with its columns but no blind index. */
    async function createColumns(schema: EncryptedSchema, name: string, as = name): Promise<void> {
      await raw.schema
        .createTable(as)
        .addColumn('id', id, idCol as never)
        .$call(addEncryptedColumns(schema, name, family))
        .execute()
    }

    /** The table `schema` annotates as `name`, created as it should be. */
    async function createGood(schema: EncryptedSchema, name: string, as = name): Promise<void> {
      await createColumns(schema, name, as)
      if (as === name) await createBlindIndexes(raw, schema, name)
    }

    const usersSchema = (name: string) =>
      encryptedSchema({
        [name]: {
          email: encrypted.text({ index: { name: 'email_bidx' } }),
          ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
        },
      })

    async function mismatch(run: () => Promise<unknown>): Promise<SchemaMismatchError> {
      const error = await run().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toMatchObject({ code: 'SCHEMA_MISMATCH', name: 'SchemaMismatchError' })
      const e = error as SchemaMismatchError
      expect(e.message).not.toContain(SECRET)
      expect(JSON.stringify(e.problems)).not.toContain(SECRET)
      return e
    }
    const kinds = (problems: readonly SchemaProblem[]) =>
      problems.map((p) => `${p.kind} ${p.table} ${p.columns.join(',')}`).sort()

    beforeAll(() => {
      raw = new Kysely<AnyDB>({ dialect: newDialect() })
    })
    afterAll(async () => {
      const { rows } = await sql<{
        t: string
      }>`select table_name as t from information_schema.tables where table_name like ${`${prefix}%`}`.execute(
        raw,
      )
      for (const r of rows) await sql`drop table if exists ${sql.table(r.t)}`.execute(raw)
      for (const e of instances) await e.close()
      if (backend.name !== 'pglite') for (const db of opened) await db.destroy()
      await raw.destroy()
    })

    it('a misspelt table (user for users) fails with SCHEMA_MISMATCH before any plaintext is stored', async () => {
      n++
      const schema = usersSchema(table('user'))
      await createGood(schema, table('user'), table('users'))
      const { db, wire } = app(schema)
      const e = await mismatch(() => db.insertInto(table('users')).values({ email: SECRET }).execute())
      expect(kinds(e.problems)).toEqual([
        `table-missing ${table('user')} `,
        `unannotated-index-columns ${table('users')} email_bidx,ssn_bidx`,
      ])
      // The fix of a misspelling is a rename (or the schema's name).
      const reverse = e.problems.find((p) => p.kind === 'unannotated-index-columns')
      expect(reverse?.fix).toMatch(/alter table .* rename to /)
      const rows = await raw.selectFrom(table('users')).select(sql<number>`count(*)`.as('n')).execute()
      expect(Number(rows[0]?.n)).toBe(0)
      expect(wire.hits()).toEqual([])
    })

    it('a camelCase key whose snake_case column exists: renaming the key is the fix, and a table with both spellings is refused', async () => {
      n++
      const name = table('people')
      const schema = encryptedSchema({ [name]: { homeAddress: encrypted.text() } })
      const binary = family === 'postgres' ? 'bytea' : 'mediumblob'
      await raw.schema
        .createTable(name)
        .addColumn('id', id, idCol as never)
        .addColumn('home_address', sql.raw(binary))
        .execute()
      const { db, wire } = app(schema)
      const missing = await mismatch(() => db.insertInto(name).values({ homeAddress: SECRET }).execute())
      expect(kinds(missing.problems)).toEqual([`column-missing ${name} homeAddress`])
      // Not "add column homeAddress": with CamelCasePlugin first, writes would then go to home_address unencrypted.
      expect(missing.problems[0]?.fix).toMatch(/rename the schema's key homeAddress to home_address/)
      // A table that followed the old advice holds both: refused.
      await raw.schema.alterTable(name).addColumn('homeAddress', sql.raw(binary)).execute()
      const both = await mismatch(() => app(schema).encryption.verifySchema(raw))
      expect(kinds(both.problems)).toEqual([`column-spelling ${name} homeAddress,home_address`])
      expect(wire.hits()).toEqual([])
    })

    it.runIf(family === 'mysql')(
      'a varbinary column narrower than the ciphertext of maxBytes, or without maxBytes, is refused before a value is cut short',
      async () => {
        n++
        const narrow = table('narrow')
        const narrowSchema = encryptedSchema({ [narrow]: { note: encrypted.text({ maxBytes: 64 }) } })
        await raw.schema
          .createTable(narrow)
          .addColumn('id', id, idCol as never)
          .addColumn('note', sql.raw('varbinary(40)'))
          .execute()
        const { db, wire } = app(narrowSchema)
        const e = await mismatch(() => db.insertInto(narrow).values({ note: SECRET }).execute())
        expect(kinds(e.problems)).toEqual([`column-too-narrow ${narrow} note`])
        expect(e.problems[0]?.message).toContain('needs 100 under every key version (96 up to version 127')
        expect(e.problems[0]?.fix).toMatch(/varbinary\(100\)/)
        // No maxBytes: nothing bounds what is sent to a varbinary(n).
        const unbounded = encryptedSchema({ [narrow]: { note: encrypted.text() } })
        const none = await mismatch(() => app(unbounded).encryption.verifySchema(raw))
        expect(kinds(none.problems)).toEqual([`column-too-narrow ${narrow} note`])
        // Wide enough: accepted; and a mediumblob without maxBytes is fine (its limit is 16 MiB).
        await sql`alter table ${sql.table(narrow)} modify note varbinary(100)`.execute(raw)
        await app(narrowSchema).encryption.verifySchema(raw)
        await sql`alter table ${sql.table(narrow)} modify note mediumblob`.execute(raw)
        await app(unbounded).encryption.verifySchema(raw)
        // A codec of a fixed size needs no maxBytes: a number's ciphertext is 40 bytes, 44 under
        // every key version (a column of 40 refused or cut every ciphertext from version 128 on).
        const fixed = encryptedSchema({ [narrow]: { note: encrypted.number() } })
        await sql`alter table ${sql.table(narrow)} modify note varbinary(40)`.execute(raw)
        const forty = await mismatch(() => app(fixed).encryption.verifySchema(raw))
        expect(forty.problems[0]?.message).toContain('needs 44')
        await sql`alter table ${sql.table(narrow)} modify note varbinary(44)`.execute(raw)
        await app(fixed).encryption.verifySchema(raw)
        expect(wire.hits()).toEqual([])
      },
    )

    it.runIf(family === 'mysql')(
      'binary(n) columns (zero-padded), blind-index columns narrower than the index, and tinyblob/blob without maxBytes are refused; their fixes make the database match',
      async () => {
        n++
        const name = table('widths')
        const schema = encryptedSchema({
          [name]: {
            t: encrypted.text({ maxBytes: 20, index: { name: 't_bidx', bits: 16 } }),
            u: encrypted.text({ maxBytes: 20, index: { name: 'u_bidx' } }),
            small: encrypted.text(),
            mid: encrypted.text(),
          },
        })
        await raw.schema
          .createTable(name)
          .addColumn('id', id, idCol as never)
          .addColumn('t', sql`binary(64)`)
          .addColumn('t_bidx', sql`binary(32)`)
          .addColumn('u', sql`varbinary(60)`)
          .addColumn('u_bidx', sql`varbinary(16)`)
          .addColumn('small', sql`tinyblob`)
          .addColumn('mid', sql`blob`)
          .execute()
        await sql`create unique index ${sql.id(`${name}_u`)} on ${sql.table(name)} (u_bidx)`.execute(raw)
        const { encryption, db, wire } = app(schema)
        const e = await mismatch(() => db.insertInto(name).values({ t: SECRET, u: SECRET }).execute())
        expect(kinds(e.problems)).toEqual([
          `column-not-binary ${name} t`,
          `column-too-narrow ${name} mid`,
          `column-too-narrow ${name} small`,
          `column-too-narrow ${name} u_bidx`,
          `index-column-not-binary ${name} t_bidx`,
        ])
        for (const p of e.problems) await sql.raw(p.fix).execute(raw)
        await expect(encryption.verifySchema(db)).resolves.toBeUndefined()
        // binary(32) for a unique index (exactly its 32 bytes) pads nothing: accepted.
        await sql`alter table ${sql.table(name)} modify u_bidx binary(32)`.execute(raw)
        await app(schema).encryption.verifySchema(raw)
        expect(wire.hits()).toEqual([])
      },
    )

    it('lists every problem (missing columns, text columns, no unique index), each with DDL that fixes it', async () => {
      n++
      const name = table('people')
      const schema = encryptedSchema({
        [name]: {
          email: encrypted.text({ index: { name: 'email_bidx' } }),
          ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
          dob: encrypted.date(),
          notes: encrypted.json(),
        },
      })
      const text = family === 'postgres' ? 'text' : 'varchar(200)'
      // email: text, its index missing; ssn fine with its (search) index; dob missing; notes: no
      // unique index needed. And email_bidx's UNIQUE index is missing with the column itself.
      await raw.schema
        .createTable(name)
        .addColumn('id', id, idCol as never)
        .addColumn('email', sql.raw(text))
        .addColumn('ssn', family === 'postgres' ? 'bytea' : sql`mediumblob`)
        .addColumn('ssn_bidx', family === 'postgres' ? 'bytea' : sql`varbinary(2)`)
        .addColumn('notes', family === 'postgres' ? 'bytea' : sql`mediumblob`)
        .execute()
      const { encryption, db } = app(schema)
      const e = await mismatch(() => encryption.verifySchema(db))
      expect(kinds(e.problems)).toEqual([
        `column-missing ${name} dob`,
        `column-not-binary ${name} email`,
        `index-column-missing ${name} email_bidx`,
      ])
      expect(e.problems.find((p) => p.kind === 'column-not-binary')?.found).toBe(
        family === 'postgres' ? 'text' : 'varchar',
      )
      expect(e.message).toContain('3 problems')
      // Each fix, run as it is, makes the database match.
      for (const p of e.problems) for (const ddl of p.fix.split('; ')) await sql.raw(ddl).execute(raw)
      await expect(encryption.verifySchema(db)).resolves.toBeUndefined()
    })

    it("a text column wider than the schema's maxBytes: the fix's binary type keeps every byte it holds", async () => {
      n++
      const name = table('bios')
      // maxBytes: 100, but the column holds up to 2,000 characters (8,000 bytes in utf8mb4) and
      // one value is longer than the varbinary a maxBytes of 100 gives.
      const schema = encryptedSchema({ [name]: { bio: encrypted.text({ maxBytes: 100 }) } })
      await raw.schema
        .createTable(name)
        .addColumn('id', id, idCol as never)
        .addColumn('bio', family === 'postgres' ? 'text' : 'varchar(2000)')
        .execute()
      const long = 'é'.repeat(700)
      await raw.insertInto(name).values({ bio: long }).execute()
      const { encryption, db } = app(schema)
      const e = await mismatch(() => encryption.verifySchema(db))
      expect(kinds(e.problems)).toEqual([`column-not-binary ${name} bio`])
      await sql.raw(e.problems[0]!.fix).execute(raw)
      const kept = await raw.selectFrom(name).select('bio').executeTakeFirstOrThrow()
      expect(Buffer.from(kept.bio as Uint8Array).equals(Buffer.from(long, 'utf8'))).toBe(true)
      if (family === 'mysql') expect(e.problems[0]!.fix).toMatch(/varbinary\(8000\)/i)
    })

    it('a unique blind index without its UNIQUE index is reported; then fixed by its DDL', async () => {
      n++
      const name = table('accounts')
      const schema = usersSchema(name)
      await createColumns(schema, name)
      const { encryption, db } = app(schema)
      const e = await mismatch(() => encryption.verifySchema(db))
      expect(kinds(e.problems)).toEqual([`unique-index-missing ${name} email_bidx`])
      await sql.raw(e.problems[0]!.fix).execute(raw)
      await encryption.verifySchema(db)
    })

    it("a misspelt annotated column beside the binary column meant: the fix says to rename the schema's key, not to add the misspelt column", async () => {
      n++
      const name = table('spelt')
      await createGood(usersSchema(name), name)
      const misspelt = encryptedSchema({
        [name]: {
          emial: encrypted.text({ index: { name: 'email_bidx' } }),
          ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
        },
      })
      const e = await mismatch(() => app(misspelt).encryption.verifySchema(raw))
      expect(kinds(e.problems)).toEqual([`column-missing ${name} emial`])
      expect(e.problems[0]?.fix).toMatch(/^if email is the column meant, rename the schema's key emial to it/)
    })

    it('an annotation removed from a column that holds ciphertext is reported (its values would be written unencrypted)', async () => {
      n++
      const name = table('deannotated')
      const full = usersSchema(name)
      await createGood(full, name)
      const writer = app(full)
      await writer.encryption.init(writer.db)
      await writer.db.insertInto(name).values({ email: SECRET, ssn: '123-45-6789' }).execute()
      const without = encryptedSchema({
        [name]: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
      })
      // One value that looks like ciphertext is not enough: a column of hashes passes the header
      // check about once in 32 values.
      await app(without).encryption.verifySchema(raw)
      await writer.db.insertInto(name).values({ email: 'b@x.io', ssn: '987-65-4321' }).execute()
      const e = await mismatch(() => app(without).encryption.verifySchema(raw))
      expect(kinds(e.problems)).toEqual([`unannotated-ciphertext ${name} ssn`])
      // ssn_bidx holds index bytes, not ciphertext: not named.
      expect(e.problems[0]?.message).not.toContain('ssn_bidx')
      // unannotatedTables: false skips the sampling of what the schema does not annotate.
      await app(without, { unannotatedTables: false }).encryption.verifySchema(raw)
    })

    it('an encrypted column created as text is caught before the first insert (no raw database error)', async () => {
      n++
      const name = table('notes')
      const schema = encryptedSchema({ [name]: { body: encrypted.text() } })
      await raw.schema
        .createTable(name)
        .addColumn('id', id, idCol as never)
        .addColumn('body', family === 'postgres' ? 'text' : 'varchar(200)')
        .execute()
      const { db } = app(schema)
      const e = await mismatch(() => db.insertInto(name).values({ body: SECRET }).execute())
      expect(kinds(e.problems)).toEqual([`column-not-binary ${name} body`])
      const rows = await raw.selectFrom(name).select(sql<number>`count(*)`.as('n')).execute()
      expect(Number(rows[0]?.n)).toBe(0)
    })

    it('a table outside the schema holding its ciphertext is reported', async () => {
      n++
      const name = table('users')
      const copy = table('copy')
      const schema = usersSchema(name)
      await createGood(schema, name)
      const first = app(schema)
      await first.encryption.init(first.db)
      await first.db.insertInto(name).values({ email: 'a@x.io', ssn: '1' }).execute()
      await raw.schema
        .createTable(copy)
        .addColumn('k', family === 'postgres' ? 'bytea' : sql`mediumblob`)
        .execute()
      await sql`insert into ${sql.table(copy)} (k) select email from ${sql.table(name)}`.execute(raw)
      const second = app(schema)
      const e = await mismatch(() => second.encryption.verifySchema(second.db))
      expect(kinds(e.problems)).toEqual([`unannotated-ciphertext ${copy} k`])
      expect(e.problems[0]?.fix).toMatch(/^-- no DDL/)
      // Leaving it out (another application's table) passes.
      const third = app(schema, { unannotatedTables: (t) => t.startsWith(`${prefix}_${n}_`) && t !== copy })
      await third.encryption.verifySchema(third.db)
    })

    it('runs once per dialect: concurrent first queries share one check, later ones none', async () => {
      n++
      const name = table('users')
      const schema = usersSchema(name)
      await createGood(schema, name)
      const { db, encryption, wire } = app(schema)
      await encryption.init(db)
      // init (the key table's writes) and DDL do not wait for the check.
      expect(wire.queries.filter(isCatalogQuery)).toEqual([])
      await Promise.all(
        [1, 2, 3, 4].map((i) =>
          db
            .insertInto(name)
            .values({ email: `u${i}@x.io` })
            .execute(),
        ),
      )
      const once = wire.queries.filter(isCatalogQuery).length
      expect(once).toBe(2)
      await db
        .transaction()
        .execute((trx) => trx.selectFrom(name).selectAll().where('email', '=', 'u1@x.io').execute())
      await db.selectFrom(name).selectAll().execute()
      expect(wire.queries.filter(isCatalogQuery).length).toBe(once)
      expect(wire.hits()).toEqual([])
    })

    it('a failed check is retried by the next query (nothing sent meanwhile), and passes once fixed', async () => {
      n++
      const name = table('users')
      const schema = usersSchema(name)
      await createColumns(schema, name)
      const { db, encryption, wire } = app(schema)
      await encryption.init(db)
      await mismatch(() => db.insertInto(name).values({ email: 'a@x.io' }).execute())
      await mismatch(() => db.insertInto(name).values({ email: 'a@x.io' }).execute())
      expect(wire.queries.filter((q) => /^insert into/i.test(q.sql) && q.sql.includes(name))).toEqual([])
      await createBlindIndexes(raw, schema, name)
      await db.insertInto(name).values({ email: 'a@x.io' }).execute()
      const rows = await db.selectFrom(name).select('email').execute()
      expect(rows).toEqual([{ email: 'a@x.io' }])
    })

    it('a transaction whose first query needs the check runs it on its own connection', async () => {
      n++
      const name = table('users')
      const schema = usersSchema(name)
      await createGood(schema, name)
      const { db, encryption } = app(schema)
      await encryption.init(db)
      await db.transaction().execute(async (trx) => {
        await trx.insertInto(name).values({ email: 'b@x.io' }).execute()
      })
      expect(await db.selectFrom(name).select('email').execute()).toEqual([{ email: 'b@x.io' }])
    })

    it('verifySchema: false skips the check (no catalog query): the misspelling goes unnoticed', async () => {
      n++
      const schema = usersSchema(table('user'))
      await createGood(schema, table('user'), table('users'))
      const { db, wire } = app(schema, false)
      await db
        .insertInto(table('users'))
        .values({ email: Buffer.from('not secret') })
        .execute()
      expect(wire.queries.filter(isCatalogQuery)).toEqual([])
    })
  })
})
