import { CompiledQuery, Kysely } from 'kysely'
import { describe, expect, it } from 'vitest'
import type { JobResult } from '../../src/ops.js'
import { emailsById } from '../support/app-writer.js'
import { type Backend, backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { type OpsTestDb, useOpsTestDb } from '../support/ops-db.js'

/**
 * A batch of 500 rows or more is written in parts of 250 (the database runs one part's write
 * while the job plans the next; job-batch.ts, writeRound): the table's 600 rows make one batch (of
 * at most 1,000), written as two parts (250 and 350 rows).
 */
const ROWS = 600

/** Whether `sql` is one of the job's compare-and-set writes to the data table (not its checkpoint). */
const isPartWrite = (t: OpsTestDb, sql: string) =>
  new RegExp(`^(with w as \\()?update [\`"]${t.table}[\`"]`, 'i').test(sql)

/**
 * The suite's ops on a dialect that counts the job's part writes. PGlite's dialect opens a database
 * of its own: there the suite's own ops run, uncounted (`parts` is undefined).
 */
function countingOps(t: OpsTestDb, backend: Backend) {
  if (backend.name === 'pglite') return { ops: t.ops, parts: () => undefined, destroy: async () => {} }
  let parts = 0
  const db = new Kysely<TestDB>({
    dialect: hooked(backend.createDialect(), async (query) => {
      if (isPartWrite(t, query.sql)) parts++
    }),
  })
  return { ops: t.moreOps({ db }), parts: () => parts, destroy: () => db.destroy() }
}

/** The batches of one job, as its checkpoints recorded them. */
const batchRows = async (t: OpsTestDb, jobId: string) =>
  (
    await t.raw
      .selectFrom(`${t.jobsTable}_batches`)
      .select(['done', 'rows_seen', 'rewritten', 'conflicts'])
      .where('job_id', '=', jobId)
      .execute()
  ).map((b) => ({
    done: Number(b.done),
    rows_seen: Number(b.rows_seen),
    rewritten: Number(b.rewritten),
    conflicts: Number(b.conflicts),
  }))

/** The stored `email` ciphertext of row `id`, replaced by `bytes`. */
const setEmail = (t: OpsTestDb, id: number, bytes: Buffer) =>
  t.raw
    .updateTable(t.table)
    .set({ email: bytes } as never)
    .where('id', '=', id)
    .execute()

/** Alters the stored `email` ciphertext of row `id` in a copy of it; returns the original. */
async function alterEmail(t: OpsTestDb, id: number, alter: (bytes: Buffer) => void): Promise<Buffer> {
  const stored = await t.raw
    .selectFrom(t.table)
    .select('email')
    .where('id', '=', id)
    .executeTakeFirstOrThrow()
  const original = Buffer.from(stored.email as unknown as Uint8Array)
  const altered = Buffer.from(original)
  alter(altered)
  await setEmail(t, id, altered)
  return original
}

describe.each(backends())('ops: a batch written in parts [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: ROWS })

    it("writes a batch of 600 rows in two parts, and the batch's checkpoint counts the rows of both", async () => {
      const { version } = await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      await new Promise((r) => setTimeout(r, t.ttlMs * 2))
      const before = await emailsById(t.app, t.table)
      const counting = countingOps(t, backend)
      try {
        const job = (await counting.ops.reencrypt(t.table, { batchSize: 1000 })) as JobResult
        if (counting.parts() !== undefined) expect(counting.parts()).toBe(2)
        expect(job).toMatchObject({
          rows: ROWS,
          rewritten: ROWS,
          conflicts: 0,
          failed: 0,
          remainingBatches: 0,
          batches: 1,
        })
        expect(await batchRows(t, job.jobId)).toEqual([
          { done: 1, rows_seen: ROWS, rewritten: ROWS, conflicts: 0 },
        ])
        expect(await emailsById(t.app, t.table)).toEqual(before)
        expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { [version]: 2 * ROWS } })
      } finally {
        await counting.destroy()
      }
    })

    it.runIf(backend.name !== 'pglite')(
      'rows the application changes before the first and before the last part is written keep the application write',
      async () => {
        const { version } = await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        await new Promise((r) => setTimeout(r, t.ttlMs * 2))
        const ids = [...(await emailsById(t.app, t.table)).keys()].sort((a, b) => a - b)
        // One row of each part: the first part holds the batch's first 250 rows.
        const changed = [ids[10]!, ids[400]!]
        const model = await emailsById(t.app, t.table)
        let parts = 0
        const db = new Kysely<TestDB>({
          dialect: hooked(backend.createDialect(), async (query) => {
            if (!isPartWrite(t, query.sql) || parts >= changed.length) return
            const id = changed[parts++]!
            const email = `changed-${id}@x.io`
            await t.app.updateTable(t.table).set({ email }).where('id', '=', id).execute()
            model.set(id, email)
          }),
        })
        try {
          const job = (await t.moreOps({ db }).reencrypt(t.table, { batchSize: 1000 })) as JobResult
          expect(parts).toBe(2)
          // Both rows were skipped by their part's write, read again, locked, and rewritten (their
          // ssn was still on the former version).
          expect(job).toMatchObject({ rows: ROWS, rewritten: ROWS, conflicts: 2, failed: 0 })
          expect(await batchRows(t, job.jobId)).toEqual([
            { done: 1, rows_seen: ROWS, rewritten: ROWS, conflicts: 2 },
          ])
          expect(await emailsById(t.app, t.table)).toEqual(model)
          expect(await t.ops.verify(t.table)).toMatchObject({
            ok: true,
            dataVersions: { [version]: 2 * ROWS },
          })
        } finally {
          await db.destroy()
        }
      },
    )

    it('rows already on the active version are left alone, in any part; a last part with nothing to write leaves the checkpoint to the end', async () => {
      const { version } = await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      await new Promise((r) => setTimeout(r, t.ttlMs * 2)) // the application writes with the new version
      const ids = [...(await emailsById(t.app, t.table)).keys()].sort((a, b) => a - b)
      // Rewritten whole by the application: 100 rows of the first part, every row of the last.
      const fresh = [...ids.slice(0, 100), ...ids.slice(250, ROWS)]
      for (const id of fresh) {
        await t.app
          .updateTable(t.table)
          .set({ email: `fresh-${id}@x.io`, ssn: '1' })
          .where('id', '=', id)
          .execute()
      }
      const model = await emailsById(t.app, t.table)
      const counting = countingOps(t, backend)
      try {
        const job = (await counting.ops.reencrypt(t.table, { batchSize: 1000 })) as JobResult
        if (counting.parts() !== undefined) expect(counting.parts()).toBe(1)
        const rewritten = ROWS - fresh.length
        expect(job).toMatchObject({ rows: ROWS, rewritten, conflicts: 0, failed: 0, batches: 1 })
        expect(await batchRows(t, job.jobId)).toEqual([{ done: 1, rows_seen: ROWS, rewritten, conflicts: 0 }])
        expect(await emailsById(t.app, t.table)).toEqual(model)
        expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { [version]: 2 * ROWS } })
      } finally {
        await counting.destroy()
      }
    })

    const failures = [
      {
        name: "the first part's write, rejected by the driver at once (before the job awaits it)",
        part: 1,
        fail: async () => {
          throw new Error('kfe_injected: connection lost')
        },
        message: /kfe_injected/,
      },
      {
        name: "the last part's write, refused by the database after the first part was written",
        part: 2,
        // A real error of the database on the batch's connection (PostgreSQL: the transaction is
        // aborted), in place of the write.
        fail: async (run: (q: CompiledQuery) => Promise<unknown>) => {
          await run(CompiledQuery.raw('select * from kfe_no_such_table'))
        },
        message: /kfe_no_such_table/,
      },
    ]
    for (const failure of failures) {
      it.runIf(backend.name !== 'pglite')(
        `a failed write fails the whole batch, which the next run redoes: ${failure.name}`,
        async () => {
          const before = (await t.ops.verify(t.table)).dataVersions
          expect(Object.keys(before)).toHaveLength(1)
          const { version } = await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
          await new Promise((r) => setTimeout(r, t.ttlMs * 2))
          const model = await emailsById(t.app, t.table)
          let parts = 0
          const db = new Kysely<TestDB>({
            dialect: hooked(backend.createDialect(), async (query, run) => {
              if (isPartWrite(t, query.sql) && ++parts === failure.part) await failure.fail(run)
            }),
          })
          try {
            const error = await t
              .moreOps({ db })
              .reencrypt(t.table, { batchSize: 1000 })
              .catch((e: unknown) => e)
            expect(parts).toBe(failure.part)
            expect(error).toBeInstanceOf(Error)
            expect(String((error as Error).message)).toMatch(failure.message)
          } finally {
            await db.destroy()
          }
          // Nothing of the batch was kept: every row is still on the former version.
          expect((await t.ops.verify(t.table)).dataVersions).toEqual(before)
          const job = (await t.ops.reencrypt(t.table, { batchSize: 1000 })) as JobResult
          expect(job).toMatchObject({ rows: ROWS, rewritten: ROWS, conflicts: 0, failed: 0 })
          expect(await emailsById(t.app, t.table)).toEqual(model)
          expect(await t.ops.verify(t.table)).toMatchObject({
            ok: true,
            dataVersions: { [version]: 2 * ROWS },
          })
        },
      )
    }

    it('a row naming a key version the worker has not loaded, in a later part: the batch is rolled back, the keys reloaded, the batch run again, and the row counted failed', async () => {
      const { version } = await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      await new Promise((r) => setTimeout(r, t.ttlMs * 2))
      const ids = [...(await emailsById(t.app, t.table)).keys()].sort((a, b) => a - b)
      const odd = ids[400]! // in the second part
      // The header's key version (one varint byte after the codec byte) made 99: no such version.
      const original = await alterEmail(t, odd, (b) => {
        b[1] = 99
      })
      const counting = countingOps(t, backend)
      try {
        const job = (await counting.ops.reencrypt(t.table, { batchSize: 1000 })) as JobResult
        // First run: part 1 written, then part 2's plan asked for the keys again (rolled back);
        // second run: both parts written, the row with the unknown version left out.
        if (counting.parts() !== undefined) expect(counting.parts()).toBe(3)
        expect(job).toMatchObject({ rows: ROWS, rewritten: ROWS - 1, conflicts: 0, failed: 1, batches: 1 })
        expect(job.failedKeys.map(Number)).toEqual([odd])
      } finally {
        await counting.destroy()
      }
      const v = await t.ops.verify(t.table)
      expect(v.ok).toBe(false)
      // Its email names version 99; its ssn, never written, is still on the former version.
      expect(v.dataVersions).toEqual({ [version]: 2 * ROWS - 2, [version - 1]: 1, 99: 1 })
      // The row's own ciphertext back: the next run moves it too.
      await setEmail(t, odd, original)
      const again = (await t.ops.reencrypt(t.table, { batchSize: 1000 })) as JobResult
      expect(again).toMatchObject({ rewritten: 1, failed: 0 })
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { [version]: 2 * ROWS } })
    })

    it('a row that failed in an earlier part is listed once when the batch runs again', async () => {
      const { version } = await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      await new Promise((r) => setTimeout(r, t.ttlMs * 2))
      const ids = [...(await emailsById(t.app, t.table)).keys()].sort((a, b) => a - b)
      const bad = ids[10]! // in the first part: its tag altered, it does not decrypt
      const odd = ids[400]! // in the second part: names key version 99, so the batch runs twice
      const originals = new Map<number, Buffer>([
        [
          bad,
          await alterEmail(t, bad, (b) => {
            b[b.length - 1]! ^= 1
          }),
        ],
        [
          odd,
          await alterEmail(t, odd, (b) => {
            b[1] = 99
          }),
        ],
      ])
      const counting = countingOps(t, backend)
      try {
        const job = (await counting.ops.reencrypt(t.table, { batchSize: 1000 })) as JobResult
        if (counting.parts() !== undefined) expect(counting.parts()).toBe(3)
        expect(job).toMatchObject({ rows: ROWS, rewritten: ROWS - 2, failed: 2, batches: 1 })
        // Planned twice (the first attempt rolled back), listed once each.
        expect(job.failedKeys.map(Number)).toEqual([bad, odd])
      } finally {
        await counting.destroy()
      }
      for (const [id, original] of originals) await setEmail(t, id, original)
      const again = (await t.ops.reencrypt(t.table, { batchSize: 1000 })) as JobResult
      expect(again).toMatchObject({ rewritten: 2, failed: 0 })
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { [version]: 2 * ROWS } })
    })
  })
})
