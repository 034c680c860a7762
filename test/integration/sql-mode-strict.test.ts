import { randomBytes } from 'node:crypto'
import { Kysely, MysqlDialect, sql } from 'kysely'
import { createPool } from 'mysql2'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import {
  addEncryptedColumns,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  KeyStore,
  localKeyProvider,
  SchemaMismatchError,
} from '../../src/index.js'
import { findSchemaProblems } from '../../src/schema/verify-schema.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { useOpsTestDb } from '../support/ops-db.js'

/**
 * MySQL and MariaDB without a strict sql_mode store a value a column cannot hold as another one,
 * with a warning only: a context integer clamped, a context string cut short or with `?` for a
 * character its charset lacks, a ciphertext cut short, NULL as empty bytes; every such row then
 * fails to decrypt (helper-87). The startup schema check refuses such a session
 * (`sql-mode`), so nothing is written through it.
 */
const mysqlUrl = inject('mysqlUrl')

describe.runIf(mysqlUrl !== null)('a MySQL session without a strict sql_mode', () => {
  const table = uniqueName('sql_mode')
  const keyTable = `${table}_keys`
  /** A table `name` (id, tenant_id as its row context, ssn encrypted), and its schema. */
  const contextTable = async (name: string) => {
    const its = encryptedSchema(
      { [name]: { ssn: encrypted.text({ maxBytes: 16 }) } },
      { tables: { [name]: { context: ['tenant_id'] } } },
    )
    await raw.schema
      .createTable(name)
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .addColumn('tenant_id', 'varchar(8)', (c) => c.notNull())
      .$call(addEncryptedColumns(its, name, 'mysql'))
      .execute()
    return its
  }
  // biome-ignore lint/suspicious/noExplicitAny: generated table name
  let raw: Kysely<any>
  // biome-ignore lint/suspicious/noExplicitAny: generated table name
  let schema: EncryptedSchema<any>
  beforeAll(async () => {
    raw = new Kysely({
      dialect: new MysqlDialect({ pool: createPool({ uri: mysqlUrl ?? '', connectionLimit: 1 }) }),
    })
    schema = await contextTable(table)
  }, 120_000)
  afterAll(async () => {
    await sql`drop table if exists ${sql.table(table)}`.execute(raw)
    await sql`drop table if exists ${sql.table(keyTable)}`.execute(raw)
    await raw?.destroy()
  })

  it('is refused at the first write (SCHEMA_MISMATCH, sql-mode), with nothing sent; a strict one is not', async () => {
    const encryption = fieldEncryption({
      schema,
      keyProvider: localKeyProvider({ id: 'local:sql-mode', key: randomBytes(32) }),
      keyTable,
      // Other files' tables in the same database are not this test's to check.
      verifySchema: onlyTables(table),
    })
    // One connection, so a SET SESSION holds for every statement after it.
    const pool = createPool({ uri: mysqlUrl ?? '', connectionLimit: 1 })
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    const db = new Kysely<any>({
      dialect: encryption.wrap(new MysqlDialect({ pool })),
      plugins: [encryption.plugin],
    })
    try {
      await sql`set session sql_mode = ''`.execute(db.withoutPlugins())
      const insert = db.insertInto(table).values({ id: 1, tenant_id: 'acme', ssn: 'S-1' }).execute()
      const e = (await insert.catch((error: unknown) => error)) as SchemaMismatchError
      expect(e).toBeInstanceOf(SchemaMismatchError)
      expect(e.problems.map((p) => p.kind)).toEqual(['sql-mode'])
      expect(e.problems[0]?.found).toBe("''")
      expect(await raw.selectFrom(table).select('id').execute()).toEqual([])
      // The fix the problem names, on the same (only) connection: the write goes through.
      await sql.raw(e.problems[0]?.fix.split(' --')[0] ?? '').execute(db.withoutPlugins())
      await encryption.init(db)
      await db.insertInto(table).values({ id: 1, tenant_id: 'acme', ssn: 'S-1' }).execute()
      expect(await db.selectFrom(table).select(['id', 'ssn']).execute()).toEqual([{ id: 1, ssn: 'S-1' }])
      // PAD_CHAR_TO_FULL_LENGTH (strict or not) pads a char(n) value read back: refused too, by a
      // check the next wrapped dialect runs (this one's passed and is kept).
      await sql`set session sql_mode = 'STRICT_TRANS_TABLES,PAD_CHAR_TO_FULL_LENGTH'`.execute(
        db.withoutPlugins(),
      )
      const report = await findSchemaProblems(db.withoutPlugins(), schema, onlyTables(table))
      expect(report.problems.map((p) => [p.kind, p.found])).toEqual([
        ['sql-mode', 'STRICT_TRANS_TABLES,PAD_CHAR_TO_FULL_LENGTH'],
      ])
      // Both wrong at once: one fix for both (helper-88), applied, and the check passes.
      await sql`set session sql_mode = 'PAD_CHAR_TO_FULL_LENGTH'`.execute(db.withoutPlugins())
      const both = await findSchemaProblems(db.withoutPlugins(), schema, onlyTables(table))
      expect(both.problems[0]?.message).toMatch(/not strict.*PAD_CHAR_TO_FULL_LENGTH/)
      await sql.raw(both.problems[0]?.fix.split(' --')[0] ?? '').execute(db.withoutPlugins())
      expect((await findSchemaProblems(db.withoutPlugins(), schema, onlyTables(table))).problems).toEqual([])
    } finally {
      await encryption.close()
      await db.destroy()
    }
  })

  /**
   * NO_BACKSLASH_ESCAPES, strict or not: mysql2 (under Kysely's MySQL dialect) writes a string
   * value into the statement's text with backslash escapes, which this mode keeps as they stand.
   * The key table's JSON wrappings were stored with a backslash before every quote, and `init`
   * then read its own rows as KEY_STORE_CORRUPT; a context value with a quote would be stored as
   * other text (its rows never decrypt). Refused by the key store before it writes, and by the
   * schema check.
   */
  it('NO_BACKSLASH_ESCAPES is refused by the key store before it writes anything, and by the schema check', async () => {
    // As the server reports it (its own order).
    const mode = 'NO_BACKSLASH_ESCAPES,STRICT_TRANS_TABLES'
    // Its own table and key table: the test above left a row under other keys.
    const nbeTable = `${table}_nbe`
    const nbeSchema = await contextTable(nbeTable)
    const encryption = fieldEncryption({
      schema: nbeSchema,
      keyProvider: localKeyProvider({ id: 'local:sql-mode-nbe', key: randomBytes(32) }),
      keyTable: `${keyTable}_nbe`,
      verifySchema: onlyTables(nbeTable),
    })
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    const db = new Kysely<any>({
      dialect: encryption.wrap(
        new MysqlDialect({ pool: createPool({ uri: mysqlUrl ?? '', connectionLimit: 1 }) }),
      ),
      plugins: [encryption.plugin],
    })
    const plain = db.withoutPlugins()
    const keyTableExists = async () =>
      (
        await sql<{ n: number }>`select count(*) as n from information_schema.tables
          where table_schema = database() and table_name = ${`${keyTable}_nbe`}`.execute(plain)
      ).rows[0]?.n
    try {
      await sql.raw(`set session sql_mode = '${mode}'`).execute(plain)
      // The key store, used directly: nothing created.
      const store = new KeyStore(plain, { tableName: `${keyTable}_nbe` })
      const e = (await store.ensureSchema().catch((error: unknown) => error)) as SchemaMismatchError
      expect(e).toBeInstanceOf(SchemaMismatchError)
      expect(e.problems.map((p) => [p.kind, p.found])).toEqual([['sql-mode', mode]])
      expect(e.problems[0]?.message).toMatch(/NO_BACKSLASH_ESCAPES.*quote/)
      // init (through the key store too): refused, no key table, no key row.
      await expect(encryption.init(db)).rejects.toBeInstanceOf(SchemaMismatchError)
      expect(Number(await keyTableExists())).toBe(0)
      // The schema check names it, with a fix that removes it and keeps the rest.
      const report = await findSchemaProblems(plain, nbeSchema, onlyTables(nbeTable))
      expect(report.problems.map((p) => p.kind)).toEqual(['sql-mode'])
      await sql.raw(report.problems[0]?.fix.split(' --')[0] ?? '').execute(plain)
      const { rows } = await sql<{ m: string }>`select @@session.sql_mode as m`.execute(plain)
      expect(rows[0]?.m.split(',')).toContain('STRICT_TRANS_TABLES')
      expect(rows[0]?.m).not.toMatch(/NO_BACKSLASH_ESCAPES/)
      // Fixed: init writes keys that read back sound, and a row with a quote in its context round-trips.
      await encryption.init(db)
      expect((await store.listAll()).length).toBe(2)
      await db.insertInto(nbeTable).values({ id: 2, tenant_id: `O'"\\x`, ssn: 'S-2' }).execute()
      expect(await db.selectFrom(nbeTable).select(['tenant_id', 'ssn']).execute()).toEqual([
        { tenant_id: `O'"\\x`, ssn: 'S-2' },
      ])
    } finally {
      await encryption.close()
      await sql`drop table if exists ${sql.table(`${keyTable}_nbe`)}`.execute(raw)
      await sql`drop table if exists ${sql.table(nbeTable)}`.execute(raw)
      await db.destroy()
    }
  })

  /**
   * The key store reads the mode of the connection each write runs on (helper-92: it read one
   * connection once, and a later write on another connection of the pool, holding
   * NO_BACKSLASH_ESCAPES, stored wrappings that every read then refused as KEY_STORE_CORRUPT).
   */
  it('the key store checks the connection each write runs on, not one connection of the pool once', async () => {
    const name = `${keyTable}_pool`
    const pool = createPool({ uri: mysqlUrl ?? '', connectionLimit: 2 })
    // The pool's first connection keeps the server's mode; its second holds NO_BACKSLASH_ESCAPES.
    let made = 0
    pool.on('connection', (c) => {
      if (++made === 2) c.query("set session sql_mode = concat(@@session.sql_mode, ',NO_BACKSLASH_ESCAPES')")
    })
    // biome-ignore lint/suspicious/noExplicitAny: the key table's own types
    const db = new Kysely<any>({ dialect: new MysqlDialect({ pool }) })
    const store = new KeyStore(db, { tableName: name })
    try {
      await store.ensureSchema()
      await db.connection().execute(async () => {
        // The first connection is held here: the store's write gets the second.
        const e = await store
          .createInitial('t', 'data', [{ kekId: 'local:x', wrapped: Buffer.alloc(40, 1) }])
          .catch((error: unknown) => error)
        expect(e).toBeInstanceOf(SchemaMismatchError)
      })
      expect(await store.listAll()).toEqual([])
    } finally {
      await sql`drop table if exists ${sql.table(name)}`.execute(raw)
      await db.destroy()
    }
  })

  /**
   * A non-transactional engine under STRICT_TRANS_TABLES alone: a multi-row write cannot undo its
   * first rows, so MySQL stores a later row's value its column cannot hold as another one, with a
   * warning (helper-92: NULL as empty bytes in a MyISAM table). Refused by the schema check.
   */
  it('a table with encrypted columns on MyISAM is refused under STRICT_TRANS_TABLES alone, not under STRICT_ALL_TABLES', async () => {
    const myisam = `${table}_myisam`
    const myisamSchema = encryptedSchema({ [myisam]: { ssn: encrypted.text({ maxBytes: 16 }) } })
    await raw.schema
      .createTable(myisam)
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .$call(addEncryptedColumns(myisamSchema, myisam, 'mysql'))
      .modifyEnd(sql`engine = MyISAM`)
      .execute()
    try {
      await raw.connection().execute(async (conn) => {
        await sql`set session sql_mode = 'STRICT_TRANS_TABLES'`.execute(conn)
        const report = await findSchemaProblems(conn, myisamSchema, onlyTables(myisam))
        expect(report.problems.map((p) => [p.kind, p.table, p.found])).toEqual([
          ['sql-mode', myisam, 'myisam under STRICT_TRANS_TABLES'],
        ])
        expect(report.problems[0]?.fix).toMatch(/ENGINE=InnoDB.*STRICT_ALL_TABLES/)
        await sql`set session sql_mode = 'STRICT_TRANS_TABLES,STRICT_ALL_TABLES'`.execute(conn)
        expect((await findSchemaProblems(conn, myisamSchema, onlyTables(myisam))).problems).toEqual([])
        await sql`set session sql_mode = 'STRICT_TRANS_TABLES'`.execute(conn)
        await sql`alter table ${sql.table(myisam)} engine = InnoDB`.execute(conn)
        expect((await findSchemaProblems(conn, myisamSchema, onlyTables(myisam))).problems).toEqual([])
        await sql`set session sql_mode = default`.execute(conn)
      })
    } finally {
      await sql`drop table if exists ${sql.table(myisam)}`.execute(raw)
    }
  })
})

/**
 * The jobs check the session too: a re-encryption rewrites every row, and under a non-strict
 * sql_mode (a ciphertext wider than its column cut short) would leave them unreadable
 * (helper-88: the jobs ran no schema check).
 */
describe.each(backends().filter((b) => b.family === 'mysql'))(
  'a job on a MySQL session without a strict sql_mode [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOpsTestDb(backend, { rows: 2 })

      it('is refused before it reads or writes a row (SCHEMA_MISMATCH, sql-mode)', async () => {
        const db = new Kysely<TestDB>({
          dialect: new MysqlDialect({ pool: createPool({ uri: mysqlUrl ?? '', connectionLimit: 1 }) }),
        })
        const ops = t.moreOps({ db })
        try {
          await sql`set session sql_mode = ''`.execute(db)
          const e = (await ops.reencrypt(t.table).catch((error: unknown) => error)) as SchemaMismatchError
          expect(e).toBeInstanceOf(SchemaMismatchError)
          expect(e.problems.map((p) => p.kind)).toEqual(['sql-mode'])
          await sql.raw(e.problems[0]?.fix.split(' --')[0] ?? '').execute(db)
          await expect(ops.reencrypt(t.table)).resolves.toMatchObject({ failed: 0 })
          // The table on MyISAM, the session strict for transactional tables only: refused too.
          await sql`alter table ${sql.table(t.table)} engine = MyISAM`.execute(db)
          await sql`set session sql_mode = 'STRICT_TRANS_TABLES'`.execute(db)
          // (A new ops: one reads a table's paging column, and checks, once.)
          const fresh = t.moreOps({ db })
          const m = (await fresh.reencrypt(t.table).catch((error: unknown) => error)) as SchemaMismatchError
          expect(m).toBeInstanceOf(SchemaMismatchError)
          expect(m.problems.map((p) => [p.kind, p.table])).toEqual([['sql-mode', t.table]])
          await sql`set session sql_mode = 'STRICT_ALL_TABLES'`.execute(db)
          await expect(fresh.reencrypt(t.table)).resolves.toMatchObject({ failed: 0 })
        } finally {
          await db.destroy()
        }
      })
    })
  },
)
