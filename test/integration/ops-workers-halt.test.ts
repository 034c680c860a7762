import { Kysely, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import type { JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { useOpsTestDb } from '../support/ops-db.js'

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * The workers of one `reencrypt` call (`workers: 4`): a moment when every batch left is locked
 * (`kfe status`'s probe takes the free batches' locks for an instant) must not end them, and a
 * failure of one must stop the others before the call fails. PGlite has one session: one worker.
 */
describe.each(backends().filter((b) => b.name !== 'pglite'))(
  'ops: the workers of one job [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOpsTestDb(backend, { rows: 400 })
      const batches = () => sql.table(`${t.jobsTable}_batches`)
      const jobId = () => `reencrypt:${t.table}`

      it('keep claiming after an instant when every batch left was locked (status probe): no batch is left to the slow loop', async () => {
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        let probe: Promise<unknown> | undefined
        const job = (await t.ops.reencrypt(t.table, {
          workers: 4,
          batchSize: 10,
          workerName: 'w',
          onProgress: (p) => {
            if (p.phase !== 'batch' || p.done !== 5 || probe !== undefined) return
            // What `status` does for a running job, held a little longer.
            probe = t.raw.transaction().execute(async (trx) => {
              await sql`select batch_no from ${batches()} where job_id = ${jobId()} and done = 0 for update skip locked`.execute(
                trx,
              )
              await pause(150)
            })
          },
        })) as JobResult
        await probe
        expect(probe).toBeDefined()
        expect(job).toMatchObject({ rows: 400, failed: 0, remainingBatches: 0 })
        // The slow loop's runner is named without a worker number.
        const { rows } = await sql<{
          worker: string
          n: number | string
        }>`select worker, count(*) as n from ${batches()} where job_id = ${jobId()} group by worker`.execute(
          t.raw,
        )
        const byWorker = Object.fromEntries(rows.map((r) => [r.worker, Number(r.n)]))
        expect(byWorker.w).toBeUndefined()
        expect(Object.values(byWorker).reduce((a, b) => a + b, 0)).toBe(job.batches)
        expect(job.batches).toBeGreaterThan(30)
      })

      it("a worker's failure stops the others after their batch: no batch is done once the call has failed", async () => {
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        let writes = 0
        const db = new Kysely<TestDB>({
          dialect: hooked(backend.createDialect(), async (query) => {
            if (!/^\s*(with .* as \()?\s*update\b/i.test(query.sql) || !query.sql.includes(t.table)) return
            if (++writes === 6) throw new Error('injected failure of one batch write')
          }),
        })
        try {
          const error = await t
            .moreOps({ db })
            .reencrypt(t.table, { workers: 4, batchSize: 10 })
            .catch((e: unknown) => e)
          expect(String((error as Error).message)).toContain('injected failure')
          const done = async () =>
            Number(
              (
                await sql<{
                  n: number | string
                }>`select count(*) as n from ${batches()} where job_id = ${jobId()} and done = 1`.execute(
                  t.raw,
                )
              ).rows[0]?.n,
            )
          const atFailure = await done()
          await pause(500)
          expect(await done()).toBe(atFailure)
          const all = await sql<{
            n: number | string
          }>`select count(*) as n from ${batches()} where job_id = ${jobId()}`.execute(t.raw)
          expect(atFailure).toBeLessThan(Number(all.rows[0]?.n))
        } finally {
          await db.destroy()
        }
      })
    })
  },
)
