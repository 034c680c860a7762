import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkMigrationState, encrypted, encryptedSchema, type MigrationPhase } from '../../src/index.js'
import type { JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import { type MigrationDb, migrationDb } from '../support/migration-db.js'
import { migrationSchema } from '../support/migration-schema.js'

/**
 * Issue 15: a plaintext column with a unique constraint moved to an encrypted one through every
 * phase while an application writes. The application is deployed once per phase with the plugin
 * over the schema of that phase (`migration: …`): it always writes, reads and searches `email`,
 * and the plugin decides which columns that means. The ops, the DDL and the startup check are the
 * real ones. 2,000 rows by default; KFE_MIGRATION_ROWS=50000 for the size.
 */
const ROWS = Number(process.env.KFE_MIGRATION_ROWS ?? 2000)

/** The plaintext copy of the data: id → email, applied with every write the application makes. */
type Model = Map<number, string>

/** From cut-over on, no plaintext of the column may be sent: each email used is a secret. */
const secret = (t: MigrationDb, phase: MigrationPhase, email: string) => {
  if (phase === 'cut-over' || phase === 'dropped') t.secrets.push(email)
}

/** One application write in `phase`: insert, update, delete or upsert, applied to the model too. */
async function write(
  t: MigrationDb,
  model: Model,
  phase: MigrationPhase,
  i: number,
  tag: string,
): Promise<void> {
  const ids = [...model.keys()]
  const email = `${tag}${i}@x.io`
  const db = t.app(phase)
  secret(t, phase, email)
  switch (i % 4) {
    case 0: {
      const insert = db.insertInto(t.table).values({ name: `w${i}`, email })
      const id =
        t.backend.family === 'mysql'
          ? Number((await insert.executeTakeFirstOrThrow()).insertId)
          : Number((await insert.returning('id').executeTakeFirstOrThrow()).id)
      model.set(id, email)
      break
    }
    case 1: {
      const id = ids[(i * 7919) % ids.length]!
      await db.updateTable(t.table).set({ email }).where('id', '=', id).execute()
      model.set(id, email)
      break
    }
    case 2: {
      const id = ids[(i * 104729) % ids.length]!
      await db.deleteFrom(t.table).where('id', '=', id).execute()
      model.delete(id)
      break
    }
    default: {
      // Upsert of an existing row by its unique email: changes its name only.
      const id = ids[(i * 31) % ids.length]!
      const existing = model.get(id)!
      secret(t, phase, existing)
      const insert = db.insertInto(t.table).values({ name: `u${i}`, email: existing })
      await (t.backend.family === 'mysql'
        ? insert.onDuplicateKeyUpdate({ name: `u${i}` })
        : insert.onConflict((oc) => oc.column('email').doUpdateSet({ name: `u${i}` }))
      ).execute()
    }
  }
}

/** The ids a search by `email` returns, through the application of `phase`. */
async function search(t: MigrationDb, phase: MigrationPhase, email: string): Promise<number[]> {
  secret(t, phase, email)
  const rows = await t.app(phase).selectFrom(t.table).select('id').where('email', '=', email).execute()
  return rows.map((r) => Number(r.id)).sort((a, b) => a - b)
}

/** Every search the model can answer (a sample of present values, plus absent ones) agrees with it. */
async function expectSearchesMatch(t: MigrationDb, model: Model, phase: MigrationPhase): Promise<void> {
  const entries = [...model.entries()]
  const probes = [
    ...Array.from({ length: 40 }, (_, k) => entries[(k * 997) % entries.length]![1]),
    'user0@x.io',
    `user${ROWS - 1}@x.io`,
    'nobody@x.io',
  ]
  for (const email of probes) {
    const expected = entries
      .filter(([, e]) => e === email)
      .map(([id]) => id)
      .sort((a, b) => a - b)
    expect({ email, ids: await search(t, phase, email) }).toEqual({ email, ids: expected })
  }
  // `in` over several values, and `is not null`, as the plaintext copy answers them.
  const some = probes.slice(0, 5)
  for (const e of some) secret(t, phase, e)
  const many = await t.app(phase).selectFrom(t.table).select('id').where('email', 'in', some).execute()
  expect(many.map((r) => Number(r.id)).sort((a, b) => a - b)).toEqual(
    entries
      .filter(([, e]) => some.includes(e))
      .map(([id]) => id)
      .sort((a, b) => a - b),
  )
  const { n } = await t
    .app(phase)
    .selectFrom(t.table)
    .select((eb) => eb.fn.countAll().as('n'))
    .where('email', 'is not', null)
    .executeTakeFirstOrThrow()
  expect(Number(n)).toBe(model.size)
}

/** Every row of the model is in the table with its email, as the application reads it (two ways), and no other row. */
async function expectNoRowLost(t: MigrationDb, model: Model, phase: MigrationPhase): Promise<void> {
  const listed = await t.app(phase).selectFrom(t.table).select(['id', 'email']).execute()
  const all = await t.app(phase).selectFrom(t.table).selectAll().execute()
  for (const rows of [listed, all]) {
    const seen = new Map(rows.map((r) => [Number(r.id), r.email as string] as const))
    expect(seen.size).toBe(model.size)
    for (const [id, email] of model) expect(seen.get(id)).toBe(email)
  }
  // `*` brings the encrypted column along: its value is moved into `email`, its own key removed.
  if (phase !== 'added') expect(Object.keys(all[0] ?? {})).not.toContain('email_encrypted')
}

/** A second row with an email the table holds is refused, whatever the phase writes. */
async function expectDuplicateRefused(t: MigrationDb, model: Model, phase: MigrationPhase): Promise<void> {
  const existing = [...model.values()][0]!
  secret(t, phase, existing)
  await expect(
    t.app(phase).insertInto(t.table).values({ name: 'dup', email: existing }).execute(),
  ).rejects.toThrow(/duplicate|unique/i)
}

describe.each(backends())(
  'moving a plaintext column to encrypted [$name]',
  { timeout: 600_000 },
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      let t: MigrationDb
      const model: Model = new Map()
      let writes = 0
      beforeAll(async () => {
        t = await migrationDb(backend, ROWS)
        for (const r of await t.raw.selectFrom(t.table).select(['id', 'email']).execute())
          model.set(Number(r.id), String(r.email))
      })
      afterAll(async () => {
        await t?.destroy()
      })

      /** Runs `n` application writes in the phase's mode. */
      const writeSome = async (phase: MigrationPhase, n: number, tag: string) => {
        for (let i = 0; i < n; i++) await write(t, model, phase, writes++, tag)
      }

      it('added: the add migration creates the columns and the unique blind index online; the plaintext stays authoritative', async () => {
        // Before the add migration: an `added` deploy is refused (its encrypted columns do not exist).
        await expect(checkMigrationState(t.raw, migrationSchemaOf(t, 'added'))).rejects.toMatchObject({
          code: 'MIGRATION_PHASE_CONFLICT',
        })
        await t.migrate('add', 'added')
        const states = await checkMigrationState(t.raw, migrationSchemaOf(t, 'added'))
        expect(states).toEqual([
          expect.objectContaining({ encryptedColumns: true, plaintextColumn: true, pendingRows: true }),
        ])
        // A deploy that claims the backfill is done is refused while it is not.
        await expect(checkMigrationState(t.raw, migrationSchemaOf(t, 'cut-over'))).rejects.toMatchObject({
          code: 'MIGRATION_PHASE_CONFLICT',
        })
        expect((await t.ops('added').init()).created).toBeGreaterThan(0)
        // The plugin runs the same check before a process's first write: a `cut-over` process
        // started now (beside `added` ones: an unsafe pair) is refused, and sends nothing.
        const early = t.newProcess('cut-over')
        const before = t.scanner.count()
        await expect(
          early.insertInto(t.table).values({ name: 'early', email: 'early@x.io' }).execute(),
        ).rejects.toMatchObject({ code: 'MIGRATION_PHASE_CONFLICT' })
        expect(
          t.scanner.queries
            .slice(before)
            .map((q) => q.sql)
            .join('\n'),
        ).not.toMatch(/insert/i)
        await writeSome('added', 40, 'a')
        await expectSearchesMatch(t, model, 'added')
        await expectDuplicateRefused(t, model, 'added')
        await expectNoRowLost(t, model, 'added')
        await expect(t.ops('added').encryptColumn(t.table, 'email')).rejects.toMatchObject({
          code: 'MIGRATION_REFUSED',
        })
      })

      it('dual-writing: the backfill runs beside the application writer (compare-and-set), then verify passes', async () => {
        const ops = t.ops('dual-writing')
        const status = await ops.status({ table: t.table })
        expect(status.tables[0]?.migrations).toEqual([
          expect.objectContaining({
            column: 'email',
            storedAs: 'email_encrypted',
            phase: 'dual-writing',
            encryptedRows: 0,
          }),
        ])
        const dualFrom = writes
        await writeSome('dual-writing', 20, 'd')
        // Before the backfill most rows have their plaintext only: read and found through it.
        await expectSearchesMatch(t, model, 'dual-writing')
        await expectNoRowLost(t, model, 'dual-writing')
        // PGlite is one session: a concurrent writer's statements would run inside the job's transactions.
        let running = backend.name !== 'pglite'
        const writer = (async () => {
          while (running) {
            await write(t, model, 'dual-writing', writes++, 'c')
            await new Promise((r) => setTimeout(r, 2))
          }
        })()
        let result: Awaited<ReturnType<typeof ops.encryptColumn>>
        try {
          result = await ops.encryptColumn(t.table, 'email', {
            batchSize: 250,
            workers: backend.name === 'pglite' ? 1 : 2,
          })
        } finally {
          running = false
          await writer
        }
        expect(result).toMatchObject({ failed: 0, remainingBatches: 0 })
        // Every row but those the application wrote in both forms (or deleted) meanwhile: each of
        // its writes spares the backfill at most one row; the 40 `added` writes deleted up to 10.
        expect(result.rewritten).toBeGreaterThanOrEqual(ROWS - 10 - (writes - dualFrom))
        const verify = await ops.verify(t.table)
        expect(verify.migrating).toEqual([expect.objectContaining({ ok: true, missing: 0, failed: 0 })])
        expect(verify.ok).toBe(true)
        const after = await ops.status({ table: t.table })
        expect(after.tables[0]?.migrations[0]).toMatchObject({
          share: 1,
          job: expect.objectContaining({ state: 'done' }),
        })
        await expectSearchesMatch(t, model, 'dual-writing')
        await expectDuplicateRefused(t, model, 'dual-writing')
        await expectNoRowLost(t, model, 'dual-writing')
      })

      it('backfilled: the database agrees; the application still writes both forms', async () => {
        expect(await checkMigrationState(t.raw, migrationSchemaOf(t, 'backfilled'))).toEqual([
          expect.objectContaining({ pendingRows: false }),
        ])
        await writeSome('backfilled', 40, 'b')
        await expectSearchesMatch(t, model, 'backfilled')
        await expectDuplicateRefused(t, model, 'backfilled')
        expect((await t.ops('backfilled').verify(t.table)).ok).toBe(true)
      })

      it('cut-over: the cutover migration makes the plaintext nullable; no plaintext of the column is sent any more', async () => {
        await t.migrate('cutover', 'cut-over')
        t.scanner.reset()
        t.secrets.length = 0
        await writeSome('cut-over', 40, 'x')
        // An `added` deploy would now read rows whose plaintext is NULL: refused at startup.
        await expect(checkMigrationState(t.raw, migrationSchemaOf(t, 'added'))).rejects.toMatchObject({
          code: 'MIGRATION_PHASE_CONFLICT',
        })
        expect(await checkMigrationState(t.raw, migrationSchemaOf(t, 'cut-over'))).toHaveLength(1)
        // …and so is a new process of the `added` deploy, by the plugin, before its first write.
        await expect(
          t.newProcess('added').updateTable(t.table).set({ name: 'late' }).where('id', '=', 0).execute(),
        ).rejects.toMatchObject({ code: 'MIGRATION_PHASE_CONFLICT' })
        await expectSearchesMatch(t, model, 'cut-over')
        await expectDuplicateRefused(t, model, 'cut-over')
        await expectNoRowLost(t, model, 'cut-over')
        // Raw SQL naming the plaintext column, and a search that bypasses the plugin: refused
        // before anything is sent (the scanner below sees the probe if it was).
        const probe = 'probe-cut-over@x.io'
        secret(t, 'cut-over', probe)
        const app = t.app('cut-over')
        await expect(
          app.selectFrom(t.table).select('id').where(sql<boolean>`email = ${probe}`).execute(),
        ).rejects.toMatchObject({ code: 'QUERY_REFUSED', operator: 'raw sql' })
        await expect(
          app.withoutPlugins().selectFrom(t.table).select('id').where('email', '=', probe).execute(),
        ).rejects.toMatchObject({ code: 'PLAINTEXT_SEARCH' })
        expect(t.scanner.hits()).toEqual([])
        const verify = await t.ops('cut-over').verify(t.table)
        expect(verify.ok).toBe(true)
        expect(verify.migrating[0]?.plaintextNull).toBeGreaterThan(0)
      })

      it('dropped: the drop migration removes the plaintext column; nothing of it is left', async () => {
        // The `dropped` deploy goes first (it no longer names the column), then the migration.
        await writeSome('dropped', 20, 'y')
        // A `dropped` process writes the encrypted column alone and leaves an older plaintext
        // beside it: from cut-over on the encrypted value is the one that counts, so a backfill
        // run now (the job still accepts `cut-over`) must not write the older plaintext back.
        const late = (await t.ops('cut-over').encryptColumn(t.table, 'email')) as JobResult
        expect(late.failed).toBe(0)
        await expectNoRowLost(t, model, 'cut-over')
        // verify agrees: those rows' plaintexts are older than their encrypted values, not failures.
        const verify = await t.ops('cut-over').verifyColumn(t.table, 'email')
        expect(verify).toMatchObject({ ok: true, failed: 0, missing: 0 })
        expect(verify.plaintextStale).toBeGreaterThan(0)
        await t.migrate('drop', 'dropped')
        await expect(checkMigrationState(t.raw, migrationSchemaOf(t, 'dual-writing'))).rejects.toMatchObject({
          code: 'MIGRATION_PHASE_CONFLICT',
        })
        await expect(
          t.newProcess('backfilled').deleteFrom(t.table).where('id', '=', 0).execute(),
        ).rejects.toMatchObject({ code: 'MIGRATION_PHASE_CONFLICT' })
        expect(await checkMigrationState(t.raw, migrationSchemaOf(t, 'dropped'))).toEqual([
          expect.objectContaining({ plaintextColumn: false }),
        ])
        await writeSome('dropped', 20, 'z')
        await expectSearchesMatch(t, model, 'dropped')
        await expectDuplicateRefused(t, model, 'dropped')
        await expectNoRowLost(t, model, 'dropped')
        expect(t.scanner.hits()).toEqual([])
        // No plaintext left at rest: no stored value of any column holds an email.
        const rows = await t.raw.selectFrom(t.table).selectAll().execute()
        const plain = rows
          .flatMap((r) => Object.values(r))
          .filter((v) => typeof v === 'string' && v.includes('@'))
        expect(plain).toEqual([])
        expect(Object.keys(rows[0] ?? {})).not.toContain('email')
        expect((await t.ops('dropped').verify(t.table)).ok).toBe(true)
      })
    })
  },
)

function migrationSchemaOf(t: MigrationDb, phase: MigrationPhase) {
  return migrationSchema(t.table, phase, { encrypted, encryptedSchema })
}
