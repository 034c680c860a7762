import { CompiledQuery, Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { OperationError } from '../../src/index.js'
import { fieldEncryptionOps, type JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { type OpsTestDb, opsTestDb } from '../support/ops-db.js'

/**
 * A job worker reads the key metadata once and checks it against the key table at every claim (the
 * claim statement returns the key table's rows of the table), instead of re-reading it once per
 * metadata TTL: a key activated while the job runs stops the job at its next batch, however long
 * the TTL, and an unchanged key table costs no statement of its own per batch.
 */
describe.each(backends())(
  'ops: a job worker checks the key table at every claim [$name]',
  (backend: Backend) => {
    // PGlite has one connection: the activation below runs on another one while a batch is open.
    describe.runIf(backend.available && backend.name !== 'pglite')('', () => {
      let t: OpsTestDb
      beforeAll(async () => {
        t = await opsTestDb(backend)
        await t.ops.init()
        await t.insert(60)
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      })
      afterAll(async () => {
        await t?.destroy()
      })

      /** An ops instance with a metadata TTL of `ttlMs`, on a dialect observed by `before`. */
      const slowOps = (ttlMs: number, before: Parameters<typeof hooked>[1]) => {
        const db = new Kysely<TestDB>({ dialect: hooked(backend.createDialect(), before) })
        const ops = fieldEncryptionOps({
          db,
          schema: t.schema,
          keyProvider: t.provider,
          keyTable: t.keyTable,
          jobsTable: t.jobsTable,
          metadataTtlMs: ttlMs,
        })
        return { ops, db }
      }

      it('reads the key table once per worker while it does not change, even with a metadata TTL of 0', async () => {
        let keyReads = 0
        let claims = 0
        const { ops, db } = slowOps(0, async (query) => {
          if (/skip locked/i.test(query.sql)) claims++
          else if (query.sql.includes(t.keyTable)) keyReads++
        })
        try {
          const job = (await ops.reencrypt(t.table, { batchSize: 4 })) as JobResult
          expect(job).toMatchObject({ rewritten: 60, remainingBatches: 0 })
          expect(claims).toBeGreaterThanOrEqual(15)
          // Before the batches (the job's targets, its first key load, the worker's view, the first
          // unwrap of each version: 8 reads at a TTL of 0), none per batch (two each before).
          expect(keyReads).toBeLessThanOrEqual(10)
        } finally {
          // Not ops.close(): it would close the provider this suite shares.
          await db.destroy()
        }
      })

      it('a data key activated while the job runs stops it at its next claim (JOB_TARGET_CHANGED), with no batch after it written with the former key', async () => {
        // Rows on version 2, version 3 active (the job's target), version 4 staged: activated by
        // another process when the job claims its third batch.
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
        await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false, activateLater: true })
        let claims = 0
        let activated = false
        const { ops, db } = slowOps(3_600_000, async (query) => {
          if (!/skip locked/i.test(query.sql)) return
          claims++
          if (claims === 3 && !activated) {
            activated = true
            await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
          }
        })
        try {
          const error = await ops.reencrypt(t.table, { batchSize: 10 }).catch((e: unknown) => e)
          expect(activated).toBe(true)
          expect(error).toBeInstanceOf(OperationError)
          expect(error).toMatchObject({ code: 'JOB_TARGET_CHANGED' })
          // Two batches (20 rows, two ciphertexts each) were written with version 3, the job's
          // target, none after version 4 was activated (an hour of cached metadata would have
          // carried on with version 3).
          const done = await t.raw.selectFrom(`${t.jobsTable}_batches`).select('done').execute()
          expect(done.filter((b) => Number(b.done) === 1)).toHaveLength(2)
          expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { 2: 80, 3: 40 } })
          // A new run moves every row onto the version now active.
          const again = (await t.ops.reencrypt(t.table, { batchSize: 10 })) as JobResult
          expect(again).toMatchObject({ remainingBatches: 0 })
          expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { 4: 120 } })
        } finally {
          // Not ops.close(): it would close the provider this suite shares.
          await db.destroy()
        }
      })

      it.runIf(backend.family === 'mysql')(
        'a fingerprint that never matches (group_concat cut short) hands the worker back to per-TTL reads: the job completes',
        async () => {
          await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
          const cut = new WeakSet<object>()
          let keyReads = 0
          let claims = 0
          const { ops, db } = slowOps(0, async (query, run) => {
            // Once per session: the claim's group_concat is cut at 4 characters.
            if (!cut.has(run)) {
              cut.add(run)
              await run(CompiledQuery.raw('set session group_concat_max_len = 4'))
            }
            if (/skip locked/i.test(query.sql)) claims++
            else if (query.sql.includes(t.keyTable)) keyReads++
          })
          try {
            const job = (await ops.reencrypt(t.table, { batchSize: 4 })) as JobResult
            expect(job).toMatchObject({ rewritten: 60, failed: 0, remainingBatches: 0 })
            // Per-TTL reads (a TTL of 0: every batch) after the one reload that did not match.
            expect(keyReads).toBeGreaterThan(claims)
            expect(await t.ops.verify(t.table)).toMatchObject({ ok: true, dataVersions: { 5: 120 } })
          } finally {
            // Not ops.close(): it would close the provider this suite shares.
            await db.destroy()
          }
        },
      )
    })
  },
)
