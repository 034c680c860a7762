import type { Kysely } from 'kysely'
import type { TestDB } from './encrypted-db.js'

/** Each row's email as the application reads it (plaintext), by id. */
export async function emailsById(app: Kysely<TestDB>, table: string): Promise<Map<number, string>> {
  const rows = await app.selectFrom(table).select(['id', 'email']).execute()
  return new Map(rows.map((r) => [Number(r.id), String(r.email)]))
}

/** A running {@link startAppWriter}. */
export interface AppWriter {
  /** Stops after the write in flight; resolves to the number of writes made. */
  stop(): Promise<number>
  /**
   * Resolves once the writer has made `n` writes (at once if it has): a job that awaits it
   * between its transactions runs alongside the writer however the machine schedules them.
   */
  waitForWrites(n: number): Promise<void>
}

/**
 * An application writer at a steady rate, through the application's Kysely (the plugin): an insert,
 * an update of the email, a delete, in turn, `pauseMs` apart. `model` starts as
 * {@link emailsById} and holds the writer's last write of every row, to compare with the table
 * after a job ran alongside. It never updates or deletes the ids in `avoid`.
 */
export function startAppWriter(
  app: Kysely<TestDB>,
  table: string,
  model: Map<number, string>,
  { pauseMs, prefix, avoid }: { pauseMs: number; prefix: string; avoid?: ReadonlySet<number> },
): AppWriter {
  let running = true
  let writes = 0
  const waiting: Array<{ n: number; resolve: () => void }> = []
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const ids = [...model.keys()].filter((id) => avoid?.has(id) !== true)
      if (i % 3 === 0) {
        const email = `${prefix}-new${i}@x.io`
        await app
          .insertInto(table)
          .values({ name: `${prefix}${i}`, email, ssn: '9' })
          .execute()
        const row = await app
          .selectFrom(table)
          .select('id')
          .where('email', '=', email)
          .executeTakeFirstOrThrow()
        model.set(Number(row.id), email)
      } else if (i % 3 === 1) {
        const id = ids[(i * 7919) % ids.length]!
        const email = `${prefix}-upd${i}@x.io`
        await app.updateTable(table).set({ email }).where('id', '=', id).execute()
        model.set(id, email)
      } else {
        const id = ids[(i * 104729) % ids.length]!
        await app.deleteFrom(table).where('id', '=', id).execute()
        model.delete(id)
      }
      writes++
      for (let w = waiting.length - 1; w >= 0; w--) {
        if (waiting[w]!.n <= writes) waiting.splice(w, 1)[0]!.resolve()
      }
      await new Promise((r) => setTimeout(r, pauseMs))
    }
  })()
  return {
    async stop() {
      running = false
      await loop
      return writes
    },
    waitForWrites(n) {
      if (writes >= n) return Promise.resolve()
      // A writer that stopped (or failed) never gets there: reject instead of hanging the test.
      return Promise.race([
        new Promise<void>((resolve) => waiting.push({ n, resolve })),
        loop.then(() => {
          throw new Error(`the application writer stopped after ${writes} of ${n} writes`)
        }),
      ])
    },
  }
}
