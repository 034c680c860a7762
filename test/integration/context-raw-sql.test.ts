import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type TenantPair, tenantPair } from '../support/tenant-pair.js'

/**
 * Raw SQL in the WHERE of a statement on a table with a row context and per-tenant keys. Kysely
 * joins `where()` calls with AND but prints raw SQL without parentheses, so
 * `.where(sql\`id = 2 or id = 99\`).where('tenant_id', '=', 'acme').where('id', '=', 1)` was sent as
 * `id = 2 or id = 99 and tenant_id = … and id = …`, which the database reads as
 * `id = 2 or (…)`. The plugin read the tree (an AND at the top: tenant acme, row 1) and bound the
 * update's ciphertexts to (acme, 1) under acme's key; the database wrote them into globex's row 2
 * too, which then failed authentication for ever (found by helper-82).
 */
describe.each(backends())('raw SQL beside a row context [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let fx: TenantPair
    beforeAll(async () => {
      fx = await tenantPair(backend, { prefix: 'ctx_raw' })
      await fx.writerDb
        .insertInto(fx.table)
        .values([
          { id: 1, tenant_id: 'acme', email: 'a@x.io' },
          { id: 2, tenant_id: 'globex', email: 'g@x.io' },
        ])
        .execute()
    }, 120_000)
    afterAll(async () => {
      await fx?.teardown()
    })

    /** Every row as the reader decrypts it (each with its own context and tenant key). */
    const rows = async () =>
      (
        await fx.readerDb.selectFrom(fx.table).select(['id', 'tenant_id', 'email']).orderBy('id').execute()
      ).map((r) => [Number(r.id), r.tenant_id, r.email])

    it('an update whose WHERE holds raw SQL with an OR writes only the rows of the context it fixes', async () => {
      const contradiction = await fx.writerDb
        .updateTable(fx.table)
        .set({ email: 'new@x.io' })
        .where(sql<boolean>`id = 2 or id = 99`)
        .where('tenant_id', '=', 'acme')
        .where('id', '=', 1)
        .executeTakeFirst()
      expect(Number(contradiction.numUpdatedRows)).toBe(0)
      const own = await fx.writerDb
        .updateTable(fx.table)
        .set({ email: 'mine@x.io' })
        .where(sql<boolean>`id = 1 or id = 2`)
        .where('tenant_id', '=', 'acme')
        .where('id', '=', 1)
        .executeTakeFirst()
      expect(Number(own.numUpdatedRows)).toBe(1)
      // Globex's row was not touched, and still decrypts.
      expect(await rows()).toEqual([
        [1, 'acme', 'mine@x.io'],
        [2, 'globex', 'g@x.io'],
      ])
    })

    it('an update that ends in raw SQL (modifyEnd) is refused: it may widen the WHERE past the context (CONTEXT_MISSING)', async () => {
      const update = fx.writerDb
        .updateTable(fx.table)
        .set({ email: 'wide@x.io' })
        .where('tenant_id', '=', 'acme')
        .where('id', '=', 1)
        .modifyEnd(sql`or id = 2`)
        .execute()
      await expect(update).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
      expect(await rows()).toEqual([
        [1, 'acme', 'mine@x.io'],
        [2, 'globex', 'g@x.io'],
      ])
    })

    it('a search beside raw SQL with an OR is sent as the tree says: the raw condition in parentheses', async () => {
      const found = await fx.readerDb
        .selectFrom(fx.table)
        .select(['id', 'email'])
        .where(sql<boolean>`id = 2 or id = 99`)
        .where('tenant_id', '=', 'acme')
        .where('email', '=', 'mine@x.io')
        .execute()
      // Sent without parentheses, the database returned globex's row 2 (`id = 2 or (…)`).
      expect(found).toEqual([])
      const both = await fx.readerDb
        .selectFrom(fx.table)
        .select(['id', 'email'])
        .where(sql<boolean>`id = 1 or id = 2`)
        .where('tenant_id', '=', 'acme')
        .where('email', '=', 'mine@x.io')
        .execute()
      expect(both.map((r) => [Number(r.id), r.email])).toEqual([[1, 'mine@x.io']])
    })
  })
})
