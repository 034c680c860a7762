import { CompiledQuery, Kysely, MysqlDialect, sql } from 'kysely'
import { createPool } from 'mysql2'
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest'
import { jobExit } from '../../src/cli/commands/reencrypt.js'
import { createOpsContext } from '../../src/ops/context.js'
import { JobStore } from '../../src/ops/job-store.js'
import type { FieldEncryptionOps, JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { type OpsTestDb, opsTestDb, retireWhenDue, useOpsTestDb } from '../support/ops-db.js'

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Runs a re-encryption of batches of 10 and stops it (its signal) after the first batch. */
function firstBatchOnly(t: OpsTestDb): Promise<JobResult> {
  const stop = new AbortController()
  return t.ops.reencrypt(t.table, {
    batchSize: 10,
    signal: stop.signal,
    onProgress: (p) => {
      if (p.phase === 'batch') stop.abort()
    },
  }) as Promise<JobResult>
}

/** Flips the last byte (GCM tag) of a row's email ciphertext: it no longer decrypts. */
async function corrupt(t: OpsTestDb, id: unknown): Promise<void> {
  const row = await t.raw.selectFrom(t.table).select('email').where('id', '=', id).executeTakeFirstOrThrow()
  const flipped = Buffer.from(row.email as Buffer)
  flipped[flipped.length - 1]! ^= 1
  await t.raw.updateTable(t.table).set({ email: flipped }).where('id', '=', id).execute()
}

describe.each(backends())('ops fixes: job engine [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 40 })

    it('status --exact reports a job stopped by its signal as interrupted (needs attention), at once', async () => {
      // Every row is on the active versions: only the stopped job is left to report.
      const job = await firstBatchOnly(t)
      expect(job).toMatchObject({ stopped: true, batches: 1, remainingBatches: 4 })
      const s = await t.ops.status({ exact: true })
      expect(s.tables[0]!.jobs[0]).toMatchObject({ state: 'running', interrupted: true })
      expect(s.needsAttention).toBe(true)
      expect(s.tables[0]!.verdict).toMatch(/^needs attention/)
      expect(s.tables[0]!.attention.join('\n')).toContain('was interrupted at 1/5 batches')
      const done = (await t.ops.reencrypt(t.table, { batchSize: 10 })) as JobResult
      expect(done).toMatchObject({ planned: false, remainingBatches: 0 })
      expect((await t.ops.status({ exact: true })).needsAttention).toBe(false)
    })

    it('a job interrupted before a new rotation is not resumed: a new job towards the active versions is planned, and says so', async () => {
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      const first = await firstBatchOnly(t)
      expect(first).toMatchObject({ stopped: true, rewritten: 10, targets: { data: 2, index: 1 } })
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      const phases: string[] = []
      const second = (await t.ops.reencrypt(t.table, {
        batchSize: 10,
        onProgress: (p) => phases.push(p.phase),
      })) as JobResult
      expect(second).toMatchObject({
        planned: true,
        targets: { data: 3, index: 1 },
        replaced: { targets: { data: 2, index: 1 }, doneBatches: 1, totalBatches: 5 },
        rows: 40,
        rewritten: 40,
        remainingBatches: 0,
      })
      expect(phases.some((p) => p.startsWith('replaced an unfinished job towards data v2'))).toBe(true)
      // Every row on version 3, including the ten the old job had moved to version 2.
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { 3: 80 } })
    })

    // PGlite's clock is this process's: no machine can be behind it.
    it.runIf(backend.name !== 'pglite')(
      "a run on a machine whose clock is behind the database's still plans a new pass after a finished job (not joined as done meanwhile)",
      async () => {
        const first = (await t.ops.reencrypt(t.table, { batchSize: 10 })) as JobResult
        expect(first).toMatchObject({ remainingBatches: 0 })
        vi.useFakeTimers({ toFake: ['Date'] })
        try {
          vi.setSystemTime(Date.now() - 3_600_000)
          const again = (await t.ops.reencrypt(t.table, { batchSize: 10 })) as JobResult
          expect(again).toMatchObject({ planned: true, remainingBatches: 0 })
        } finally {
          vi.useRealTimers()
        }
      },
    )

    it("status and init --dry-run report a damaged key row as the key store's error, not as a table without keys (run kfe init)", async () => {
      const row = await t.raw
        .selectFrom(t.keyTable as 'kfe_keys')
        .select(['wrappings'])
        .where('logical_table', '=', t.table)
        .where('purpose', '=', 'index')
        .where('version', '=', 1)
        .executeTakeFirstOrThrow()
      const damage = (wrappings: unknown) =>
        t.raw
          .updateTable(t.keyTable as 'kfe_keys')
          .set({ wrappings })
          .where('logical_table', '=', t.table)
          .where('purpose', '=', 'index')
          .where('version', '=', 1)
          .execute()
      await damage('[{"kekId":"local:x","wrapped":"AAAA')
      try {
        await expect(t.ops.status({ table: t.table })).rejects.toMatchObject({ code: 'KEY_STORE_CORRUPT' })
        await expect(t.ops.init({ dryRun: true })).rejects.toMatchObject({ code: 'KEY_STORE_CORRUPT' })
      } finally {
        await damage(row.wrappings)
      }
      expect((await t.ops.status({ table: t.table })).tables[0]!.keys.length).toBeGreaterThan(0)
    })

    it('a resumed run counts the rows that failed in the earlier run: jobFailed, and the CLI exit code 1', async () => {
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      const [firstId] = (await t.raw.selectFrom(t.table).select('id').orderBy('id').limit(1).execute()).map(
        (r) => r.id,
      )
      await corrupt(t, firstId)
      const first = await firstBatchOnly(t)
      expect(first).toMatchObject({ stopped: true, failed: 1, jobFailed: 1 })
      const second = (await t.ops.reencrypt(t.table, { batchSize: 10 })) as JobResult
      expect(second).toMatchObject({ planned: false, failed: 0, jobFailed: 1, remainingBatches: 0 })
      expect(jobExit(second)).toBe(1)
      const s = await t.ops.status({ exact: true })
      expect(s.tables[0]!.attention.join('\n')).toContain('could not read 1 rows')
      await t.raw.deleteFrom(t.table).where('id', '=', firstId!).execute()
    })

    it.runIf(backend.name !== 'pglite')(
      'finish is one conditional update: never while a batch is pending or claimed; two workers finishing at once, one wins',
      async () => {
        const machines = [0, 1, 2].map(() => new Kysely<TestDB>({ dialect: backend.createDialect() }))
        try {
          const [a, b, c] = machines.map(
            (db) =>
              new JobStore(
                createOpsContext({
                  db,
                  schema: t.schema,
                  keyProvider: t.provider,
                  keyTable: t.keyTable,
                  jobsTable: t.jobsTable,
                }),
              ),
          ) as [JobStore, JobStore, JobStore]
          const { id } = await a.startOrJoin(
            'finish-test',
            t.table,
            new Date(),
            { data: 1, index: 1 },
            async () => [
              { lo: null, hi: 10 },
              { lo: 10, hi: null },
            ],
          )
          const counts = { rows: 0, rewritten: 0, conflicts: 0, deleted: 0, failed: 0, shredded: 0 }
          // Worker A holds batch 0 (claimed, uncommitted); batch 1 is pending.
          let release!: () => void
          const held = new Promise<void>((r) => {
            release = r
          })
          let claimed!: () => void
          const isClaimed = new Promise<void>((r) => {
            claimed = r
          })
          const workerA = machines[0]!
            .transaction()
            .execute(async (trx) => {
              expect(await a.claim(trx, id)).toMatchObject({ no: 0 })
              claimed()
              await held
              throw new Error('worker A dies: its batch rolls back')
            })
            .catch((e: Error) => e.message)
          await isClaimed
          // PostgreSQL answers at once; InnoDB waits for A's lock, then sees the batch still undone.
          const finishing = Promise.all([b.finish(id), c.finish(id)])
          expect(await b.claimedNow(id)).toBe(true)
          await pause(100)
          release()
          expect(await workerA).toContain('worker A dies')
          expect(await finishing).toEqual([false, false])
          expect(await b.claimedNow(id)).toBe(false)
          for (let i = 0; i < 2; i++) {
            await machines[1]!.transaction().execute(async (trx) => {
              const targets = { data: 1, index: 1 }
              expect(await b.complete(trx, (await b.claim(trx, id))!, counts, 'b', targets)).toBe(true)
            })
          }
          const both = await Promise.all([b.finish(id), c.finish(id)])
          expect(both.filter(Boolean)).toHaveLength(1)
          const row = await t.raw
            .selectFrom(t.jobsTable)
            .select(['state'])
            .where('id', '=', id)
            .executeTakeFirstOrThrow()
          expect(row.state).toBe('done')
        } finally {
          for (const db of machines) await db.destroy()
        }
      },
    )
  })
})

describe.each(backends())('ops fixes: dry runs write nothing [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 5 })

    it('retire --dry-run of a version activated by another tool records no activation time', async () => {
      await t.ops.rotate(t.table, { purpose: 'data' }) // and re-encrypts: no row is left on version 1
      // As if another tool had activated version 2: no record of when.
      await t.raw
        .deleteFrom(t.jobsTable as 'kfe_jobs')
        .where('kind', '=', 'activation')
        .execute()
      const events = () =>
        t.raw
          .selectFrom(t.jobsTable as 'kfe_jobs')
          .select('id')
          .where('kind', '=', 'activation')
          .execute()
      // A TTL no stall of this machine outlasts: "too early" whatever the time between the steps.
      const slow = t.moreOps({ metadataTtlMs: 600_000 })
      // Without a record the wait is taken from now: the dry run says so and writes nothing.
      await expect(slow.retire(t.table, { purpose: 'data', version: 1, dryRun: true })).rejects.toMatchObject(
        {
          code: 'RETIRE_TOO_EARLY',
        },
      )
      expect(await events()).toEqual([])
      // The real one records the moment (the wait starts now) and asks to wait.
      await expect(slow.retire(t.table, { purpose: 'data', version: 1 })).rejects.toMatchObject({
        code: 'RETIRE_TOO_EARLY',
      })
      expect(await events()).toHaveLength(1)
    })
  })
})

describe.each(backends())('ops fixes: BIGINT primary keys near 2^63 [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: OpsTestDb
    let ops: FieldEncryptionOps
    let defaults: Kysely<TestDB> | undefined
    // 2^63 - 1 down in steps of 7: beyond 2^53 every one of them rounds to another as a double.
    const ids = Array.from({ length: 23 }, (_, i) => (2n ** 63n - 1n - BigInt(i * 7)).toString())
    beforeAll(async () => {
      t = await opsTestDb(backend, { bigintIds: true })
      // mysql2 with its defaults (no supportBigNumbers/bigNumberStrings): a BIGINT comes back as a
      // rounded number, as in an application that never set those options.
      defaults =
        backend.name === 'mysql'
          ? new Kysely<TestDB>({
              dialect: new MysqlDialect({
                pool: createPool({ uri: inject('mysqlUrl') ?? '', connectionLimit: 3 }),
              }),
            })
          : undefined
      ops = defaults === undefined ? t.ops : t.moreOps({ db: defaults })
      await ops.init()
      await t.app
        .insertInto(t.table)
        .values(ids.map((id, i) => ({ id, name: `b${i}`, email: `b${i}@x.io`, ssn: `123-45-${i}` })))
        .execute()
    })
    afterAll(async () => {
      await defaults?.destroy()
      await t?.destroy()
    })

    it('keyset batches and compare-and-set writes find every row by its exact key', async () => {
      await ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      const job = (await ops.reencrypt(t.table, { batchSize: 4 })) as JobResult
      expect(job).toMatchObject({
        rows: 23,
        rewritten: 23,
        conflicts: 0,
        deleted: 0,
        failed: 0,
        remainingBatches: 0,
      })
      expect(await ops.verify(t.table)).toMatchObject({ ok: true, rows: 23, dataVersions: { 2: 46 } })
      // The checkpoint holds the exact keys.
      const bounds = await t.raw.selectFrom(`${t.jobsTable}_batches`).select('hi').execute()
      const his = bounds.map((b) => (b.hi === null ? null : String(b.hi).replaceAll('"', '')))
      expect(his.filter((h) => h !== null).every((h) => ids.includes(h!))).toBe(true)
      // A sampled status draws its windows over the same range (no out-of-range key).
      const s = await ops.status({ sampleSize: 5 })
      expect(s.tables[0]!.scanned).toBeGreaterThan(0)
      expect(s.tables[0]!.estimated).toBe(true)
    })

    it('verify names a failing row by its exact key', async () => {
      await corrupt(t, ids[0])
      const v = await ops.verify(t.table)
      expect(v.failed).toBe(1)
      expect(String(v.failures[0]!.key)).toBe('9223372036854775807')
    })
  })
})

describe.each(backends())(
  'ops fixes: BIGINT primary keys of mixed digit counts [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      let t: OpsTestDb
      const n = 1200
      beforeAll(async () => {
        t = await opsTestDb(backend, { bigintIds: true })
        await t.ops.init()
        for (let i = 1; i <= n; i += 400) {
          const rows = Array.from({ length: Math.min(400, n - i + 1) }, (_, k) => i + k)
          await t.app
            .insertInto(t.table)
            .values(
              rows.map((id) => ({
                id: String(id),
                name: `m${id}`,
                email: `m${id}@x.io`,
                ssn: `123-45-${id}`,
              })),
            )
            .execute()
        }
      })
      afterAll(async () => {
        await t?.destroy()
      })

      // On MySQL the key is selected as its text under the column's name: ordering by that name
      // sorted '10' before '9', while the pages' `id > last` compares integers, so pages skipped rows.
      it('verify, status and retire count every row (1 to 1200): a row left on the former index version is found', async () => {
        await t.ops.rotate(t.table, { purpose: 'index', reencrypt: false })
        const before = await t.raw
          .selectFrom(t.table)
          .select(['email_bidx', 'ssn_bidx'])
          .where('id', '=', '500')
          .executeTakeFirstOrThrow()
        expect(await t.ops.reencrypt(t.table, { batchSize: 300 })).toMatchObject({
          rows: n,
          rewritten: n,
          remainingBatches: 0,
        })
        // An application instance with stale key metadata wrote row 500's indexes under v1.
        await t.raw.updateTable(t.table).set(before).where('id', '=', '500').execute()
        const v = await t.ops.verify(t.table)
        expect(v).toMatchObject({ rows: n, indexVersions: { 1: 2, 2: 2 * n - 2 } })
        const s = await t.ops.status({ exact: true })
        expect(s.tables[0]!.rowsByIndexVersion).toEqual({ 1: 1, 2: n - 1 })
        const refused = await retireWhenDue(t.ops, t.table, { purpose: 'index', version: 1 }).catch(
          (e: unknown) => e,
        )
        expect(refused).toMatchObject({ code: 'RETIRE_REFUSED', rows: 1 })
      })
    })
  },
)

describe.each(backends().filter((b) => b.name === 'mysql'))(
  'ops fixes: MariaDB snapshot isolation (ER_CHECKREAD 1020) [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      let t: OpsTestDb
      let supported = false
      beforeAll(async () => {
        t = await opsTestDb(backend)
        const v = await sql<{
          n: number
        }>`select count(*) as n from information_schema.global_variables where variable_name = 'INNODB_SNAPSHOT_ISOLATION'`.execute(
          t.raw,
        )
        supported = Number(v.rows[0]?.n) > 0
        await t.ops.init()
        await t.insert(30)
      })
      afterAll(async () => {
        await t?.destroy()
      })

      it('a batch that meets ER_CHECKREAD is rolled back and run again; the application write stands', async (ctx) => {
        if (!supported) ctx.skip()
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        await pause(t.ttlMs * 2)
        const firstId = Number(
          (await t.raw.selectFrom(t.table).select('id').orderBy('id').limit(1).executeTakeFirstOrThrow()).id,
        )
        let fired = false
        const errnos: unknown[] = []
        const sessions = new Set<unknown>()
        const db = new Kysely<TestDB>({
          dialect: hooked(
            backend.createDialect(),
            async (query, run) => {
              // Every session of the job runs under snapshot isolation (MariaDB 11.6+'s default).
              if (!sessions.has(run)) {
                sessions.add(run)
                await run(CompiledQuery.raw('set session innodb_snapshot_isolation = on'))
              }
              if (!fired && /^update/i.test(query.sql) && query.sql.includes(t.table)) {
                fired = true
                await t.app
                  .updateTable(t.table)
                  .set({ email: 'changed@x.io' })
                  .where('id', '=', firstId)
                  .execute()
              }
            },
            (error) => errnos.push((error as { errno?: unknown }).errno),
          ),
        })
        try {
          const ops = t.moreOps({ db: db })
          const job = (await ops.reencrypt(t.table, { batchSize: 10 })) as JobResult
          expect(fired).toBe(true)
          expect(errnos).toContain(1020)
          expect(job).toMatchObject({ failed: 0, remainingBatches: 0 })
          const row = await t.app
            .selectFrom(t.table)
            .select('email')
            .where('id', '=', firstId)
            .executeTakeFirstOrThrow()
          expect(row.email).toBe('changed@x.io')
          expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { 2: 60 } })
        } finally {
          await db.destroy()
        }
      })
    })
  },
)
