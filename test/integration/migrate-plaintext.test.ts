import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkMigrationState, encrypted, encryptedSchema, type MigrationPhase } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type MigrationDb, migrationDb } from '../support/migration-db.js'
import { migrationSchema } from '../support/migration-schema.js'

/**
 * Issue 15: a plaintext column with a unique constraint moved to an encrypted one through every
 * phase while an application writes. Until the plugin handles the phases itself, the application
 * here writes both forms explicitly (see dualWriteSchema); the ops, the DDL and the startup
 * check are the real ones. 2,000 rows by default; KFE_MIGRATION_ROWS=50000 for the size.
 */
const ROWS = Number(process.env.KFE_MIGRATION_ROWS ?? 2000)

type WriterMode = 'added' | 'dual' | 'cut-over' | 'dropped'

/** The plaintext copy of the data: id → email, applied with every write the application makes. */
type Model = Map<number, string>

function modeOf(phase: MigrationPhase): WriterMode {
  if (phase === 'added') return 'added'
  if (phase === 'dual-writing' || phase === 'backfilled') return 'dual'
  return phase
}

/** One application write in `mode`: insert, update, delete or upsert, applied to the model too. */
async function write(t: MigrationDb, model: Model, mode: WriterMode, i: number, tag: string): Promise<void> {
  const ids = [...model.keys()]
  const email = `${tag}${i}@x.io`
  const values = (v: string | null) =>
    mode === 'added'
      ? { email: v }
      : mode === 'dual'
        ? { email: v, email_encrypted: v }
        : mode === 'cut-over'
          ? { email: null, email_encrypted: v }
          : { email_encrypted: v }
  const db = mode === 'added' ? t.raw : t.app
  if (mode !== 'added') t.secrets.push(email)
  switch (i % 4) {
    case 0: {
      const insert = db.insertInto(t.table).values({ name: `w${i}`, ...values(email) })
      const id =
        t.backend.family === 'mysql'
          ? Number((await insert.executeTakeFirstOrThrow()).insertId)
          : Number((await insert.returning('id').executeTakeFirstOrThrow()).id)
      model.set(id, email)
      break
    }
    case 1: {
      const id = ids[(i * 7919) % ids.length]!
      await db.updateTable(t.table).set(values(email)).where('id', '=', id).execute()
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
      if (mode !== 'added') t.secrets.push(existing)
      const insert = db.insertInto(t.table).values({ name: `u${i}`, ...values(existing) })
      await (t.backend.family === 'mysql'
        ? insert.onDuplicateKeyUpdate({ name: `u${i}` })
        : insert.onConflict((oc) =>
            oc
              .column(mode === 'added' || mode === 'dual' ? 'email' : 'email_bidx')
              .doUpdateSet({ name: `u${i}` }),
          )
      ).execute()
    }
  }
}

/** The ids a search by `email` returns in `mode`, as the application searches in that phase. */
async function search(t: MigrationDb, mode: WriterMode, email: string): Promise<number[]> {
  let rows: Array<{ id: unknown }>
  if (mode === 'added')
    rows = await t.raw.selectFrom(t.table).select('id').where('email', '=', email).execute()
  else {
    if (mode !== 'dual') t.secrets.push(email)
    rows = await t.app
      .selectFrom(t.table)
      .select('id')
      .where((eb) =>
        mode === 'dual'
          ? eb.or([eb('email', '=', email), eb('email_encrypted', '=', email)])
          : eb('email_encrypted', '=', email),
      )
      .execute()
  }
  return rows.map((r) => Number(r.id)).sort((a, b) => a - b)
}

/** Every search the model can answer (a sample of present values, plus absent ones) agrees with it. */
async function expectSearchesMatch(t: MigrationDb, model: Model, mode: WriterMode): Promise<void> {
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
    expect({ email, ids: await search(t, mode, email) }).toEqual({ email, ids: expected })
  }
}

/** Every row of the model is in the table with its email (read as the phase reads), and no other row. */
async function expectNoRowLost(t: MigrationDb, model: Model, mode: WriterMode): Promise<void> {
  const rows: Array<Record<string, unknown>> =
    mode === 'added'
      ? await t.raw.selectFrom(t.table).select(['id', 'email']).execute()
      : await t.app
          .selectFrom(t.table)
          .select(['id', 'email_encrypted as e', ...(mode === 'dropped' ? [] : ['email'])])
          .execute()
  const seen = new Map(
    rows.map((r) => [Number(r.id), String(mode === 'added' ? r.email : (r.e ?? r.email))] as const),
  )
  expect(seen.size).toBe(model.size)
  for (const [id, email] of model) expect(seen.get(id)).toBe(email)
}

/** A second row with an email the table holds is refused, whatever the phase writes. */
async function expectDuplicateRefused(t: MigrationDb, model: Model, mode: WriterMode): Promise<void> {
  const existing = [...model.values()][0]!
  if (mode !== 'added') t.secrets.push(existing)
  const values =
    mode === 'added'
      ? { email: existing }
      : mode === 'dual'
        ? { email: existing, email_encrypted: existing }
        : mode === 'cut-over'
          ? { email: null, email_encrypted: existing }
          : { email_encrypted: existing }
  await expect(
    (mode === 'added' ? t.raw : t.app)
      .insertInto(t.table)
      .values({ name: 'dup', ...values })
      .execute(),
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
        for (let i = 0; i < n; i++) await write(t, model, modeOf(phase), writes++, tag)
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
        await writeSome('dual-writing', 20, 'd')
        // PGlite is one session: a concurrent writer's statements would run inside the job's transactions.
        let running = backend.name !== 'pglite'
        const writer = (async () => {
          while (running) {
            await write(t, model, 'dual', writes++, 'c')
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
        expect(result.rewritten).toBeGreaterThanOrEqual(ROWS - 100)
        const verify = await ops.verify(t.table)
        expect(verify.migrating).toEqual([expect.objectContaining({ ok: true, missing: 0, failed: 0 })])
        expect(verify.ok).toBe(true)
        const after = await ops.status({ table: t.table })
        expect(after.tables[0]?.migrations[0]).toMatchObject({
          share: 1,
          job: expect.objectContaining({ state: 'done' }),
        })
        await expectSearchesMatch(t, model, 'dual')
        await expectDuplicateRefused(t, model, 'dual')
        await expectNoRowLost(t, model, 'dual')
      })

      it('backfilled: the database agrees; the application still writes both forms', async () => {
        expect(await checkMigrationState(t.raw, migrationSchemaOf(t, 'backfilled'))).toEqual([
          expect.objectContaining({ pendingRows: false }),
        ])
        await writeSome('backfilled', 40, 'b')
        await expectSearchesMatch(t, model, 'dual')
        await expectDuplicateRefused(t, model, 'dual')
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
        await expectSearchesMatch(t, model, 'cut-over')
        await expectDuplicateRefused(t, model, 'cut-over')
        await expectNoRowLost(t, model, 'cut-over')
        expect(t.scanner.hits()).toEqual([])
        const verify = await t.ops('cut-over').verify(t.table)
        expect(verify.ok).toBe(true)
        expect(verify.migrating[0]?.plaintextNull).toBeGreaterThan(0)
      })

      it('dropped: the drop migration removes the plaintext column; nothing of it is left', async () => {
        // The `dropped` deploy goes first (it no longer names the column), then the migration.
        await writeSome('dropped', 20, 'y')
        await t.migrate('drop', 'dropped')
        await expect(checkMigrationState(t.raw, migrationSchemaOf(t, 'dual-writing'))).rejects.toMatchObject({
          code: 'MIGRATION_PHASE_CONFLICT',
        })
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
