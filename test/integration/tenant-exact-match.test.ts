import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobResult } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import { type TenantFixture, tenantFixture } from '../support/tenant-fixture.js'

/**
 * The ops restricted to one tenant (`--tenant acme`) read the rows whose tenant is exactly that
 * value. MariaDB's default collation (`utf8mb4_general_ci`, the fixture's `varchar(64)`) also
 * matches `'ACME'` and `'acme '` to `tenant_id = 'acme'`: those rows are other tenants (their own
 * keys, their own jobs), and were counted as `acme`'s failures (verify, status) and rows (jobs).
 */
describe.each(backends())('one tenant is matched exactly by the ops [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    beforeAll(async () => {
      t = await tenantFixture(backend)
      await t.order('acme', 'a1@x.io')
      await t.order('acme', 'a2@x.io')
      await t.order('ACME', 'upper@x.io')
      await t.order('acme ', 'padded@x.io')
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it("verify and status of one tenant see only that tenant's rows", async () => {
      const checked = await t.ops.verify(t.table, { tenant: 'acme' })
      expect(checked).toMatchObject({ rows: 2, failed: 0, ok: true })
      const st = (await t.ops.status({ table: t.table, tenant: 'acme', exact: true })).tables[0]!
      expect(st).toMatchObject({ rows: 2, scanned: 2, failedRows: 0 })
      expect(st.attention.some((a) => a.includes('fail'))).toBe(false)
      expect(await t.ops.verify(t.table, { tenant: 'ACME' })).toMatchObject({ rows: 1, failed: 0, ok: true })
    })

    it("a re-encryption of one tenant reads and rewrites only that tenant's rows", async () => {
      await t.ops.rotate(t.table, { purpose: 'data', tenant: 'acme', reencrypt: false })
      await t.settle()
      const job = (await t.ops.reencrypt(t.table, { tenant: 'acme' })) as JobResult
      expect(job).toMatchObject({ rows: 2, rewritten: 2, failed: 0 })
      const versions = await t.raw.selectFrom(t.table).select(['tenant_id', 'id']).execute()
      for (const row of versions)
        expect(await t.dataVersion(row.id as string)).toBe(row.tenant_id === 'acme' ? 2 : 1)
      // Every tenant still reads its own rows.
      expect(await t.byEmail('ACME', 'upper@x.io')).toHaveLength(1)
      expect(await t.byEmail('acme', 'a2@x.io')).toHaveLength(1)
    })

    it("a shred of one tenant destroys only that tenant's keys (the key table compares names exactly)", async () => {
      const done = await t.ops.shred(t.table, { tenant: 'acme' })
      expect(done).toMatchObject({ keyName: t.keyName('acme'), destroyed: 3 }) // data v1, v2, index v1
      t.encryption.keyRing().forget(t.keyName('acme'))
      expect(await t.byEmail('ACME', 'upper@x.io')).toHaveLength(1)
      expect(await t.byEmail('acme ', 'padded@x.io')).toHaveLength(1)
      // acme's rows are unreadable by design (shredded), not failures; the others read.
      expect(await t.ops.verify(t.table)).toMatchObject({ rows: 4, shredded: 2, failed: 0 })
    })
  })
})
