import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initExit } from '../../src/cli/commands/init.js'
import { retireExit } from '../../src/cli/commands/retire.js'
import { rotateExit } from '../../src/cli/commands/rotate.js'
import { verifyExit } from '../../src/cli/commands/verify.js'
import { EXIT } from '../../src/cli/output.js'
import { type Backend, backends } from '../support/backends.js'
import { useOpsTestDb } from '../support/ops-db.js'
import { type TenantFixture, tenantFixture } from '../support/tenant-fixture.js'

/** A signal that aborts at the first progress step: the operation is stopped part way. */
function stopAtFirstStep(): { signal: AbortSignal; onProgress: () => void } {
  const stop = new AbortController()
  return { signal: stop.signal, onProgress: () => stop.abort() }
}

/**
 * Operations stopped by their signal (SIGINT/SIGTERM in `kfe`) say so in their result, decide
 * nothing on a partial count, and `kfe` exits 2 (needs attention), not 0.
 */
describe.each(backends())('ops stopped by their signal [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { rows: 20 })

    it('retire stopped while it counts: stopped, not retired, no refusal on the partial count; kfe exits 2', async () => {
      await t.ops.rotate(t.table, { purpose: 'data', reencrypt: false })
      // 20 rows still use data version 1: a finished count would refuse (RETIRE_REFUSED).
      const r = await t.ops.retire(t.table, { purpose: 'data', version: 1, ...stopAtFirstStep() })
      expect(r).toMatchObject({ stopped: true, retired: false, dryRun: false, forced: false })
      expect(retireExit(r)).toBe(EXIT.attention)
      const forced = await t.ops.retire(t.table, {
        purpose: 'data',
        version: 1,
        force: true,
        ...stopAtFirstStep(),
      })
      expect(forced).toMatchObject({ stopped: true, retired: false, forced: false })
    })

    it('verify stopped part way: stopped, not ok, no row failed; kfe exits 2 (not 1, not 0)', async () => {
      const v = await t.ops.verify(t.table, { pageSize: 5, ...stopAtFirstStep() })
      expect(v).toMatchObject({ stopped: true, ok: false, failed: 0, rows: 5 })
      expect(verifyExit(v)).toBe(EXIT.attention)
      const all = await t.ops.verify(t.table)
      expect(all).toMatchObject({ stopped: false, ok: true, rows: 20 })
      expect(verifyExit(all)).toBe(EXIT.ok)
    })

    it('status --exact stopped part way: the table says its counts are partial (needs attention)', async () => {
      const s = await t.ops.status({ exact: true, ...stopAtFirstStep() })
      expect(s.tables[0]).toMatchObject({ stopped: true })
      expect(s.tables[0]!.attention.join('\n')).toContain('the row count was stopped after')
      expect(s.needsAttention).toBe(true)
      expect((await t.ops.status({ exact: true })).tables[0]).toMatchObject({ stopped: false, rows: 20 })
    })
  })
})

describe.each(backends())(
  'rotate --index with a rotation slot, stopped in its backfill [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const t = useOpsTestDb(backend, { rows: 20, rotationSlot: true })

      it('the result is interrupted, says what is left and carries the backfill job; kfe exits 2', async () => {
        const stop = new AbortController()
        const r = await t.ops.rotate(t.table, {
          purpose: 'index',
          batchSize: 5,
          signal: stop.signal,
          onProgress: (p) => {
            if (p.phase === 'batch') stop.abort()
          },
        })
        expect(r).toMatchObject({
          version: 2,
          state: 'staged',
          interrupted: true,
          reencrypt: { stopped: true, batches: 1 },
        })
        const left = r.reencrypt?.remainingBatches ?? 0
        expect(left).toBeGreaterThan(0)
        expect(r.left).toContain('version 2 is staged, not active')
        expect(r.left).toContain(`${left} backfill batches are left`)
        expect(rotateExit(r)).toBe(EXIT.attention)
        // The same call finishes the backfill and activates the version.
        const again = await t.ops.rotate(t.table, { purpose: 'index', batchSize: 5 })
        expect(again).toMatchObject({ version: 2, state: 'active', interrupted: false })
        expect(rotateExit(again)).toBe(EXIT.ok)
      })
    })
  },
)

describe.each(backends())('init stopped by its signal [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    beforeAll(async () => {
      t = await tenantFixture(backend, { app: { createTenantKeys: false } })
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('init stopped after its first tenant: stopped, the keys it reached only; kfe exits 2; the same call creates the rest', async () => {
      const tenants = ['acme', 'globex', 'initech']
      const r = await t.ops.init({ tables: [t.table], tenants, ...stopAtFirstStep() })
      expect(r).toMatchObject({ stopped: true, created: 2 })
      expect(r.keys.map((k) => k.tenant)).toEqual(['acme', 'acme'])
      expect(initExit(r)).toBe(EXIT.attention)
      const rest = await t.ops.init({ tables: [t.table], tenants })
      expect(rest).toMatchObject({ stopped: false, created: 4 })
      expect(initExit(rest)).toBe(EXIT.ok)
    })
  })
})
