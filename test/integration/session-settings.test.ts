import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addEncryptedColumns, encrypted, encryptedSchema, SchemaMismatchError } from '../../src/index.js'
import { sessionProblems, sessionQuery, sessionSettings } from '../../src/schema/session-settings.js'
import { findSchemaProblems } from '../../src/schema/verify-schema.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { useOpsTestDb } from '../support/ops-db.js'

/**
 * Session settings under which values are stored, compared or read as others (helper-91), each
 * refused by the schema check (and, for the jobs, before they read a row): MySQL a connection
 * character set other than utf8mb4 (a tenant 'Zürich' stored as other text, or never matched by
 * the plugin's byte-exact guard: its searches return nothing), `sql_select_limit` (a job saw 3 of
 * 5 rows and reported itself done), `EMPTY_STRING_IS_NULL`, `HIGH_NOT_PRECEDENCE`; PostgreSQL a
 * `client_encoding` other than UTF8, a `bytea_output` other than hex (PGlite read ciphertexts
 * and plaintext under migration as other bytes), and for the jobs a `DateStyle` other than ISO.
 * Also a MySQL context column in latin1, which the plugin's guard compares in UTF-8.
 */
const cases: Record<'postgres' | 'mysql', Array<{ set: string; kind: string; found: RegExp }>> = {
  mysql: [
    { set: 'set names latin1', kind: 'session-setting', found: /character_set_client=latin1/ },
    { set: 'set session sql_select_limit = 3', kind: 'session-setting', found: /sql_select_limit=3/ },
    {
      set: "set session sql_mode = concat(@@session.sql_mode, ',EMPTY_STRING_IS_NULL')",
      kind: 'sql-mode',
      found: /EMPTY_STRING_IS_NULL/,
    },
    {
      set: "set session sql_mode = concat(@@session.sql_mode, ',HIGH_NOT_PRECEDENCE')",
      kind: 'sql-mode',
      found: /HIGH_NOT_PRECEDENCE/,
    },
  ],
  postgres: [
    { set: "set client_encoding = 'LATIN1'", kind: 'session-setting', found: /client_encoding=LATIN1/ },
  ],
}
/** PGlite reads a bytea as hex only (node-postgres reads the escape output too: not refused there). */
const pgliteCases = [
  { set: "set bytea_output = 'escape'", kind: 'session-setting', found: /bytea_output=escape/ },
]
const reset: Record<'postgres' | 'mysql', string[]> = {
  mysql: ['set names utf8mb4', 'set session sql_select_limit = default', 'set session sql_mode = default'],
  postgres: ['reset client_encoding', 'reset bytea_output', 'reset datestyle'],
}

describe.each(backends())('session settings [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('session')
    const schema = encryptedSchema(
      { [table]: { ssn: encrypted.text({ maxBytes: 16 }) } },
      { tables: { [table]: { context: ['tenant_id'] } } },
    )
    // biome-ignore lint/suspicious/noExplicitAny: generated table name
    let db: Kysely<any>
    beforeAll(async () => {
      db = new Kysely({ dialect: backend.createDialect() })
      await db.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(20)', (c) => c.notNull())
        .$call(addEncryptedColumns(schema, table, backend.family))
        .execute()
    }, 120_000)
    afterAll(async () => {
      await sql`drop table if exists ${sql.table(table)}`.execute(db)
      await db?.destroy()
    })

    const cases_ = backend.name === 'pglite' ? pgliteCases : cases[backend.family]
    it.each(cases_)(
      '$set is refused by the schema check, and its fix passes',
      async ({ set, kind, found }) => {
        await db.connection().execute(async (conn) => {
          try {
            await sql.raw(set).execute(conn)
            const report = await findSchemaProblems(conn, schema, onlyTables(table))
            expect(report.problems.map((p) => p.kind)).toEqual([kind])
            expect(report.problems[0]?.found).toMatch(found)
            await sql.raw(report.problems[0]?.fix.split(' --')[0] ?? '').execute(conn)
            expect((await findSchemaProblems(conn, schema, onlyTables(table))).problems).toEqual([])
          } finally {
            for (const r of reset[backend.family]) await sql.raw(r).execute(conn)
          }
        })
      },
    )

    it.runIf(backend.name === 'postgres')(
      "not refused: bytea_output 'escape' (node-postgres reads it), client_encoding UNICODE (UTF8's alias)",
      async () => {
        await db.connection().execute(async (conn) => {
          try {
            await sql`set bytea_output = 'escape'`.execute(conn)
            await sql`set client_encoding = 'UNICODE'`.execute(conn)
            expect((await findSchemaProblems(conn, schema, onlyTables(table))).problems).toEqual([])
          } finally {
            for (const r of reset.postgres) await sql.raw(r).execute(conn)
          }
        })
      },
    )

    it.runIf(backend.family === 'mysql')(
      'a context column in latin1 is refused (the guard compares UTF-8 bytes)',
      async () => {
        await sql`alter table ${sql.table(table)} modify tenant_id varchar(20) character set latin1 not null`.execute(
          db,
        )
        try {
          const report = await findSchemaProblems(db, schema, onlyTables(table))
          expect(report.problems.map((p) => [p.kind, p.columns, p.found])).toEqual([
            ['context-column-type', ['tenant_id'], 'varchar character set latin1'],
          ])
        } finally {
          await sql`alter table ${sql.table(table)} modify tenant_id varchar(20) character set utf8mb4 not null`.execute(
            db,
          )
        }
        expect((await findSchemaProblems(db, schema, onlyTables(table))).problems).toEqual([])
      },
    )
  })
})

/** The jobs read the settings of their own session before they read a row. */
describe.each(backends().filter((b) => b.family === 'mysql'))(
  'a job in a wrong session [$name]',
  (backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOpsTestDb(backend, { rows: 5 })
      const set = 'set session sql_select_limit = 3'
      it(`${set}: the job is refused before it reads a row, and runs once it is reset`, async () => {
        await t.raw.connection().execute(async (conn) => {
          const ops = t.moreOps({ db: conn as unknown as Kysely<TestDB> })
          await sql.raw(set).execute(conn)
          try {
            const e = (await ops.reencrypt(t.table).catch((error: unknown) => error)) as SchemaMismatchError
            expect(e).toBeInstanceOf(SchemaMismatchError)
            expect(e.problems.map((p) => p.kind)).toEqual(['session-setting'])
          } finally {
            for (const r of reset[backend.family]) await sql.raw(r).execute(conn)
          }
          await expect(
            t.moreOps({ db: conn as unknown as Kysely<TestDB> }).reencrypt(t.table),
          ).resolves.toMatchObject({
            failed: 0,
          })
        })
      })
    })
  },
)

/**
 * DateStyle matters to a job paging by a date or timestamp key only (its batch bounds are text):
 * one paging by an integer key runs under any (helper-93: it was refused under every non-ISO one).
 */
describe.each(backends().filter((b) => b.name === 'postgres'))(
  'DateStyle and the jobs [$name]',
  (backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOpsTestDb(backend, { rows: 3 })
      it("an integer key: a job runs under 'SQL, DMY'; a date or timestamp key would be refused", async () => {
        await t.raw.connection().execute(async (conn) => {
          try {
            await sql`set datestyle = 'SQL, DMY'`.execute(conn)
            await expect(
              t.moreOps({ db: conn as unknown as Kysely<TestDB> }).reencrypt(t.table),
            ).resolves.toMatchObject({
              failed: 0,
            })
            const { rows } = await sessionQuery('postgres').execute(conn)
            const settings = sessionSettings('postgres', rows[0])
            expect(sessionProblems(settings, false)).toEqual([])
            expect(sessionProblems(settings, true).map((p) => [p.kind, p.found])).toEqual([
              ['session-setting', 'DateStyle=SQL, DMY'],
            ])
          } finally {
            await sql`reset datestyle`.execute(conn)
          }
        })
      })
    })
  },
)
