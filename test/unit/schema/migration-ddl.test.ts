import { describe, expect, it } from 'vitest'
import {
  ConfigError,
  encrypted,
  encryptedSchema,
  MIGRATION_PHASES,
  migrationDdl,
  migrationFileSource,
  OperationError,
  phasesMayOverlap,
} from '../../../src/index.js'

const schema = (index: { name: string; bits?: number } = { name: 'email_bidx' }) =>
  encryptedSchema({
    users: {
      email: encrypted.text({ index, storedAs: 'email_encrypted', migration: 'added', maxBytes: 200 }),
      ssn: encrypted.text(),
    },
  })

describe('migration annotations', () => {
  it('a column under migration needs storedAs; an unknown phase is refused', () => {
    expect(() => encrypted.text({ migration: 'added' })).toThrow(/storedAs/)
    expect(() => encrypted.text({ storedAs: 'e', migration: 'sideways' as never })).toThrow(
      /migration must be one of/,
    )
  })

  it('maps the annotated name to the stored column; a stored name that collides is refused', () => {
    const column = schema().table('users')!.column('email')!
    expect({
      physical: column.physical,
      stored: column.stored,
      logical: column.logical,
      migration: column.migration,
    }).toEqual({
      physical: 'email',
      stored: 'email_encrypted',
      logical: 'email',
      migration: 'added',
    })
    expect(schema().table('users')!.column('ssn')!.stored).toBe('ssn')
    expect(() =>
      encryptedSchema({ t: { a: encrypted.text({ storedAs: 'b' }), b: encrypted.text() } }),
    ).toThrow(/stored as b/)
    expect(() =>
      encryptedSchema({ t: { a: encrypted.text({ storedAs: 'a_bidx', index: { name: 'a_bidx' } }) } }),
    ).toThrow(/declared twice/)
  })

  it('a column under migration is refused where the migration tooling does not reach yet: rotation slots', () => {
    const migrating = { storedAs: 'a_enc', migration: 'added' } as const
    // A row context, with or without per-tenant keys, is supported.
    const scoped = encryptedSchema(
      { t: { a: encrypted.text(migrating) } },
      { tables: { t: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' } } },
    ).table('t')
    expect([scoped?.context, scoped?.keyScope?.column]).toEqual([['tenant_id', 'id'], 'tenant_id'])
    expect(() =>
      encryptedSchema({
        t: { a: encrypted.text({ ...migrating, index: { name: 'a_bidx', rotationSlot: 'a_next' } }) },
      }),
    ).toThrow(/rotationSlot/)
    // A context column cannot be a column's ciphertext column either.
    expect(() =>
      encryptedSchema(
        { t: { a: encrypted.text({ storedAs: 'a_enc' }) } },
        { tables: { t: { context: ['a_enc'] } } },
      ),
    ).toThrow(/context columns are plaintext/)
    // Without storedAs/migration both stay allowed.
    expect(() =>
      encryptedSchema(
        { t: { a: encrypted.text({ index: { name: 'a_bidx', rotationSlot: 'a_next' } }) } },
        { tables: { t: { context: ['tenant_id'] } } },
      ),
    ).not.toThrow()
  })

  it('neighbouring phases may overlap, others may not', () => {
    expect(MIGRATION_PHASES).toEqual(['added', 'dual-writing', 'backfilled', 'cut-over', 'dropped'])
    expect(phasesMayOverlap('added', 'dual-writing')).toBe(true)
    expect(phasesMayOverlap('backfilled', 'cut-over')).toBe(true)
    expect(phasesMayOverlap('dual-writing', 'cut-over')).toBe(false)
    expect(phasesMayOverlap('added', 'dropped')).toBe(false)
  })
})

describe('migrationDdl', () => {
  it('add on PostgreSQL: nullable columns, then a unique index built concurrently (outside a transaction)', () => {
    const ddl = migrationDdl(schema(), 'users', 'email', 'add', 'postgres')
    expect(ddl.up).toEqual([
      'alter table "users" add column if not exists "email_encrypted" bytea, add column if not exists "email_bidx" bytea',
      'create unique index concurrently if not exists "users_email_bidx_idx" on "users" ("email_bidx")',
    ])
    expect(ddl.down).toEqual([
      'drop index concurrently if exists "users_email_bidx_idx"',
      'alter table "users" drop column if exists "email_bidx", drop column if exists "email_encrypted"',
    ])
    expect(ddl.outsideTransaction).toBe(true)
  })

  it('add on MySQL/MariaDB: online DDL, VARBINARY sized from maxBytes; a search index is not unique and is noted', () => {
    const ddl = migrationDdl(schema({ name: 'email_bidx', bits: 16 }), 'users', 'email', 'add', 'mysql')
    expect(ddl.up).toEqual([
      'alter table `users` add column `email_encrypted` varbinary(236), add column `email_bidx` varbinary(2), algorithm=inplace, lock=none',
      'create index `users_email_bidx_idx` on `users` (`email_bidx`) algorithm=inplace lock=none',
    ])
    expect(ddl.outsideTransaction).toBe(false)
    expect(ddl.notes.join()).toMatch(/unique constraint on the plaintext column is lost/)
  })

  it('cutover and drop: the plaintext column made nullable, then dropped; MySQL restates its type', () => {
    expect(migrationDdl(schema(), 'users', 'email', 'cutover', 'postgres').up).toEqual([
      'alter table "users" alter column "email" drop not null',
    ])
    expect(() => migrationDdl(schema(), 'users', 'email', 'cutover', 'mysql')).toThrow(/plaintextType/)
    expect(
      migrationDdl(schema(), 'users', 'email', 'cutover', 'mysql', { plaintextType: 'varchar(200)' }).up,
    ).toEqual(['alter table `users` modify column `email` varchar(200) null, algorithm=inplace, lock=none'])
    // With the definition SHOW CREATE TABLE gives: its character set, collation, default and
    // comment kept, NOT NULL made NULL (a quoted 'NOT NULL' in the default or comment untouched).
    const definition =
      "`email` varchar(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT 'NOT NULL' COMMENT 'x NOT NULL'"
    expect(
      migrationDdl(schema(), 'users', 'email', 'cutover', 'mysql', {
        plaintextType: 'varchar(200)',
        plaintextDefinition: definition,
      }).up,
    ).toEqual([
      "alter table `users` modify column `email` varchar(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL DEFAULT 'NOT NULL' COMMENT 'x NOT NULL', algorithm=inplace, lock=none",
    ])
    // An ENUM's quoted values come before NOT NULL; the type check of plaintextType (quotes) does
    // not apply when the definition is restated.
    expect(
      migrationDdl(schema(), 'users', 'email', 'cutover', 'mysql', {
        plaintextType: "enum('a','b')",
        plaintextDefinition: "`email` enum('a','it''s NOT NULL') NOT NULL DEFAULT 'a'",
      }).up,
    ).toEqual([
      "alter table `users` modify column `email` enum('a','it''s NOT NULL') NULL DEFAULT 'a', algorithm=inplace, lock=none",
    ])
    expect(() =>
      migrationDdl(schema(), 'users', 'email', 'cutover', 'mysql', {
        plaintextDefinition: '`tags` varchar(10) NOT NULL',
      }),
    ).toThrow(/not the definition of column email/)
    // `is not null` inside an expression is not the attribute (MariaDB's inline CHECK, MySQL 8's
    // generated column, whose NOT NULL follows the expression).
    const modify = (plaintextDefinition: string) =>
      migrationDdl(schema(), 'users', 'email', 'cutover', 'mysql', { plaintextDefinition }).up[0]
    expect(modify('`email` varchar(50) DEFAULT NULL CHECK (`email` is not null or 1 = 1)')).toBe(
      'alter table `users` modify column `email` varchar(50) DEFAULT NULL CHECK (`email` is not null or 1 = 1), algorithm=inplace, lock=none',
    )
    expect(
      modify('`email` varchar(50) GENERATED ALWAYS AS (if(`a` is not null,`a`,`b`)) VIRTUAL NOT NULL'),
    ).toBe(
      'alter table `users` modify column `email` varchar(50) GENERATED ALWAYS AS (if(`a` is not null,`a`,`b`)) VIRTUAL NULL, algorithm=inplace, lock=none',
    )
    const drop = migrationDdl(schema(), 'users', 'email', 'drop', 'postgres', { plaintextType: 'text' })
    expect(drop.up).toEqual(['alter table "users" drop column "email"'])
    expect(drop.down).toEqual(['alter table "users" add column "email" text null'])
    expect(() =>
      migrationDdl(schema(), 'users', 'email', 'drop', 'postgres', { plaintextType: 'text; drop table x' }),
    ).toThrow(/not a plain SQL type/)
  })

  it('refuses a column that is not under migration, and names that are not plain identifiers', () => {
    expect(() => migrationDdl(schema(), 'users', 'ssn', 'add', 'postgres')).toThrow(/not under migration/)
    const odd = encryptedSchema({
      'us"ers': { email: encrypted.text({ storedAs: 'e', migration: 'added' }) },
    })
    expect(() => migrationDdl(odd, 'us"ers', 'email', 'add', 'postgres')).toThrow(/plain SQL identifier/)
  })

  it('add and cutover refuse a plaintext column with a default (MIGRATION_REFUSED, naming it and the DDL that removes it); drop does not', () => {
    for (const [step, family] of [
      ['add', 'postgres'],
      ['cutover', 'postgres'],
      ['add', 'mysql'],
      ['cutover', 'mysql'],
    ] as const) {
      let error: unknown
      try {
        migrationDdl(schema(), 'users', 'email', step, family, {
          plaintextType: 'varchar(200)',
          plaintextDefault: "default 'none'",
        })
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(OperationError)
      expect(error).toMatchObject({ code: 'MIGRATION_REFUSED', table: 'users', column: 'email' })
      const q = family === 'postgres' ? '"' : '`'
      expect((error as Error).message).toContain("has `default 'none'`")
      expect((error as Error).message).toContain(
        `alter table ${q}users${q} alter column ${q}email${q} drop default`,
      )
    }
    expect(
      migrationDdl(schema(), 'users', 'email', 'drop', 'postgres', {
        plaintextType: 'text',
        plaintextDefault: "default 'none'::text",
      }).up,
    ).toEqual(['alter table "users" drop column "email"'])
  })

  // The check of migratingColumn, which encryptColumn, verifyColumn, migration and
  // applyMigrationStep all start with, for a schema that did not come from encryptedSchema.
  it('refuses a column whose stored column is its own plaintext column, in a schema built by hand', () => {
    const real = schema()
    const users = real.table('users')!
    const email = users.column('email')!
    for (const stored of ['email', 'EMAIL']) {
      const forged = {
        ...real,
        tableNamed: () => ({ ...users, column: () => ({ ...email, stored }) }),
      } as unknown as typeof real
      let error: unknown
      try {
        migrationDdl(forged, 'users', 'email', 'add', 'postgres')
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(ConfigError)
      expect(error).toMatchObject({ code: 'CONFIG_INVALID', table: 'users', column: 'email' })
      expect((error as Error).message).toContain('its own plaintext column')
    }
  })

  it('the migration file exports up and down running the frozen statements', () => {
    const source = migrationFileSource(migrationDdl(schema(), 'users', 'email', 'add', 'postgres'))
    expect(source).toContain('export async function up(db: Kysely<any>): Promise<void> {')
    expect(source).toContain(
      'await sql.raw("create unique index concurrently if not exists \\"users_email_bidx_idx\\" on \\"users\\" (\\"email_bidx\\")").execute(db)',
    )
    expect(source).toContain('disableTransactions: true')
    // Run in a transaction, it says what to do before PostgreSQL refuses CONCURRENTLY.
    expect(source).toMatch(
      /export async function up\(db: Kysely<any>\): Promise<void> \{\n {2}if \(db\.isTransaction\)\n {4}throw new Error\(/,
    )
  })
})
