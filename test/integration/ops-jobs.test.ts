import { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type KeyProvider, KeyStore, OperationError } from '../../src/index.js'
import type { JobResult } from '../../src/ops.js'
import { emailsById, startAppWriter } from '../support/app-writer.js'
import { type Backend, backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { type OpsTestDb, opsTestDb, useOpsTestDb } from '../support/ops-db.js'
import { kmsFixture } from '../support/providers.js'

/** Rows as the application reads them (plaintext), by id. */
const snapshot = (t: OpsTestDb) => emailsById(t.app, t.table)

describe.each(backends())('ops jobs [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 120 })

    it('an AbortSignal stops after the running batch with the checkpoint saved; the next run resumes', async () => {
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      const stop = new AbortController()
      const first = (await t.ops.reencrypt(t.table, {
        batchSize: 10,
        signal: stop.signal,
        onProgress: (p) => {
          if (p.phase === 'batch' && p.done === 3) stop.abort()
        },
      })) as JobResult
      expect(first).toMatchObject({
        stopped: true,
        batches: 3,
        rows: 30,
        rewritten: 30,
        remainingBatches: 10,
      })
      const status = await t.ops.status({ staleJobMs: 0 })
      expect(status.tables[0]!.jobs[0]).toMatchObject({
        state: 'running',
        interrupted: true,
        doneBatches: 3,
        totalBatches: 13,
      })
      expect(status.needsAttention).toBe(true)
      const second = (await t.ops.reencrypt(t.table, { batchSize: 10 })) as JobResult
      expect(second).toMatchObject({
        planned: false,
        stopped: false,
        batches: 10,
        rows: 90,
        rewritten: 90,
        remainingBatches: 0,
      })
      expect((await t.ops.verify(t.table)).dataVersions).toEqual({ 2: 240 })
    })

    it('rotate refuses a key staged under another version than it was wrapped for (ROTATION_REFUSED), and stores nothing of it', async () => {
      const store = new KeyStore(t.raw, { tableName: t.keyTable })
      const logical = t.table
      const racing: KeyProvider = {
        id: t.provider.id,
        async generateDataKey(ref) {
          // A concurrent rotation stages the version this one was about to take.
          const other = await t.provider.generateDataKey(ref)
          other.plaintext.fill(0)
          await store.stage(logical, ref.purpose, [other.wrapped])
          return t.provider.generateDataKey(ref)
        },
        unwrap: (w, ref) => t.provider.unwrap(w, ref),
        rewrap: (s, ref) => t.provider.rewrap(s, ref),
      }
      const ops = t.moreOps({ provider: racing })
      const error = await ops.rotate(t.table, { purpose: 'index' }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(OperationError)
      expect((error as OperationError).code).toBe('ROTATION_REFUSED')
      const index = await store.list(logical, 'index')
      // The store refused our key (KEY_VERSION_MISMATCH): nothing of it was stored.
      expect(index.map((k) => `${k.version}/${k.state}`)).toEqual(['1/active', '2/staged'])
      // The competitor's staged version is activated by the next rotate (it is proven first).
      const r = await t.ops.rotate(t.table, { purpose: 'index', batchSize: 50 })
      expect(r).toMatchObject({ version: 2, state: 'active' })
      expect((await t.ops.verify(t.table)).indexVersions).toEqual({ 2: 240 })
    })

    it.runIf(backend.name !== 'pglite')(
      'compare-and-set: a row the application changes between the read and the write keeps the application write',
      async () => {
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        await new Promise((r) => setTimeout(r, t.ttlMs * 2)) // the application writes with the new version
        const [firstId] = (await t.raw.selectFrom(t.table).select('id').orderBy('id').limit(1).execute()).map(
          (r) => Number(r.id),
        )
        let fired = false
        const db = new Kysely<TestDB>({
          dialect: hooked(backend.createDialect(), async (query) => {
            if (!fired && /^(with w as \()?update/i.test(query.sql) && query.sql.includes(t.table)) {
              fired = true
              await t.app
                .updateTable(t.table)
                .set({ email: 'changed@x.io' })
                .where('id', '=', firstId!)
                .execute()
            }
          }),
        })
        try {
          const ops = t.moreOps({ db: db })
          const job = (await ops.reencrypt(t.table, { batchSize: 25 })) as JobResult
          expect(fired).toBe(true)
          expect(job.conflicts).toBe(1)
          expect(job.rows).toBe(120)
          // Read again, locked, and rewritten (its other column was still on the former version).
          expect(job.rewritten).toBe(120)
          expect((await snapshot(t)).get(firstId!)).toBe('changed@x.io')
          expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { 3: 240 } })
        } finally {
          await db.destroy()
        }
      },
    )

    it.runIf(backend.name !== 'pglite')(
      'an application writer (inserts, updates, deletes) running during the job loses nothing',
      async () => {
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        await new Promise((r) => setTimeout(r, t.ttlMs * 2))
        const model = await snapshot(t)
        const writer = startAppWriter(t.app, t.table, model, { pauseMs: 2, prefix: 'w' })
        // Each of the job's first 12 transactions starts only after one more application write,
        // never inside one (the writer could wait on its row locks): the two interleave however
        // the machine schedules them.
        let begun = 0
        const db = new Kysely<TestDB>({
          dialect: hooked(backend.createDialect(), async (query) => {
            if (/^(begin|start transaction)/i.test(query.sql) && begun < 12)
              await writer.waitForWrites(++begun)
          }),
        })
        let writes = 0
        try {
          const job = (await t.moreOps({ db }).reencrypt(t.table, { batchSize: 4 })) as JobResult
          expect(job.failed).toBe(0)
          expect(job.batches).toBeGreaterThan(12)
        } finally {
          writes = await writer.stop()
          await db.destroy()
        }
        expect(writes).toBeGreaterThanOrEqual(12)
        expect(await snapshot(t)).toEqual(model)
        const v = await t.ops.verify(t.table)
        expect(v.ok).toBe(true)
        expect(Object.keys(v.dataVersions)).toEqual(['4'])
      },
    )

    for (const workers of [2, 4]) {
      it.runIf(backend.name !== 'pglite')(
        `${workers} workers on separate connections share one job: every row processed once`,
        async () => {
          await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
          await new Promise((r) => setTimeout(r, t.ttlMs * 2))
          const total = Number(
            (
              await t.raw
                .selectFrom(t.table)
                .select((eb) => eb.fn.countAll().as('n'))
                .executeTakeFirstOrThrow()
            ).n,
          )
          // Each machine's first batch claim waits until every machine has made one: by then each
          // has planned or joined the job, so none starts after the others finished (it would scan
          // the table again in a pass of its own, as a late `kfe` process does).
          let arrived = 0
          let release = () => {}
          const everyone = new Promise<void>((r) => {
            release = r
          })
          const machines = Array.from({ length: workers }, () => {
            let first = true
            return new Kysely<TestDB>({
              dialect: hooked(backend.createDialect(), async (query) => {
                if (!first || !/skip locked/i.test(query.sql)) return
                first = false
                if (++arrived === workers) release()
                await everyone
              }),
            })
          })
          try {
            const results = (await Promise.all(
              machines.map((db, i) =>
                t.moreOps({ db: db }).reencrypt(t.table, {
                  batchSize: 3,
                  workerName: `m${i}`,
                }),
              ),
            )) as JobResult[]
            expect(arrived).toBe(workers)
            expect(results.reduce((n, r) => n + r.rows, 0)).toBe(total)
            expect(results.reduce((n, r) => n + r.rewritten, 0)).toBe(total)
            expect(results.every((r) => r.remainingBatches === 0)).toBe(true)
            const batches = await t.raw
              .selectFrom(`${t.jobsTable}_batches`)
              .select(['done', 'rows_seen'])
              .execute()
            expect(batches.every((b) => Number(b.done) === 1)).toBe(true)
            expect(batches.reduce((n, b) => n + Number(b.rows_seen), 0)).toBe(total)
            const v = await t.ops.verify(t.table)
            expect(v.ok).toBe(true)
            expect(Object.keys(v.dataVersions)).toHaveLength(1)
          } finally {
            for (const db of machines) await db.destroy()
          }
        },
      )
    }

    it('joinOnly joins a running job and plans none: nothing done without one, or once it is done', async () => {
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      await new Promise((r) => setTimeout(r, t.ttlMs * 2))
      const nothing = { planned: false, batches: 0, rows: 0, rewritten: 0, remainingBatches: 0 }
      // No job towards the new version yet: nothing planned, nothing read.
      expect(await t.ops.reencrypt(t.table, { batchSize: 10, joinOnly: true })).toMatchObject(nothing)
      const total = (await t.ops.verify(t.table)).rows
      const stop = new AbortController()
      const first = (await t.ops.reencrypt(t.table, {
        batchSize: 10,
        signal: stop.signal,
        onProgress: (p) => {
          if (p.phase === 'batch' && p.done === 2) stop.abort()
        },
      })) as JobResult
      expect(first).toMatchObject({ planned: true, stopped: true, batches: 2 })
      const joined = (await t.ops.reencrypt(t.table, { batchSize: 10, joinOnly: true })) as JobResult
      expect(joined).toMatchObject({
        planned: false,
        batches: first.remainingBatches,
        rows: total - 20,
        rewritten: total - 20,
        remainingBatches: 0,
      })
      // Done: a late worker reads nothing (without joinOnly, a run started now would scan again).
      expect(await t.ops.reencrypt(t.table, { batchSize: 10, joinOnly: true })).toMatchObject(nothing)
      const both = await t.ops.reencrypt(t.table, { joinOnly: true, restart: true }).catch((e: unknown) => e)
      expect(both).toMatchObject({ code: 'OPS_INVALID' })
    })

    it('workers: 2 in one call share the batches', async () => {
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      await new Promise((r) => setTimeout(r, t.ttlMs * 2))
      const job = (await t.ops.reencrypt(t.table, { batchSize: 5, workers: 2 })) as JobResult
      const total = (await t.ops.verify(t.table)).rows
      expect(job).toMatchObject({ rows: total, rewritten: total, remainingBatches: 0 })
    })
  })
})

describe.each(backends())('ops: key provider outage mid-job (KMS endpoint) [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: OpsTestDb
    let kms: Awaited<ReturnType<typeof kmsFixture>>
    beforeAll(async () => {
      kms = await kmsFixture()
      t = await opsTestDb(backend, { provider: kms.provider, opsCache: { ttlMs: 1, graceMs: 0 } })
      await t.ops.init()
      await t.insert(60)
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
    })
    afterAll(async () => {
      await t?.destroy()
      await kms?.cleanup()
    })

    it('stops cleanly with JOB_PAUSED when the KMS fails, and the next run resumes', async () => {
      const error = await t.ops
        .reencrypt(t.table, {
          batchSize: 10,
          onProgress: (p) => {
            if (p.phase === 'batch' && p.done === 2) {
              kms.fault.down()
              // The key copies live 1 ms: past 2 ms, batch 3 must unwrap again, however fast batch 2 ran.
              const until = performance.now() + 2
              while (performance.now() < until) {}
            }
          },
        })
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(OperationError)
      expect(error).toMatchObject({ code: 'JOB_PAUSED' })
      expect(((error as OperationError).cause as { code?: string }).code).toBe('PROVIDER_UNAVAILABLE')
      const during = await t.raw.selectFrom(`${t.jobsTable}_batches`).select('done').execute()
      expect(during.filter((b) => Number(b.done) === 1)).toHaveLength(2)
      kms.fault.up()
      const job = (await t.ops.reencrypt(t.table, { batchSize: 10 })) as JobResult
      expect(job).toMatchObject({ planned: false, rows: 40, rewritten: 40, remainingBatches: 0 })
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { 2: 120 } })
    })
  })
})
