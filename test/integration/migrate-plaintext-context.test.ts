import { describe, expect, it } from 'vitest'
import type { JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import {
  backfillMovingRow,
  copyCiphertext,
  expectCopiedCiphertextRepaired,
  insertWithContext,
  updateWithContext,
  useContextMigration,
} from '../support/context-migration.js'

/**
 * Issues 15 and 16: a plaintext column moved to an encrypted one on a table with a row context
 * (`context: ['org_id', 'id']`). The backfill binds each row's context into the ciphertext it
 * writes and matches it in its compare-and-set; verify decrypts with it; the application's reads,
 * searches and writes keep their context rules in every phase.
 */
const ROWS = 60

describe.each(backends())(
  'moving a plaintext column to encrypted on a table with a row context [$name]',
  { timeout: 300_000 },
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      /** `model`: id → [org, email], what the application wrote. */
      const { t, model } = useContextMigration(backend, ROWS)

      /** The ids a search by `email` returns in `phase`. */
      const search = async (phase: 'dual-writing' | 'cut-over', email: string) =>
        (await t.app(phase).selectFrom(t.table).select('id').where('email', '=', email).execute()).map((r) =>
          Number(r.id),
        )
      /** Every row reads back as the model holds it, and a sample of searches finds its own row only. */
      const expectModel = async (phase: 'dual-writing' | 'cut-over') => {
        const rows = await t.app(phase).selectFrom(t.table).select(['id', 'org_id', 'email']).execute()
        expect(new Map(rows.map((r) => [Number(r.id), [String(r.org_id), r.email as string]]))).toEqual(model)
        for (const [id, [, email]] of [...model].filter((_, i) => i % 7 === 0))
          expect({ email, ids: await search(phase, email) }).toEqual({ email, ids: [id] })
        expect(await search(phase, 'nobody@x.io')).toEqual([])
      }
      /** Inserts a row with its context; an update of `email` by primary key alone (row `unbound`) is refused, nothing sent. */
      const insertAndRefuseUnbound = async (
        phase: 'dual-writing' | 'cut-over',
        [id, org, email]: [number, string, string],
        unbound: number,
      ) => {
        await insertWithContext(t, phase, model, [id, org, email])
        await expect(
          t.app(phase).updateTable(t.table).set({ email: 'nope@x.io' }).where('id', '=', unbound).execute(),
        ).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
      }

      it('dual-writing: writes carry the context; an update of the column must fix every context column by equality', async () => {
        // The plaintext column's update writes the encrypted one too: refused without the row's context.
        await insertAndRefuseUnbound('dual-writing', [1001, 'org1', 'ins@x.io'], 2)
        await updateWithContext(t, 'dual-writing', model, [2, 'org1', 'upd@x.io'])
        await expectModel('dual-writing')
      })

      it.runIf(backend.name !== 'pglite')(
        "compare-and-set: a row moved to another context between the backfill's read and its write is written with its new one, not the former",
        async () => {
          // Row 4, not backfilled yet, moves from org0 to org9.
          const job = await backfillMovingRow(t, model, { id: 4, org: 'org9' })
          // Row 4's write was skipped; read again, and written bound to org9.
          expect(job).toMatchObject({ conflicts: 1, failed: 0, remainingBatches: 0 })
          const verify = await t.ops('dual-writing').verifyColumn(t.table, 'email')
          expect(verify).toMatchObject({ ok: true, missing: 0, failed: 0 })
        },
      )

      it('dual-writing: the backfill binds each row context; verify passes, and flags a ciphertext copied to another row', async () => {
        const ops = t.ops('dual-writing')
        const job = (await ops.encryptColumn(t.table, 'email', { batchSize: 25 })) as JobResult
        expect(job).toMatchObject({ failed: 0, remainingBatches: 0 })
        expect((await ops.verify(t.table)).migrating).toEqual([
          expect.objectContaining({ ok: true, missing: 0, failed: 0, equal: model.size }),
        ])
        // Row 5 (org1) gets row 6's ciphertext (org2): it does not decrypt under row 5's context.
        await expectCopiedCiphertextRepaired(t, ops, { from: 6, to: 5 })
        expect(await ops.status({ table: t.table })).toMatchObject({
          tables: [{ migrations: [expect.objectContaining({ share: 1 })] }],
        })
        await expectModel('dual-writing')
      })

      it('cut-over: reads and searches decrypt with the row context; a copied ciphertext fails DECRYPT_AUTH_FAILED', async () => {
        await t.migrate('cutover', 'cut-over')
        const db = t.app('cut-over')
        await insertAndRefuseUnbound('cut-over', [1002, 'org2', 'cut@x.io'], 7)
        await expectModel('cut-over')
        expect(await t.ops('cut-over').verifyColumn(t.table, 'email')).toMatchObject({ ok: true, failed: 0 })
        await copyCiphertext(t, 9, 8)
        await expect(
          db.selectFrom(t.table).select('email').where('id', '=', 8).executeTakeFirst(),
        ).rejects.toMatchObject({ code: 'DECRYPT_AUTH_FAILED', rowContext: { org_id: 'org1', id: '8' } })
        // The other rows still read back.
        expect(
          await db.selectFrom(t.table).select('email').where('id', '=', 9).executeTakeFirstOrThrow(),
        ).toEqual({ email: model.get(9)?.[1] })
      })
    })
  },
)
