import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type TenantPair, tenantPair } from '../support/tenant-pair.js'

const TENANTS = 40
/** The reader's metadata bound: a quarter of the tenants it touches. */
const METADATA_MAX = 10

/**
 * The key ring's per-key-name metadata (versions and states of each tenant's keys) is bounded by
 * `metadataMax`: a process that touches more tenants holds at most that many, reads a dropped
 * tenant's versions again from the key table when it needs them (no provider call: its keys are
 * still in the key cache), and still reads and searches every tenant correctly.
 */
describe.each(backends())('per-tenant key metadata bounded by metadataMax [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let fx: TenantPair
    const tenant = (i: number) => `b${String(i).padStart(3, '0')}`

    beforeAll(async () => {
      fx = await tenantPair(backend, {
        prefix: 'tk_bounded',
        shared: { cache: { max: 4 * TENANTS, ttlMs: 10 * 60_000 }, metadataTtlMs: 10 * 60_000 },
        reader: { metadataMax: METADATA_MAX },
      })
      await fx.writerDb
        .insertInto(fx.table)
        .values(
          Array.from({ length: 2 * TENANTS }, (_, n) => ({
            id: n + 1,
            tenant_id: tenant(n % TENANTS),
            email: `u${n}@${tenant(n % TENANTS)}.io`,
          })),
        )
        .execute()
    }, 300_000)

    afterAll(async () => {
      await fx?.teardown()
    })

    it(`${TENANTS} tenants through a bound of ${METADATA_MAX}: at most ${METADATA_MAX} held, reloaded on demand, no extra provider call, every row right`, async () => {
      const readTenant = (t: number) =>
        fx.readerDb
          .selectFrom(fx.table)
          .select(['id', 'email'])
          .where('tenant_id', '=', tenant(t))
          .orderBy('id')
          .execute()
      const expected = (t: number) => [
        { id: t + 1, email: `u${t}@${tenant(t)}.io` },
        { id: t + TENANTS + 1, email: `u${t + TENANTS}@${tenant(t)}.io` },
      ]

      const search = async (t: number) => {
        const found = await fx.readerDb
          .selectFrom(fx.table)
          .select('id')
          .where('tenant_id', '=', tenant(t))
          .where('email', '=', `u${t + TENANTS}@${tenant(t)}.io`)
          .execute()
        expect(found).toEqual([{ id: t + TENANTS + 1 }])
      }

      for (let t = 0; t < TENANTS; t++) expect(await readTenant(t)).toEqual(expected(t))
      const first = fx.reader.stats().keys!
      expect(first.metadataNames).toBe(METADATA_MAX)
      expect(first.providerCalls).toBe(TENANTS) // one data key per tenant
      expect(first.metadataLoads).toBe(TENANTS)

      // Again: a ciphertext names its key version, so a read whose key is cached needs no metadata.
      for (let t = 0; t < TENANTS; t++) expect(await readTenant(t)).toEqual(expected(t))
      expect(fx.reader.stats().keys).toMatchObject({ providerCalls: TENANTS, metadataLoads: TENANTS })

      // A search needs the tenant's searchable versions: the tenants read first were dropped and
      // are read again from the key table; each index key is unwrapped once.
      for (let t = 0; t < TENANTS; t++) await search(t)
      expect(fx.reader.stats().keys).toMatchObject({
        metadataNames: METADATA_MAX,
        providerCalls: 2 * TENANTS,
        metadataLoads: 2 * TENANTS,
      })

      // Again, in the same order: every tenant was dropped (least recently used) and is read
      // again from the key table, once per tenant; its keys are still cached.
      for (let t = 0; t < TENANTS; t++) await search(t)
      expect(fx.reader.stats().keys).toMatchObject({
        metadataNames: METADATA_MAX,
        providerCalls: 2 * TENANTS,
        metadataLoads: 3 * TENANTS,
      })

      // The tenants searched last are still held: searching them again costs no key-table read.
      for (let t = TENANTS - METADATA_MAX; t < TENANTS; t++) await search(t)
      expect(fx.reader.stats().keys).toMatchObject({ providerCalls: 2 * TENANTS, metadataLoads: 3 * TENANTS })
    }, 300_000)
  })
})
