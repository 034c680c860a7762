import { type Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type FieldEncryptionError, type MigrationPhase, QueryRefusedError } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type MigrationDb, migrationDb } from '../support/migration-db.js'

/**
 * A CTE named like the table whose `email` is under migration: the statement's FROM then names
 * the CTE, not the table, yet the migration pass rewrote it as the table (`email = $1` into the
 * phase's search, or into `email_encrypted = $1`), and the analyzer, which sees the CTE, left the
 * value in plaintext. The database got the search value, then rejected the statement (or, with a
 * column list naming `email`, ran it). Refused before anything is sent, in every phase the
 * plugin rewrites (in `added` the column is plaintext by design).
 */
const ROWS = 20

// biome-ignore lint/suspicious/noExplicitAny: the table changes shape through the phases.
type AppDb = Kysely<any>

/** Each shape: a search value of `email` in a statement whose one relation is a CTE named like the table. */
const SHAPES: ReadonlyArray<
  [string, (db: AppDb, table: string, probe: string) => { execute(): Promise<unknown> }]
> = [
  [
    'selectFrom(cte) where email = v',
    (db, table, probe) =>
      db
        .with(table, (qb) => qb.selectNoFrom(sql<number>`1`.as('id')))
        .selectFrom(table)
        .select('id')
        .where('email', '=', probe),
  ],
  [
    'selectFrom(cte as u) where u.email = v',
    (db, table, probe) =>
      db
        .with(table, (qb) => qb.selectNoFrom(sql<number>`1`.as('id')))
        .selectFrom(`${table} as u`)
        .select('u.id')
        .where('u.email', 'in', [probe, 'other@x.io']),
  ],
  [
    'a CTE with a column list naming email',
    (db, table, probe) =>
      db
        .with(`${table}(id, email)`, (qb) =>
          qb.selectNoFrom([sql<number>`1`.as('id'), sql<string>`'x'`.as('email')]),
        )
        .selectFrom(table)
        .select('id')
        .where('email', '=', probe),
  ],
  [
    'WITH RECURSIVE',
    (db, table, probe) =>
      db
        .withRecursive(table, (qb) => qb.selectNoFrom(sql<number>`1`.as('id')))
        .selectFrom(table)
        .select('id')
        .where('email', '=', probe),
  ],
  [
    'a CTE named like the table but for case (MySQL matches CTE names so)',
    (db, table, probe) =>
      db
        .with(table.toUpperCase(), (qb) => qb.selectNoFrom(sql<number>`1`.as('id')))
        .selectFrom(table)
        .select('id')
        .where('email', '=', probe),
  ],
  [
    'updateTable(table) with a CTE of its name',
    (db, table, probe) =>
      db
        .with(table, (qb) => qb.selectNoFrom(sql<number>`1`.as('id')))
        .updateTable(table)
        .set({ email: probe })
        .where('id', '=', 1),
  ],
  [
    'insertInto(table) with a CTE of its name',
    (db, table, probe) =>
      db
        .with(table, (qb) => qb.selectNoFrom(sql<number>`1`.as('id')))
        .insertInto(table)
        .values({ name: 'cte', email: probe }),
  ],
  [
    'deleteFrom(table) with a CTE of its name',
    (db, table, probe) =>
      db
        .with(table, (qb) => qb.selectNoFrom(sql<number>`1`.as('id')))
        .deleteFrom(table)
        .where('email', '=', probe),
  ],
]

describe.each(backends())(
  'a CTE named like a table under migration [$name]',
  { timeout: 300_000 },
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      let t: MigrationDb
      beforeAll(async () => {
        t = await migrationDb(backend, ROWS)
        await t.migrate('add', 'added')
        await t.ops('added').init()
      })
      afterAll(async () => {
        await t?.destroy()
      })

      /** Every shape is refused in `phase` (AMBIGUOUS_COLUMN), and nothing of it reaches the database. */
      const expectRefused = async (phase: MigrationPhase) => {
        const db = t.app(phase)
        // The startup check runs before the first query; the shapes below must add nothing.
        await db.selectFrom(t.table).select('id').where('id', '=', 1).execute()
        for (const [name, build] of SHAPES) {
          const probe = `cte-${phase}-${SHAPES.findIndex(([n]) => n === name)}@x.io`
          t.secrets.push(probe)
          const before = t.scanner.count()
          const error = await build(db, t.table, probe)
            .execute()
            .then(
              () => undefined,
              (e: unknown) => e,
            )
          expect({ name, sent: t.scanner.queries.slice(before).map((q) => q.sql) }).toEqual({
            name,
            sent: [],
          })
          expect(t.scanner.hits()).toEqual([])
          expect(error, name).toBeInstanceOf(QueryRefusedError)
          const e = error as FieldEncryptionError & { hint?: string }
          expect({ name, code: e.code, table: e.table }).toEqual({
            name,
            code: 'AMBIGUOUS_COLUMN',
            table: t.table,
          })
          expect(`${e.message} ${e.hint ?? ''}`).not.toContain(probe)
        }
      }

      it('dual-writing', async () => {
        await expectRefused('dual-writing')
      })

      it('backfilled', async () => {
        const job = await t.ops('dual-writing').encryptColumn(t.table, 'email')
        expect(job).toMatchObject({ failed: 0, remainingBatches: 0 })
        await expectRefused('backfilled')
      })

      it('cut-over', async () => {
        await t.migrate('cutover', 'cut-over')
        await expectRefused('cut-over')
      })

      it('dropped', async () => {
        await t.migrate('drop', 'dropped')
        await expectRefused('dropped')
      })

      it('a CTE of another name, and a query of the table itself, still run', async () => {
        const db = t.app('dropped')
        const rows = await db
          .with('c', (qb) => qb.selectNoFrom(sql<number>`1`.as('id')))
          .selectFrom(t.table)
          .select(['id', 'email'])
          .where('email', '=', 'user1@x.io')
          .where('id', '=', 2)
          .execute()
        expect(rows).toEqual([{ id: 2, email: 'user1@x.io' }])
      })
    })
  },
)
