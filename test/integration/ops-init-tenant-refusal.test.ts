import { describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { useOpsTestDb } from '../support/ops-db.js'

describe.each(backends())('init --tenant on a table without per-tenant keys [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend, { init: false })

    it('is refused (OPS_INVALID) before anything is created, the table named or not; without tenants it runs', async () => {
      for (const options of [{ tables: [t.table] }, {}]) {
        for (const dryRun of [false, true]) {
          await expect(t.ops.init({ ...options, tenants: ['acme'], dryRun })).rejects.toMatchObject({
            code: 'OPS_INVALID',
            message: expect.stringContaining('nothing was created'),
          })
        }
      }
      const init = await t.ops.init({ tables: [t.table] })
      expect(init).toMatchObject({ created: 2 })
      expect(init.keys.every((k) => k.tenant === undefined)).toBe(true)
    })
  })
})
