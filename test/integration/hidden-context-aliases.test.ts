import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type TenantFixture, tenantFixture } from '../support/tenant-fixture.js'
import { expectRefused } from './plugin-at-rest.js'

/**
 * The plugin reads a row's context columns under hidden aliases (`__kfe_ctx_N`) and removes them
 * from the rows: a user's own output under that prefix would be removed with them, silently. It is
 * refused before sending instead, in a select list, a RETURNING list and a subquery or derived table.
 * The hidden post-filter columns (`__kfe_fp_N`) are dropped from a subquery's select list: a user's
 * output of that form is refused there.
 */
describe.each(backends())('user aliases with the hidden row-context prefix [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    let id: string
    beforeAll(async () => {
      t = await tenantFixture(backend)
      id = await t.order('acme', 'alias@x.io')
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('a select list naming an output __kfe_ctx_… is refused (the column was dropped from the rows)', async () => {
      const e = await expectRefused(
        () =>
          t.db.selectFrom(t.table).select(['email', 'name as __kfe_ctx_0']).where('id', '=', id).execute(),
        'QUERY_REFUSED',
      )
      expect(e.message).toContain('__kfe_ctx_')
      expect(e.operator).toBe('alias')
      // The same output as the plugin's own hidden one, or under a name no hidden one takes.
      await expectRefused(
        () =>
          t.db
            .selectFrom(t.table)
            .select(['email', `${t.table}.tenant_id as __kfe_ctx_0`])
            .where('id', '=', id)
            .execute(),
        'QUERY_REFUSED',
      )
      await expectRefused(
        () =>
          t.db
            .selectFrom(t.table)
            .select(['email', sql<string>`'x'`.as('__kfe_ctx_1')])
            .where('id', '=', id)
            .execute(),
        'QUERY_REFUSED',
      )
      await expectRefused(
        () =>
          t.db.selectFrom(t.table).select(['id', 'name as __kfe_ctx_note']).where('id', '=', id).execute(),
        'QUERY_REFUSED',
      )
    })

    it('a RETURNING list naming an output __kfe_ctx_… is refused before the write', async () => {
      if (backend.family !== 'postgres') return // MySQL has no RETURNING
      await expectRefused(
        () =>
          t.db
            .updateTable(t.table)
            .set({ name: 'renamed' })
            .where('id', '=', id)
            .returning(['email', 'name as __kfe_ctx_0'])
            .execute(),
        'QUERY_REFUSED',
      )
      const row = await t.raw
        .selectFrom(t.table)
        .select('name')
        .where('id', '=', id)
        .executeTakeFirstOrThrow()
      expect(row.name).toBe('o')
    })

    it('a subquery or derived table naming an output __kfe_ctx_… is refused (its outer * lost it)', async () => {
      // Built from the query builder's callback: never transformed on its own.
      await expectRefused(
        () =>
          t.db
            .selectFrom((qb) =>
              qb
                .selectFrom(t.table)
                .select(['id', `${t.table}.tenant_id as __kfe_ctx_0`])
                .as('d'),
            )
            .selectAll()
            .execute(),
        'QUERY_REFUSED',
      )
      await expectRefused(
        () =>
          t.db
            .selectFrom((qb) => qb.selectFrom(t.table).select(['id', 'name as __kfe_ctx_0']).as('d'))
            .selectAll()
            .execute(),
        'QUERY_REFUSED',
      )
      // Built from `db`: transformed on its own first.
      await expectRefused(
        () =>
          t.db
            .selectFrom(t.db.selectFrom(t.table).select(['id', 'name as __kfe_ctx_0']).as('d'))
            .selectAll()
            .execute(),
        'QUERY_REFUSED',
      )
    })

    it('a subquery or derived table naming a column reference __kfe_fp_<n> is refused (its select list dropped it); another name or an expression passes', async () => {
      const e = await expectRefused(
        () =>
          t.db
            .selectFrom((qb) => qb.selectFrom(t.table).select(['id', 'name as __kfe_fp_0']).as('d'))
            .selectAll()
            .execute(),
        'QUERY_REFUSED',
      )
      expect(e.message).toContain('__kfe_fp_0')
      expect(e.operator).toBe('alias')
      // In the very form of the plugin's own (a relation's encrypted column), written by hand: the
      // plugin adds one only beside a search it rewrote to the blind index, which this has not.
      await expectRefused(
        () =>
          t.db
            .selectFrom((qb) =>
              qb.selectFrom(`${t.table} as o`).select(['o.id', 'o.email as __kfe_fp_0']).as('d'),
            )
            .selectAll()
            .execute(),
        'QUERY_REFUSED',
      )
      // Not a reference: nothing drops it, and it passes.
      expect(
        await t.db
          .selectFrom(
            t.db
              .selectFrom(t.table)
              .select(['id', sql<string>`'x'`.as('__kfe_fp_7')])
              .as('d'),
          )
          .selectAll()
          .where('d.id', '=', id)
          .execute(),
      ).toEqual([{ id, __kfe_fp_7: 'x' }])
      await expectRefused(
        () =>
          t.db
            .selectFrom(t.table)
            .select('id')
            .where('id', 'in', t.db.selectFrom(t.table).select('id as __kfe_fp_1'))
            .execute(),
        'QUERY_REFUSED',
      )
      expect(
        await t.db
          .selectFrom((qb) => qb.selectFrom(t.table).select(['id', 'name as __kfe_fp_note']).as('d'))
          .selectAll()
          .where('d.id', '=', id)
          .execute(),
      ).toEqual([{ id, __kfe_fp_note: 'o' }])
      // At the top level the plugin numbers its own hidden columns around the user's.
      expect(
        await t.db.selectFrom(t.table).select(['id', 'name as __kfe_fp_0']).where('id', '=', id).execute(),
      ).toEqual([{ id, __kfe_fp_0: 'o' }])
    })

    it("the plugin's own hidden selections still pass through a subquery built from db", async () => {
      const inner = t.db
        .selectFrom(t.table)
        .select(['id', 'email'])
        .where('tenant_id', '=', 'acme')
        .where('email', '=', 'alias@x.io')
      expect(inner.compile().sql).toContain('__kfe_ctx_0')
      expect(await t.db.selectFrom(inner.as('d')).select('d.id').where('d.id', '=', id).execute()).toEqual([
        { id },
      ])
      // A compiled query run twice: the second run takes the verify pass, which accepts them too.
      const compiled = t.db.selectFrom(t.table).select(['id', 'email']).where('id', '=', id).compile()
      for (let run = 0; run < 2; run++)
        expect((await t.db.executeQuery(compiled)).rows).toEqual([{ id, email: 'alias@x.io' }])
    })

    it("a query without the plugin that repeats a hidden alias is refused: the driver keeps the last, and a copied ciphertext read with another row's context passed (helper-82)", async () => {
      const other = await t.order('acme', 'other@x.io')
      // Someone with write access copies this row's ciphertext into the other row.
      const stored = await t.raw
        .selectFrom(t.table)
        .select('email')
        .where('id', '=', id)
        .executeTakeFirstOrThrow()
      await t.raw.updateTable(t.table).set({ email: stored.email }).where('id', '=', other).execute()
      await expect(
        t.db.selectFrom(t.table).select(['id', 'email']).where('id', '=', other).execute(),
      ).rejects.toMatchObject({ code: 'DECRYPT_AUTH_FAILED' })
      const q = t.db
        .withoutPlugins()
        .selectFrom(`${t.table} as yy`)
        .innerJoin(`${t.table} as xx`, 'xx.tenant_id', 'yy.tenant_id')
        .select(['yy.id', 'yy.email', 'xx.email as x_email'])
        .select([
          'yy.tenant_id as __kfe_ctx_0',
          'yy.id as __kfe_ctx_1',
          'xx.tenant_id as __kfe_ctx_0',
          'xx.id as __kfe_ctx_1',
        ] as never)
        .where('yy.id', '=', other)
        .where('xx.id', '=', id)
      const e = await expectRefused(() => q.execute(), 'QUERY_REFUSED')
      expect(e.operator).toBe('alias')
      await t.raw.deleteFrom(t.table).where('id', '=', other).execute()
    })
  })
})
