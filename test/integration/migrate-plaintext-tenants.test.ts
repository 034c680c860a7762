import { describe, expect, it } from 'vitest'
import type { EncryptColumnDryRun, JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import {
  backfillMovingRow,
  expectCopiedCiphertextRepaired,
  insertWithContext,
  updateWithContext,
  useContextMigration,
} from '../support/context-migration.js'

/**
 * Issues 15 and 16: a plaintext column moved to an encrypted one on a table with per-tenant keys
 * (`keyScope: 'org_id'`, `context: ['org_id', 'id']`). The backfill writes each row under the keys
 * of the tenant it holds as read, bound to its context; a row moved to another tenant under the job
 * is written under its new tenant's keys; searches name the tenant.
 */
const ROWS = 30
const ORGS = ['org0', 'org1', 'org2', 'org9']

describe.each(backends())(
  'moving a plaintext column to encrypted on a table with per-tenant keys [$name]',
  { timeout: 300_000 },
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      /** `model`: id → [org, email], what the application wrote. */
      const { t, model } = useContextMigration(backend, ROWS, { keyScope: 'org_id', init: { tenants: ORGS } })

      /** Every row reads back as the model holds it, and each search (by tenant and email) finds its own row only. */
      const expectModel = async (phase: 'dual-writing' | 'cut-over') => {
        const db = t.app(phase)
        for (const org of ORGS) {
          const rows = await db
            .selectFrom(t.table)
            .select(['id', 'email'])
            .where('org_id', '=', org)
            .execute()
          const mine = [...model].filter(([, [o]]) => o === org)
          expect(new Map(rows.map((r) => [Number(r.id), r.email as string]))).toEqual(
            new Map(mine.map(([id, [, email]]) => [id, email])),
          )
          for (const [id, [, email]] of mine) {
            const found = await db
              .selectFrom(t.table)
              .select('id')
              .where('org_id', '=', org)
              .where('email', '=', email)
              .execute()
            expect({ email, ids: found.map((r) => Number(r.id)) }).toEqual({ email, ids: [id] })
          }
        }
      }

      it('dual-writing: inserts and updates name the tenant; searches by tenant find the rows', async () => {
        const db = t.app('dual-writing')
        await insertWithContext(t, 'dual-writing', model, [1001, 'org1', 'ins@x.io'])
        await updateWithContext(t, 'dual-writing', model, [2, 'org1', 'upd@x.io'])
        // A search must name the tenant (blind indexes differ per tenant); under NOT it is refused
        // even so (the exact-tenant guard would turn around), as for any encrypted column.
        await expect(
          db.selectFrom(t.table).select('id').where('email', '=', 'upd@x.io').execute(),
        ).rejects.toMatchObject({ code: 'TENANT_REQUIRED' })
        await expect(
          db
            .selectFrom(t.table)
            .select('id')
            .where('org_id', '=', 'org1')
            .where((eb) => eb.not(eb('email', '=', 'upd@x.io')))
            .execute(),
        ).rejects.toMatchObject({ code: 'TENANT_REQUIRED' })
        await expectModel('dual-writing')
        const dry = (await t
          .ops('dual-writing')
          .encryptColumn(t.table, 'email', { dryRun: true })) as EncryptColumnDryRun
        expect(dry).toMatchObject({ failed: 0, wouldRewrite: ROWS - 1 })
      })

      it.runIf(backend.name !== 'pglite')(
        "compare-and-set: a row moved to another tenant under the backfill is written under its new tenant's keys",
        async () => {
          // Row 4, not backfilled yet, moves from org0 to org9.
          const job = await backfillMovingRow(t, model, { id: 4, org: 'org9' })
          // Its write matched nothing; read again (under org9's keys, loaded then), it was written
          // under them and bound to org9: verify decrypts it with its row's tenant and context.
          expect(job).toMatchObject({ failed: 0, remainingBatches: 0 })
          expect(await t.ops('dual-writing').verifyColumn(t.table, 'email')).toMatchObject({
            ok: true,
            failed: 0,
          })
        },
      )

      it("dual-writing: the backfill writes each row under its tenant's keys; verify passes and flags a ciphertext copied from another tenant", async () => {
        const ops = t.ops('dual-writing')
        expect(await ops.encryptColumn(t.table, 'email', { batchSize: 7 })).toMatchObject({
          failed: 0,
          remainingBatches: 0,
        })
        expect(await ops.verifyColumn(t.table, 'email')).toMatchObject({
          ok: true,
          missing: 0,
          failed: 0,
          equal: model.size,
        })
        // Row 5 (org1) gets row 6's ciphertext (org2's key, org2's context).
        await expectCopiedCiphertextRepaired(t, ops, { from: 6, to: 5 })
        await expectModel('dual-writing')
      })

      it("verify of one tenant checks that tenant's rows of a column under migration, not another's", async () => {
        const ops = t.ops('dual-writing')
        const [id, [org, email]] = [...model].find(([, [o]]) => o === 'org2') as [number, [string, string]]
        const org1Rows = [...model.values()].filter(([o]) => o === 'org1').length
        // An org2 row whose plaintext no longer matches its ciphertext (as an `added` process leaves it).
        await t.raw.updateTable(t.table).set({ email: 'changed@x.io' }).where('id', '=', id).execute()
        try {
          const mine = await ops.verify(t.table, { tenant: 'org1' })
          expect(mine).toMatchObject({ ok: true, rows: org1Rows })
          expect(mine.migrating).toMatchObject([{ ok: true, rows: org1Rows, failed: 0 }])
          const theirs = await ops.verify(t.table, { tenant: org })
          expect(theirs.ok).toBe(false)
          expect(theirs.migrating[0]?.failures.map((f) => Number(f.key))).toEqual([id])
        } finally {
          await t.raw.updateTable(t.table).set({ email }).where('id', '=', id).execute()
        }
      })

      it('cut-over: reads and searches by tenant decrypt under its keys', async () => {
        await t.migrate('cutover', 'cut-over')
        await insertWithContext(t, 'cut-over', model, [1002, 'org2', 'cut@x.io'])
        await expectModel('cut-over')
        expect(await t.ops('cut-over').verifyColumn(t.table, 'email')).toMatchObject({ ok: true, failed: 0 })
      })

      it("a shredded tenant's rows are counted apart by the backfill, never written; verify reports them KEY_DESTROYED", async () => {
        const ops = t.ops('cut-over')
        await ops.shred(t.table, { tenant: 'org2' })
        const org2 = [...model].filter(([, [o]]) => o === 'org2').map(([id]) => id)
        const before = await t.raw
          .selectFrom(t.table)
          .select(['id', 'email_encrypted'])
          .where('org_id', '=', 'org2')
          .execute()
        const job = (await ops.encryptColumn(t.table, 'email')) as JobResult
        expect(job).toMatchObject({ failed: 0, rewritten: 0, shredded: org2.length })
        expect(
          await t.raw
            .selectFrom(t.table)
            .select(['id', 'email_encrypted'])
            .where('org_id', '=', 'org2')
            .execute(),
        ).toEqual(before)
        const verify = await ops.verifyColumn(t.table, 'email')
        expect(verify).toMatchObject({ ok: false, failed: org2.length })
        expect(new Set(verify.failures.map((f) => f.problems.join()))).toEqual(
          new Set(['email_encrypted: KEY_DESTROYED']),
        )
      })
    })
  },
)
