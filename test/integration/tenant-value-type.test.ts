import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted, KeyStore, localKeyProvider } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type TenantTable, tenantTable } from '../support/tenant-table.js'

/**
 * A tenant its table's scope column cannot hold (`acme` for an integer `tenant_id`, a typo) is
 * refused before its keys are made: TENANT_INVALID, nothing stored. PostgreSQL failed with its own
 * "invalid input syntax" (SQLSTATE 22P02); MySQL/MariaDB compared `'acme'` as 0, found no row, and
 * made keys for a tenant no row can have.
 */
describe.each(backends())('a tenant of the wrong type for its column [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const kek = randomBytes(32)
    let t: TenantTable
    beforeAll(async () => {
      t = await tenantTable(backend, {
        prefix: 'tenant_type',
        columns: { note: encrypted.text() },
        idType: 'integer',
        tenantType: 'integer',
        provider: () => localKeyProvider({ id: 'local:tenant-type', key: Buffer.from(kek) }),
      })
    }, 120_000)
    afterAll(async () => {
      await t?.destroy()
    })

    it("initTenant of 'acme' on an integer column is TENANT_INVALID and makes no key; 42 is made", async () => {
      const { encryption } = t.process()
      const error = await encryption.initTenant(t.raw, t.table, 'acme').catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'TENANT_INVALID', column: 'tenant_id' })
      expect((error as Error).message).toMatch(/tenant_id \((integer|int\(11\)|int)\)/)
      const store = new KeyStore(t.raw, { tableName: t.keyTable })
      expect(await store.listAll()).toEqual([])
      await encryption.initTenant(t.raw, t.table, 42)
      expect((await store.listAll()).map((k) => k.logicalTable)).toEqual([
        `${t.table}#tenant_id=42`,
        `${t.table}#tenant_id=42`,
      ])
    })
  })
})
