import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { QueryRefusedError } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type TenantFixture, tenantFixture } from '../support/tenant-fixture.js'

/**
 * How a query names the tenant of a row: a context column spelt in another case (MySQL writes the
 * column all the same), and a tenant equality that SQL's scoping gives to a subquery's own relation.
 */
describe.each(backends())('tenant and context columns as a query spells them [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    let acme: string
    beforeAll(async () => {
      t = await tenantFixture(backend)
      acme = await t.order('acme', 'same@x.io')
      await t.order('globex', 'same@x.io')
    })
    afterAll(async () => {
      await t?.destroy()
    })

    const refused = async (run: () => Promise<unknown>, code: string) => {
      const error = await run().catch((e: unknown) => e)
      expect(error).toBeInstanceOf(QueryRefusedError)
      expect(error).toMatchObject({ code })
    }

    it('a context column spelt in another case is refused in SET, a qualified SET and an upsert (MySQL would move the row without rewriting it)', async () => {
      await refused(
        () =>
          t.db
            .updateTable(t.table)
            .set({ TENANT_ID: 'globex' } as never)
            .where('tenant_id', '=', 'acme')
            .where('id', '=', acme)
            .execute(),
        'AMBIGUOUS_COLUMN',
      )
      await refused(
        () =>
          t.db
            .updateTable(`${t.table} as t` as never)
            .set('t.ID' as never, 'other' as never)
            .where('t.tenant_id' as never, '=', 'acme' as never)
            .execute(),
        'AMBIGUOUS_COLUMN',
      )
      if (backend.family === 'mysql')
        await refused(
          () =>
            t.db
              .insertInto(t.table)
              .values({ id: acme, tenant_id: 'acme', name: 'x' })
              .onDuplicateKeyUpdate({ TENANT_ID: 'globex' } as never)
              .execute(),
          'AMBIGUOUS_COLUMN',
        )
      const row = await t.raw
        .selectFrom(t.table)
        .select('tenant_id')
        .where('id', '=', acme)
        .executeTakeFirstOrThrow()
      expect(row.tenant_id).toBe('acme')
    })

    it('a context value longer than its varchar(n) column holds (the database would cut its trailing spaces off) is CONTEXT_MISSING, on a write and in encrypt', async () => {
      const padded = `${randomUUID()}   ` // id is varchar(36)
      await refused(
        () =>
          t.db
            .insertInto(t.table)
            .values({ id: padded, tenant_id: 'acme', name: 'x', email: 'p@x.io' })
            .execute(),
        'CONTEXT_MISSING',
      )
      const tenant = `acme${' '.repeat(70)}` // tenant_id is varchar(64)
      await refused(
        () =>
          t.db
            .insertInto(t.table)
            .values({ id: randomUUID(), tenant_id: tenant, name: 'x', email: 'p@x.io' })
            .execute(),
        'CONTEXT_MISSING',
      )
      await refused(
        () => t.encryption.encrypt(t.table, 'email', 'p@x.io', { tenant_id: 'acme', id: padded }),
        'CONTEXT_MISSING',
      )
      // Exactly as long as the column holds: written, and read back.
      const full = randomUUID()
      await t.db
        .insertInto(t.table)
        .values({ id: full, tenant_id: 'acme', name: 'x', email: 'full@x.io' })
        .execute()
      expect(await t.byEmail('acme', 'full@x.io')).toEqual([{ id: full }])
    })

    it("a search on an enclosing query's relation in a subquery: an unqualified tenant equality there is the subquery's, so the tenant is not named (TENANT_REQUIRED); a qualified one is", async () => {
      const exists = (qualified: boolean) =>
        t.db
          .selectFrom(`${t.table} as o` as never)
          .select('o.id' as never)
          .where((eb) =>
            eb.exists(
              eb
                .selectFrom(`${t.table} as i` as never)
                .select(sql`1`.as('one'))
                .where((qualified ? 'o.tenant_id' : 'tenant_id') as never, '=', 'acme' as never)
                .where('o.email' as never, '=', 'same@x.io' as never),
            ),
          )
          .execute()
      await refused(() => exists(false), 'TENANT_REQUIRED')
      expect(await exists(true)).toEqual([{ id: acme }])
    })
  })
})
