import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type TenantPair, tenantPair } from '../support/tenant-pair.js'

const TENANTS = 1000
const ROWS_PER_TENANT = 3
/** Rows per INSERT statement (100 tenants at a time). */
const BATCH = 300

/**
 * The key cache and the provider calls scale with the tenants a process touches, not with rows:
 * over 1,000 tenants, at most one provider call per tenant key per cache TTL.
 */
describe.each(backends())('per-tenant keys over 1,000 tenants [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let fx: TenantPair
    const tenant = (i: number) => `t${String(i).padStart(4, '0')}`

    beforeAll(async () => {
      fx = await tenantPair(backend, {
        prefix: 'tk_scale',
        // Two keys per tenant must fit, or evictions would cost provider calls again.
        shared: { cache: { max: 2 * TENANTS + 100, ttlMs: 10 * 60_000 }, metadataTtlMs: 10 * 60_000 },
      })
    }, 600_000)

    afterAll(async () => {
      await fx?.teardown()
    })

    it(`${TENANTS} tenants × ${ROWS_PER_TENANT} rows: one provider call per tenant key, not per row`, async () => {
      const { table, keyTable, raw, writer, reader, writerDb, readerDb } = fx
      const rows = Array.from({ length: TENANTS * ROWS_PER_TENANT }, (_, n) => ({
        id: n + 1,
        tenant_id: tenant(n % TENANTS),
        email: `user${n}@${tenant(n % TENANTS)}.io`,
      }))
      for (let i = 0; i < rows.length; i += BATCH) {
        await writerDb
          .insertInto(table)
          .values(rows.slice(i, i + BATCH))
          .execute()
      }
      // The writer created each tenant's data and index keys on its first write: 2 generations per
      // tenant and 2 unwraps proving their wrappings, and nothing more for its other rows.
      const created = writer.stats().keys!
      expect(created.providerCalls).toBe(4 * TENANTS)
      const keyNames = await raw
        .selectFrom(keyTable)
        .select((eb) => eb.fn.count('logical_table').distinct().as('n'))
        .executeTakeFirst()
      expect(Number(keyNames?.n)).toBe(TENANTS)

      // A process that never saw these keys reads every row of every tenant, twice.
      const all = await readerDb.selectFrom(table).select(['id', 'email']).orderBy('id').execute()
      expect(all).toHaveLength(TENANTS * ROWS_PER_TENANT)
      expect(all[5]).toEqual({ id: 6, email: `user5@${tenant(5)}.io` })
      const afterRead = reader.stats().keys!
      expect(afterRead.providerCalls).toBe(TENANTS) // one data key per tenant, for 3,000 rows
      expect(afterRead.metadataLoads).toBeLessThanOrEqual(TENANTS)
      await readerDb.selectFrom(table).select(['id', 'email']).execute()
      expect(reader.stats().keys!.providerCalls).toBe(TENANTS) // all cached

      // Searches of 100 tenants, 3 each: one index key per tenant searched.
      for (let t = 0; t < 100; t++) {
        for (let r = 0; r < ROWS_PER_TENANT; r++) {
          const n = t + r * TENANTS
          const found = await readerDb
            .selectFrom(table)
            .select('id')
            .where('tenant_id', '=', tenant(t))
            .where('email', '=', `user${n}@${tenant(t)}.io`)
            .execute()
          expect(found).toEqual([{ id: n + 1 }])
        }
      }
      expect(reader.stats().keys!.providerCalls).toBe(TENANTS + 100)
      // The writer's second wave of rows (new ids, known tenants): no provider call.
      await writerDb
        .insertInto(table)
        .values(
          Array.from({ length: BATCH }, (_, n) => ({
            id: 100_000 + n,
            tenant_id: tenant(n),
            email: `late${n}@x.io`,
          })),
        )
        .execute()
      expect(writer.stats().keys!.providerCalls).toBe(4 * TENANTS)
    }, 600_000)
  })
})
