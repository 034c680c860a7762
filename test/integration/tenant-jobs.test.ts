import { randomUUID } from 'node:crypto'
import { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { OperationError } from '../../src/index.js'
import type { JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { kmsFixture } from '../support/providers.js'
import { type TenantFixture, tenantFixture } from '../support/tenant-fixture.js'

/**
 * The re-encryption job over per-tenant keys: compare-and-set when a row moves to another tenant
 * under the job, pause and resume on a KMS outage, and provider calls bounded by tenant keys.
 */
describe.each(backends())('per-tenant re-encryption jobs [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    let kms: Awaited<ReturnType<typeof kmsFixture>>
    beforeAll(async () => {
      kms = await kmsFixture()
      t = await tenantFixture(backend, { provider: kms.provider })
    })
    afterAll(async () => {
      await t?.destroy()
      await kms?.cleanup()
    })

    it.runIf(backend.name !== 'pglite')(
      "compare-and-set: a row moved to another tenant between the job's read and its write is never written under the former tenant's keys",
      async () => {
        const moved = await t.order('ma', 'm1@x.io')
        const kept = await t.order('ma', 'm2@x.io')
        await t.order('mb', 'm3@x.io')
        await t.ops.rotate(t.table, { purpose: 'data', tenant: 'ma', reencrypt: false })
        await t.settle() // the application writes with ma's version 2 from now on
        let fired = false
        const db = new Kysely<TestDB>({
          dialect: hooked(t.extraDialect(), async (query) => {
            if (!fired && /^(with w as \()?update/i.test(query.sql) && query.sql.includes(t.table)) {
              fired = true
              // The application moves the row to tenant mb, rewriting its bound columns (under mb's keys).
              await t.db
                .updateTable(t.table)
                .set({ tenant_id: 'mb', email: 'moved@x.io', ssn: '987-65-4321' })
                .where('tenant_id', '=', 'ma')
                .where('id', '=', moved)
                .execute()
            }
          }),
        })
        try {
          const job = (await t.moreOps({ db }).reencrypt(t.table, { tenant: 'ma' })) as JobResult
          expect(fired).toBe(true)
          // Its write was skipped; read again, it is mb's row now: not this job's, left as the application wrote it.
          expect(job).toMatchObject({ rows: 2, conflicts: 1, rewritten: 1, failed: 0 })
          expect(await t.dataVersion(kept)).toBe(2)
          expect(await t.dataVersion(moved)).toBe(1) // mb's active version
          const row = await t.db
            .selectFrom(t.table)
            .select(['tenant_id', 'email'])
            .where('tenant_id', '=', 'mb')
            .where('id', '=', moved)
            .executeTakeFirstOrThrow()
          expect(row).toEqual({ tenant_id: 'mb', email: 'moved@x.io' })
          expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, failed: 0 })
        } finally {
          await db.destroy()
        }
      },
    )

    it('stops with JOB_PAUSED when the KMS fails while a batch needs a tenant key, and the next run resumes', async () => {
      const tenants = Array.from({ length: 8 }, (_, i) => `p${i}`)
      for (const tenant of tenants) await t.order(tenant, `${tenant}@x.io`)
      await t.ops.rotateTenants(t.table, { purpose: 'data', reencrypt: false })
      await t.settle()
      // The KMS goes down after batch `stop` (one row each, in primary-key order), where the next
      // row is the first of a tenant no batch has met: its batch must unwrap that tenant's keys. (Ids
      // are random UUIDs, and rows of an earlier test share tenants: a tenant met a moment before
      // may still have a live copy, even with a 1 ms TTL.)
      const order = await t.raw.selectFrom(t.table).select('tenant_id').orderBy('id').execute()
      const stop = order.findIndex(
        (r, i) => i >= 2 && !order.slice(0, i).some((o) => o.tenant_id === r.tenant_id),
      )
      expect(stop).toBeGreaterThanOrEqual(2)
      // A fresh machine whose key copies live 1 ms: each tenant's first batch unwraps its keys.
      const ops = t.moreOps({ cache: { ttlMs: 1, graceMs: 0 } })
      const error = await ops
        .reencrypt(t.table, {
          batchSize: 1,
          onProgress: (p) => {
            if (p.phase === 'batch' && p.done === stop) kms.fault.down()
          },
        })
        .catch((e: unknown) => e)
      kms.fault.up()
      expect(error).toBeInstanceOf(OperationError)
      expect(error).toMatchObject({ code: 'JOB_PAUSED' })
      const done = await t.raw.selectFrom(`${t.jobsTable}_batches`).select(['job_id', 'done']).execute()
      expect(done.filter((b) => b.job_id === `reencrypt:${t.table}` && Number(b.done) === 1)).toHaveLength(
        stop,
      )
      const job = (await ops.reencrypt(t.table, { batchSize: 1 })) as JobResult
      expect(job).toMatchObject({ planned: false, failed: 0, remainingBatches: 0 })
      const st = (await t.ops.status({ table: t.table, exact: true })).tables[0]!
      expect(st.tenants?.rowsNotOnActive).toBe(0)
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, failed: 0 })
    })

    it('unwraps each tenant key at most once per cache TTL over a whole-table job, however small the key ring cache', async () => {
      const tenants = Array.from({ length: 40 }, (_, i) => `s${String(i).padStart(2, '0')}`)
      for (const tenant of tenants) {
        await t.order(tenant, `${tenant}-1@x.io`)
        await t.order(tenant, `${tenant}-2@x.io`, '111-22-3333')
      }
      await t.ops.rotateTenants(t.table, { purpose: 'data', reencrypt: false })
      await t.settle()
      // Another machine whose ring holds 10 keys: its job keeps its own copies per tenant.
      const ops = t.moreOps({ cache: { max: 10, ttlMs: 600_000 } })
      const before = kms.calls()
      const job = (await ops.reencrypt(t.table, { batchSize: 5 })) as JobResult
      const calls = kms.calls() - before
      expect(job).toMatchObject({ failed: 0, remainingBatches: 0 })
      expect(job.rewritten).toBeGreaterThanOrEqual(80)
      // Live keys of the table's tenants: data v1 (decrypt-only) and v2, index v1, per tenant.
      const keys = await t.raw
        .selectFrom(t.keyTable)
        .select('logical_table')
        .where('logical_table', 'like', `${t.table}#%`)
        .where('state', '<>', 'destroyed')
        .execute()
      expect(calls).toBeGreaterThanOrEqual(tenants.length * 3)
      expect(calls).toBeLessThanOrEqual(keys.length)
    })

    it('a whole-table job interrupted before a rotation of the tenants is planned again, not resumed: no row is left on a former version', async () => {
      for (const tenant of ['r0', 'r1', 'r2', 'r3', 'r4', 'r5']) {
        await t.order(tenant, `${tenant}-a@x.io`)
        await t.order(tenant, `${tenant}-b@x.io`)
      }
      await t.ops.rotateTenants(t.table, { purpose: 'data', reencrypt: false })
      await t.settle()
      // A job table made before key generations (0.1): the next job adds the column.
      await t.raw.schema.alterTable(t.jobsTable).dropColumn('key_generation').execute()
      const stop = new AbortController()
      const first = (await t.ops.reencrypt(t.table, {
        batchSize: 2,
        signal: stop.signal,
        onProgress: (p) => {
          if (p.phase === 'batch' && p.done === 3) stop.abort()
        },
      })) as JobResult
      expect(first).toMatchObject({ stopped: true, rewritten: 6 })
      // Every tenant is rotated again: the rows the interrupted job already moved are behind again.
      const rotated = await t.ops.rotateTenants(t.table, { purpose: 'data' })
      expect(rotated.reencrypt).toMatchObject({ planned: true, failed: 0, remainingBatches: 0 })
      expect(rotated.reencrypt?.replaced).toMatchObject({ doneBatches: 3 })
      const st = (await t.ops.status({ table: t.table, exact: true })).tables[0]!
      expect(st.tenants?.rowsNotOnActive).toBe(0)
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, failed: 0 })
    })

    it("a row whose tenant names no keys ('', written around the application) is counted, not an error of the whole table", async () => {
      const empty = randomUUID()
      const copied = randomUUID()
      const source = await t.order('e1', 'e1@x.io')
      const stored = await t.raw
        .selectFrom(t.table)
        .select(['email', 'ssn'])
        .where('id', '=', source)
        .executeTakeFirstOrThrow()
      await t.raw.insertInto(t.table).values({ id: empty, tenant_id: '', name: 'legacy' }).execute()
      try {
        // Without a ciphertext: nothing to read or write.
        expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, failed: 0 })
        expect(await t.ops.reencrypt(t.table, { dryRun: true })).toMatchObject({ failed: 0 })
        expect(await t.ops.reencrypt(t.table)).toMatchObject({ failed: 0, remainingBatches: 0 })
        expect((await t.ops.status({ table: t.table, exact: true })).tables[0]).toBeDefined()
        // With one (copied from another tenant's row): that row fails, the others are done.
        await t.raw
          .insertInto(t.table)
          .values({ id: copied, tenant_id: '', name: 'copied', ...stored })
          .execute()
        expect(await t.ops.verify(t.table)).toMatchObject({ ok: false, failed: 1 })
        expect(await t.ops.reencrypt(t.table, { dryRun: true })).toMatchObject({ failed: 1 })
        expect(await t.ops.reencrypt(t.table)).toMatchObject({ failed: 1, remainingBatches: 0 })
      } finally {
        await t.raw.deleteFrom(t.table).where('id', 'in', [empty, copied]).execute()
      }
    })

    it.runIf(backend.name !== 'pglite')(
      'a run after a rotation replaces the job a worker is in the middle of writing (on MariaDB after a deadlock with that worker, again): no row is left on a former version',
      async () => {
        for (const tenant of ['q0', 'q1', 'q2', 'q3']) {
          for (let i = 0; i < 3; i++) await t.order(tenant, `${tenant}-${i}@x.io`)
        }
        await t.ops.rotateTenants(t.table, { purpose: 'data', reencrypt: false })
        await t.settle()
        let reached!: () => void
        const atWrite = new Promise<void>((resolve) => (reached = resolve))
        let release!: () => void
        const released = new Promise<void>((resolve) => (release = resolve))
        let paused = false
        let bDb: Kysely<TestDB> | undefined
        const db = new Kysely<TestDB>({
          dialect: hooked(t.extraDialect(), async (query) => {
            if (!paused && /^(with w as \()?update/i.test(query.sql) && query.sql.includes(t.table)) {
              paused = true
              reached()
              await released
            }
          }),
        })
        try {
          // Worker A holds its first batch (and its lock) while a tenant is rotated and B starts.
          const a = t.moreOps({ db }).reencrypt(t.table, { batchSize: 5 }) as Promise<JobResult>
          await atWrite
          await t.ops.rotate(t.table, { purpose: 'data', tenant: 'q1', reencrypt: false })
          await t.settle()
          // B replaces the job once it sends the delete of its batches (after reading the job row
          // as running, under its lock): A's batch is let go only then, whatever B's start-up took.
          let replacing!: () => void
          const atDelete = new Promise<void>((resolve) => (replacing = resolve))
          bDb = new Kysely<TestDB>({
            dialect: hooked(t.extraDialect(), async (query) => {
              if (/^delete from/i.test(query.sql) && query.sql.includes(`${t.jobsTable}_batches`)) replacing()
            }),
          })
          const b = t.moreOps({ db: bDb }).reencrypt(t.table, { batchSize: 5 }) as Promise<JobResult>
          await atDelete
          // Time for the delete to reach the server and wait on A's batch lock.
          await new Promise((resolve) => setTimeout(resolve, 100))
          release()
          const [ra, rb] = await Promise.all([a, b])
          expect(rb).toMatchObject({ planned: true, failed: 0, remainingBatches: 0 })
          expect(rb.replaced).toBeDefined()
          expect(ra).toMatchObject({ failed: 0 })
          const st = (await t.ops.status({ table: t.table, exact: true })).tables[0]!
          expect(st.tenants?.rowsNotOnActive).toBe(0)
        } finally {
          release()
          await db.destroy()
          await bDb?.destroy()
        }
      },
    )
  })
})

/**
 * A per-tenant batch written in parts (500 rows or more: parts of 250; job-batch.ts): a part whose
 * rows name a tenant whose keys the worker has not loaded, after an earlier part was written.
 */
describe.each(backends())('per-tenant re-encryption in parts [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    beforeAll(async () => {
      t = await tenantFixture(backend)
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it("rolls the batch back when a later part needs another tenant's keys, loads them and writes the whole batch again", async () => {
      // Ids sort in insertion order: batch 1 is 500 rows of tenant pa; batch 2 is 250 rows of pa
      // (its first part) then 250 of pb (its second part).
      const rows = Array.from({ length: 1000 }, (_, i) => ({
        id: `k-${String(i).padStart(4, '0')}`,
        tenant_id: i < 750 ? 'pa' : 'pb',
        name: 'o',
        email: `r${i}@x.io`,
        ssn: `${100 + (i % 800)}-45-6789`,
      }))
      for (let i = 0; i < rows.length; i += 100)
        await t.db
          .insertInto(t.table)
          .values(rows.slice(i, i + 100))
          .execute()
      await t.ops.rotateTenants(t.table, { purpose: 'data', reencrypt: false })
      await t.settle()
      let parts = 0
      const counted = backend.name !== 'pglite'
      const db = counted
        ? new Kysely<TestDB>({
            dialect: hooked(t.extraDialect(), async (query) => {
              if (/^(with w as \()?update/i.test(query.sql) && query.sql.includes(t.table)) parts++
            }),
          })
        : undefined
      try {
        // Another machine: no tenant's keys loaded when the job starts.
        const job = (await t
          .moreOps(db === undefined ? {} : { db })
          .reencrypt(t.table, { batchSize: 500 })) as JobResult
        expect(job).toMatchObject({
          rows: 1000,
          rewritten: 1000,
          conflicts: 0,
          failed: 0,
          remainingBatches: 0,
        })
        // Batch 1: no part written before pa's keys were loaded, then two parts. Batch 2: its
        // first part written, rolled back when the second named pb, then both parts again.
        if (counted) expect(parts).toBe(5)
      } finally {
        await db?.destroy()
      }
      for (const id of ['k-0000', 'k-0499', 'k-0500', 'k-0749', 'k-0750', 'k-0999'])
        expect(await t.dataVersion(id)).toBe(2)
      const read = await t.db
        .selectFrom(t.table)
        .select(['id', 'email'])
        .where('tenant_id', '=', 'pb')
        .orderBy('id')
        .execute()
      expect(read.map((r) => r.email)).toEqual(rows.slice(750).map((r) => r.email))
      const st = (await t.ops.status({ table: t.table, exact: true })).tables[0]!
      expect(st.tenants?.rowsNotOnActive).toBe(0)
      expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, failed: 0, rows: 1000 })
    })
  })
})
