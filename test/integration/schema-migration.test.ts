/** Migration helpers (issue 13): notNull per encrypted column; createBlindIndexes idempotent on every engine. */
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  applyMigrationStep,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  type MigrationPhase,
} from '../../src/index.js'
import { mysqlColumnDefinition } from '../../src/schema/mysql-column-definition.js'
import { verifySchema } from '../../src/schema/verify-schema.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'

describe.each(backends())('migration helpers on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('mig')
    const schema = encryptedSchema({
      [table]: {
        email: encrypted.text({ index: { name: 'email_bidx' } }),
        ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
      },
    })
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    let db: Kysely<any>
    beforeAll(async () => {
      db = new Kysely({ dialect: backend.createDialect() })
      await db.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .$call(addEncryptedColumns(schema, table, backend.family, { notNull: ['email'] }))
        .execute()
    })
    afterAll(async () => {
      await sql`drop table if exists ${sql.table(table)}`.execute(db)
      await db.destroy()
    })

    it('notNull: the encrypted column and its index column are NOT NULL; the others stay nullable', async () => {
      await expect(
        db
          .insertInto(table)
          .values({ id: 1, email_bidx: Buffer.alloc(32) })
          .execute(),
      ).rejects.toBeDefined()
      await expect(
        db
          .insertInto(table)
          .values({ id: 2, email: Buffer.alloc(40) })
          .execute(),
      ).rejects.toBeDefined()
      await db
        .insertInto(table)
        .values({ id: 3, email: Buffer.alloc(40), email_bidx: Buffer.alloc(32) })
        .execute()
      expect((await db.selectFrom(table).select('id').execute()).map((r) => r.id)).toEqual([3])
    })

    it('notNull naming a column that is not encrypted is CONFIG_INVALID', () => {
      expect(() => addEncryptedColumns(schema, table, backend.family, { notNull: ['nope'] })).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID' }),
      )
    })

    it('createBlindIndexes runs twice without error (MySQL looks the index up first), unique stays unique', async () => {
      await createBlindIndexes(db, schema, table)
      await createBlindIndexes(db, schema, table)
      await expect(
        db
          .insertInto(table)
          .values({ id: 4, email: Buffer.alloc(40), email_bidx: Buffer.alloc(32) })
          .execute(),
      ).rejects.toBeDefined()
    })

    it('createBlindIndexes over rows that repeat a unique index value: UNIQUE_VIOLATION naming the column, the value blanked in the driver error', async () => {
      const dup = uniqueName('mig_dup')
      const dupSchema = encryptedSchema({
        [dup]: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
      })
      await db.schema
        .createTable(dup)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .$call(addEncryptedColumns(dupSchema, dup, backend.family))
        .execute()
      try {
        // Written around the plugin while the column had no UNIQUE index: the same index value twice.
        const bidx = Buffer.from('d1b8360a'.repeat(8), 'hex')
        await db
          .insertInto(dup)
          .values([
            { id: 1, email: Buffer.alloc(40, 1), email_bidx: bidx },
            { id: 2, email: Buffer.alloc(40, 2), email_bidx: bidx },
          ])
          .execute()
        const error = await createBlindIndexes(db, dupSchema, dup).catch((e: unknown) => e)
        expect(error).toMatchObject({
          code: 'UNIQUE_VIOLATION',
          table: dup,
          column: 'email',
          index: 'email_bidx',
        })
        expect((error as Error).message).toContain('group by email_bidx having count(*) > 1')
        // No run of the index value's hex, in any form, anywhere in the error or its cause.
        const cause = (error as { cause?: Record<string, unknown> }).cause ?? {}
        const text = [
          (error as Error).message,
          (error as Error).stack,
          ...['message', 'detail', 'sql', 'sqlMessage', 'stack'].map((k) => String(cause[k] ?? '')),
        ].join('\n')
        expect(text.toLowerCase()).not.toContain('d1b836')
        expect(text).not.toMatch(/\\x[0-9a-f]{8}|\\xD1|\\xB8/i)
      } finally {
        await sql`drop table if exists ${sql.table(dup)}`.execute(db)
      }
    })

    it('createBlindIndexes gives each unique index its own name when the names pass 63 bytes and share their first 63', async () => {
      const long = uniqueName('ccd_archive').padEnd(40, 'x')
      const longSchema = encryptedSchema({
        [long]: {
          email: encrypted.text({ index: { name: 'primary_contact_address_bidx' } }),
          phone: encrypted.text({ index: { name: 'primary_contact_address_bidx2' } }),
        },
      })
      await db.schema
        .createTable(long)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .$call(addEncryptedColumns(longSchema, long, backend.family))
        .execute()
      try {
        await createBlindIndexes(db, longSchema, long)
        await createBlindIndexes(db, longSchema, long) // idempotent under the new names too
        const a = Buffer.alloc(32, 1)
        const b = Buffer.alloc(32, 2)
        await db
          .insertInto(long)
          .values({ id: 1, primary_contact_address_bidx: a, primary_contact_address_bidx2: b })
          .execute()
        // Both UNIQUE indexes are there: PostgreSQL truncated both names to one and skipped the second.
        await expect(
          db
            .insertInto(long)
            .values({
              id: 2,
              primary_contact_address_bidx: Buffer.alloc(32, 3),
              primary_contact_address_bidx2: b,
            })
            .execute(),
        ).rejects.toBeDefined()
        await expect(
          db
            .insertInto(long)
            .values({
              id: 3,
              primary_contact_address_bidx: a,
              primary_contact_address_bidx2: Buffer.alloc(32, 4),
            })
            .execute(),
        ).rejects.toBeDefined()
      } finally {
        await sql`drop table if exists ${sql.table(long)}`.execute(db)
      }
    })

    it('createBlindIndexes on an index named with a space: the UNIQUE index is on that column, the schema check finds it, and its fix is the same statement', async () => {
      const spaced = uniqueName('mig_space')
      const spacedSchema = encryptedSchema({
        [spaced]: { email: encrypted.text({ index: { name: 'email bidx' }, maxBytes: 320 }) },
      })
      await db.schema
        .createTable(spaced)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .$call(addEncryptedColumns(spacedSchema, spaced, backend.family))
        .execute()
      try {
        // Before: the one problem is the missing UNIQUE index, and its fix names the column whole.
        const problems = await verifySchema(db, spacedSchema, { unannotatedTables: false }).then(
          () => [],
          (error: { problems?: { kind: string; fix?: string }[] }) => error.problems ?? [],
        )
        expect(problems.map((p) => p.kind)).toEqual(['unique-index-missing'])
        const q = backend.family === 'mysql' ? '`' : '"'
        expect(problems[0]?.fix).toContain(`(${q}email bidx${q})`)
        // Kysely's column() read "email bidx" as the column email in the order "bidx", and failed.
        await createBlindIndexes(db, spacedSchema, spaced)
        await expect(verifySchema(db, spacedSchema, { unannotatedTables: false })).resolves.toBeDefined()
        const index = Buffer.alloc(32, 7)
        await db.insertInto(spaced).values({ id: 1, 'email bidx': index }).execute()
        await expect(
          db.insertInto(spaced).values({ id: 2, 'email bidx': index }).execute(),
        ).rejects.toBeDefined()
      } finally {
        await sql`drop table if exists ${sql.table(spaced)}`.execute(db)
      }
    })

    // MySQL/MariaDB restate the column to make it nullable (MODIFY COLUMN): it must keep its
    // collation (a case-sensitive one under a UNIQUE index holding 'A@x.io' and 'a@x.io'), its
    // character set and its comment, not take the table's. (A default other than NULL is refused
    // by add and cutover: migration-plaintext-default.test.ts.)
    it.runIf(backend.family === 'mysql')(
      'cutover on MySQL/MariaDB keeps the plaintext column collation, character set and comment',
      async () => {
        const plain = uniqueName('mig_cut')
        const plainSchema = (phase: MigrationPhase) =>
          encryptedSchema({
            [plain]: { email: encrypted.text({ storedAs: 'email_encrypted', migration: phase }) },
          })
        await sql`create table ${sql.table(plain)} (id integer primary key,
          email varchar(200) collate utf8mb4_bin not null comment 'none' unique)
          default charset=latin1`.execute(db)
        try {
          await sql`insert into ${sql.table(plain)} (id, email) values (1, 'A@x.io'), (2, 'a@x.io')`.execute(
            db,
          )
          await applyMigrationStep(db, plainSchema('added'), plain, 'email', 'add')
          await applyMigrationStep(db, plainSchema('backfilled'), plain, 'email', 'cutover')
          const { rows } = await sql<{
            nullable: string
            collation: string
            charset: string
            note: string
          }>`select is_nullable as nullable, collation_name as collation, character_set_name as charset,
              column_comment as note from information_schema.columns
            where table_schema = database() and table_name = ${plain} and column_name = 'email'`.execute(db)
          expect(rows[0]).toMatchObject({
            nullable: 'YES',
            collation: 'utf8mb4_bin',
            charset: 'utf8mb4',
            note: 'none',
          })
        } finally {
          await sql`drop table if exists ${sql.table(plain)}`.execute(db)
        }
      },
    )

    /**
     * Under ANSI_QUOTES, SHOW CREATE TABLE quotes names with `"`: the column's definition was not
     * found, and cutover restated the bare type instead (the table's default character set, its
     * default lost), which MariaDB refused (ALGORITHM=INPLACE cannot change the column type).
     */
    it.runIf(backend.family === 'mysql')(
      'cutover on MySQL/MariaDB finds the column definition in a session with ANSI_QUOTES, and states it with backticks',
      async () => {
        const plain = uniqueName('mig_ansi')
        const plainSchema = (phase: MigrationPhase) =>
          encryptedSchema({
            [plain]: { email: encrypted.text({ storedAs: 'email_encrypted', migration: phase }) },
          })
        await db.connection().execute(async (conn) => {
          await sql`set session sql_mode = concat(@@session.sql_mode, ',ANSI_QUOTES')`.execute(conn)
          try {
            await sql`create table ${sql.table(plain)} (id integer primary key,
              email varchar(200) collate utf8mb4_bin not null comment 'no"ne' check (char_length(email) > 3))
              default charset=latin1`.execute(conn)
            // Every name on the line, the CHECK's too (helper-92: "email" there, read by a session
            // without ANSI_QUOTES, is a string, and the check compares a constant).
            const definition = await mysqlColumnDefinition(conn, plain, 'email')
            expect(definition).toMatch(/^`email` varchar\(200\) /)
            expect(definition).toMatch(/char_length\(`email`\)/)
            expect(definition).not.toMatch(/"email"/)
            await applyMigrationStep(conn, plainSchema('added'), plain, 'email', 'add')
            await applyMigrationStep(conn, plainSchema('backfilled'), plain, 'email', 'cutover')
            const { rows } = await sql<{ nullable: string; collation: string; note: string }>`
              select is_nullable as nullable, collation_name as collation, column_comment as note
              from information_schema.columns
              where table_schema = database() and table_name = ${plain} and column_name = 'email'`.execute(
              conn,
            )
            expect(rows[0]).toMatchObject({ nullable: 'YES', collation: 'utf8mb4_bin', note: 'no"ne' })
            // The CHECK still reads the column, in a session without ANSI_QUOTES too.
            await sql`set session sql_mode = replace(@@session.sql_mode, 'ANSI_QUOTES', '')`.execute(conn)
            await expect(
              sql`insert into ${sql.table(plain)} (id, email) values (1, 'ab')`.execute(conn),
            ).rejects.toThrow(/constraint/i)
          } finally {
            await sql`drop table if exists ${sql.table(plain)}`.execute(conn)
            await sql`set session sql_mode = replace(@@session.sql_mode, 'ANSI_QUOTES', '')`.execute(conn)
          }
        })
      },
    )

    it.runIf(backend.family === 'mysql')(
      'createBlindIndexes through db.withSchema makes the index in that schema, also when the default database has one of that name',
      async () => {
        const other = `kfe_s_${process.pid}_${Math.random().toString(36).slice(2, 7)}`
        const name = uniqueName('mig_ws')
        const wsSchema = encryptedSchema({
          [name]: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
        })
        await sql`create database ${sql.id(other)}`.execute(db)
        try {
          for (const target of [db, db.withSchema(other)])
            await target.schema
              .createTable(name)
              .addColumn('id', 'integer', (c) => c.primaryKey())
              .$call(addEncryptedColumns(wsSchema, name, 'mysql'))
              .execute()
          await createBlindIndexes(db, wsSchema, name)
          await createBlindIndexes(db.withSchema(other), wsSchema, name)
          await createBlindIndexes(db.withSchema(other), wsSchema, name) // twice: no error
          const { rows } = await sql<{
            n: number | string
          }>`select count(*) as n from information_schema.statistics
            where table_schema = ${other} and table_name = ${name} and column_name = 'email_bidx' and non_unique = 0`.execute(
            db,
          )
          expect(Number(rows[0]?.n)).toBe(1)
        } finally {
          await sql`drop database if exists ${sql.id(other)}`.execute(db)
          await sql`drop table if exists ${sql.table(name)}`.execute(db)
        }
      },
    )
  })
})
