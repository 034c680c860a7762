import { type Dialect, type Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { createPool } from 'mysql2'
import pg from 'pg'
import Cursor from 'pg-cursor'
import { inject } from 'vitest'
import { newPGlite } from './pglite.js'

export type BackendName = 'postgres' | 'pglite' | 'mysql'

/** One database engine the shared suites run over. */
export interface Backend {
  readonly name: BackendName
  /** False when the engine is not reachable here (never in CI); the suite is then reported NOT RUN. */
  readonly available: boolean
  /** `postgres` for PostgreSQL and PGlite, `mysql` for MySQL/MariaDB. */
  readonly family: 'postgres' | 'mysql'
  /** A new dialect on a new pool (or a new in-memory PGlite). Call `db.destroy()` to release it. */
  createDialect(): Dialect
  /** Two dialects on the SAME database (for PGlite: one in-memory instance), e.g. app + raw view. */
  createDialectPair(): [Dialect, Dialect]
}

/** Every backend, in a stable order. Use with `describe.each(backends())` + `describe.runIf(b.available)`. */
export function backends(): Backend[] {
  const pgUrl = inject('pgUrl')
  const mysqlUrl = inject('mysqlUrl')
  return [
    {
      name: 'postgres',
      family: 'postgres',
      available: pgUrl !== null,
      createDialect: () =>
        new PostgresDialect({ pool: new pg.Pool({ connectionString: pgUrl ?? '', max: 5 }), cursor: Cursor }),
      createDialectPair() {
        return [this.createDialect(), this.createDialect()]
      },
    },
    {
      name: 'pglite',
      family: 'postgres',
      available: true,
      createDialect: () => new PGliteDialect(newPGlite()),
      createDialectPair() {
        const instance = newPGlite()
        return [new PGliteDialect(instance), new PGliteDialect(instance)]
      },
    },
    {
      name: 'mysql',
      family: 'mysql',
      available: mysqlUrl !== null,
      createDialect: () =>
        new MysqlDialect({
          pool: createPool({ uri: mysqlUrl ?? '', connectionLimit: 5, supportBigNumbers: true }),
        }),
      createDialectPair() {
        return [this.createDialect(), this.createDialect()]
      },
    },
  ]
}

/**
 * MySQL/MariaDB through mysql2's defaults (no `supportBigNumbers`: a BIGINT past 2^53 comes back
 * as a rounded number), as an application's pool may be; undefined when MySQL is not reachable.
 */
export function defaultMysqlDialect(): Dialect | undefined {
  const mysqlUrl = inject('mysqlUrl')
  return mysqlUrl === null
    ? undefined
    : new MysqlDialect({ pool: createPool({ uri: mysqlUrl, connectionLimit: 5 }) })
}

let counter = 0
/** A table name no other test file uses at the same time (files run in parallel on one database). */
export function uniqueName(prefix: string): string {
  counter += 1
  return `${prefix}_${process.pid}_${counter}_${Math.random().toString(36).slice(2, 7)}`
}

/** Drops `tables` (those that exist) through `db`, in order. */
// biome-ignore lint/suspicious/noExplicitAny: any fixture's database.
export async function dropTables(db: Kysely<any>, tables: readonly string[]): Promise<void> {
  for (const t of tables) await sql`drop table if exists ${sql.table(t)}`.execute(db)
}

/**
 * `verifySchema` options for a fixture in the shared test database: the check of tables the
 * schema does not annotate looks at `tables` only, since other files' tables (with the same
 * blind-index column names and ciphertexts) are not this schema's.
 */
export function onlyTables(...tables: string[]): { unannotatedTables: (table: string) => boolean } {
  const own = new Set(tables)
  return { unannotatedTables: (table) => own.has(table) }
}
