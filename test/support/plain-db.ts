import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll } from 'vitest'
import type { Backend } from './backends.js'
import type { TestDB } from './encrypted-db.js'

/**
 * A Kysely without plugins on `backend` for one describe block: opened before its tests, and
 * closed after them with every table `track` was given dropped.
 */
export function usePlainDb(backend: Backend): { db: () => Kysely<TestDB>; track: (table: string) => string } {
  let db: Kysely<TestDB> | undefined
  const tables: string[] = []
  beforeAll(() => {
    db = new Kysely<TestDB>({ dialect: backend.createDialect() })
  })
  afterAll(async () => {
    for (const t of tables) await sql`drop table if exists ${sql.table(t)}`.execute(db!)
    await db?.destroy()
  })
  return {
    db: () => db!,
    track: (table) => {
      tables.push(table)
      return table
    },
  }
}
