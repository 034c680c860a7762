import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { useOwnTable } from '../support/own-table.js'
import { type TenantPair, tenantPair } from '../support/tenant-pair.js'
import { expectRefused } from './plugin-at-rest.js'

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

/**
 * A table whose context is its tenant alone: the update's guard was taken as present when a unique
 * search in the same WHERE carried the tenant's guard inside its own parentheses, so raw SQL in a
 * comparison (`where('name', '=', sql\`'v' or name = 'n'\`)`, printed without parentheses) put
 * the rows of another tenant under the OR, and they were written under acme's key (helper-85).
 */
describe.each(backends())('raw SQL beside a tenant-only context [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOwnTable(backend, {
      prefix: 'ctx_raw_t',
      columns: { ssn: encrypted.text({ index: { name: 'ssn_bidx' } }), iban: encrypted.text() },
      tableOptions: { context: ['tenant_id'], keyScope: 'tenant_id' },
      create: (table) =>
        table
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .addColumn('tenant_id', 'varchar(16)', (c) => c.notNull())
          .addColumn('name', 'varchar(32)'),
      options: () => ({ verifySchema: false }),
    })
    beforeAll(async () => {
      await t.encryption.initTenant(t.db, t.table, 'acme')
      await t.encryption.initTenant(t.db, t.table, 'globex')
      await t.db
        .insertInto(t.table)
        .values([
          { id: 1, tenant_id: 'acme', name: 'mine', ssn: 'A-1', iban: 'A-IBAN' },
          { id: 2, tenant_id: 'globex', name: 'victim', ssn: 'G-9', iban: 'G-IBAN' },
        ])
        .execute()
    })

    it('an update with a unique search keeps its own guard around the whole WHERE', async () => {
      const result = await t.db
        .updateTable(t.table)
        .set({ iban: 'WRITTEN-FOR-ACME' })
        .where('name', '=', sql<string>`'victim' or name = 'nobody'`)
        .where('tenant_id', '=', 'acme')
        .where('ssn', '=', 'A-1')
        .executeTakeFirst()
      expect(Number(result.numUpdatedRows)).toBe(0)
      const rows = await t.db.selectFrom(t.table).select(['id', 'iban']).orderBy('id').execute()
      expect(rows.map((r) => [Number(r.id), r.iban])).toEqual([
        [1, 'A-IBAN'],
        [2, 'G-IBAN'],
      ])
    })

    it('raw SQL ending in a line comment keeps the parenthesis after it', async () => {
      const rows = await t.db
        .selectFrom(t.table)
        .select(['id', 'ssn'])
        .where('tenant_id', '=', 'acme')
        .where(sql<boolean>`name = 'mine' -- the row`)
        .execute()
      expect(rows.map((r) => [Number(r.id), r.ssn])).toEqual([[1, 'A-1']])
    })

    it('raw SQL ending in a line comment, as a SET value or a compared value, keeps the WHERE after it', async () => {
      // Kysely prints a statement on one line: the comment took the WHERE and its guards with it
      // (MariaDB: mysql2 fills the ? in its client, so every row was written under acme's key).
      const result = await t.db
        .updateTable(t.table)
        .set({ iban: 'ACME-NEW', name: sql<string>`'mine' -- keeps its name` })
        .where('tenant_id', '=', 'acme')
        .where('id', '=', 1)
        .executeTakeFirst()
      expect(Number(result.numUpdatedRows)).toBe(1)
      const compared = await t.db
        .updateTable(t.table)
        .set({ iban: 'ACME-NEWER' })
        .where('name', '=', sql<string>`'mine' -- the row's name`)
        .where('tenant_id', '=', 'acme')
        .executeTakeFirst()
      expect(Number(compared.numUpdatedRows)).toBe(1)
      const rows = await t.db.selectFrom(t.table).select(['id', 'name', 'iban']).orderBy('id').execute()
      expect(rows.map((r) => [Number(r.id), r.name, r.iban])).toEqual([
        [1, 'mine', 'ACME-NEWER'],
        [2, 'victim', 'G-IBAN'],
      ])
    })

    it('a raw alias ending in a line comment keeps the WHERE after it; raw SQL inside a quoted string of raw SQL is sent as written', async () => {
      // The alias of a raw FROM item was not walked: MariaDB returned both tenants' rows.
      const rows = await t.db
        .selectFrom([t.table, sql`(select 1 as one)`.as(sql`o -- note`) as never])
        .select(['id', 'iban'])
        .where('tenant_id', '=', 'acme')
        .execute()
      expect(rows.map((r) => Number(r.id))).toEqual([1])
      // A line break was appended to the inner raw SQL, inside the outer one's quotes: 'C#\n' stored.
      await t.db
        .updateTable(t.table)
        .set({ name: sql<string>`'${sql.raw('C#')}'`, iban: 'ACME-QUOTED' })
        .where('tenant_id', '=', 'acme')
        .where('id', '=', 1)
        .execute()
      const named = await t.db.selectFrom(t.table).select(['name', 'iban']).where('id', '=', 1).execute()
      expect(named).toEqual([{ name: 'C#', iban: 'ACME-QUOTED' }])
      await t.db
        .updateTable(t.table)
        .set({ name: 'mine' })
        .where('tenant_id', '=', 'acme')
        .where('id', '=', 1)
        .execute()
    })

    it('a comment after a backslash-ended PostgreSQL string, or in raw SQL under an alias, still ends its line (helper-90)', async () => {
      if (backend.family === 'postgres') {
        // 'C:\' (one backslash) is a whole literal on PostgreSQL; a tokenizer reading the
        // backslash as an escape saw no comment, and the update's WHERE (and guard) were
        // commented out: every row written.
        const result = await t.db
          .updateTable(t.table)
          .set({ name: sql<string>`'C:\\' -- the root's path`, iban: 'ACME-PATH' })
          .where('tenant_id', '=', 'acme')
          .where('id', '=', 1)
          .executeTakeFirst()
        expect(Number(result.numUpdatedRows)).toBe(1)
        const rows = await t.db.selectFrom(t.table).select(['id', 'iban']).orderBy('id').execute()
        expect(rows.map((r) => [Number(r.id), r.iban])).toEqual([
          [1, 'ACME-PATH'],
          [2, 'G-IBAN'],
        ])
        await t.db
          .updateTable(t.table)
          .set({ name: 'mine' })
          .where('tenant_id', '=', 'acme')
          .where('id', '=', 1)
          .execute()
      }
      for (const selection of [
        sql`${sql`count(*) -- all rows`.as('n')}`,
        sql`count(*)`.as(sql`n -- all rows` as never),
      ]) {
        const counted = await t.db
          .selectFrom(t.table)
          .select(selection as never)
          .where('tenant_id', '=', 'acme')
          .execute()
        expect(counted.map((r) => Number((r as { n: unknown }).n))).toEqual([1])
      }
    })

    it('a hidden row-context alias given by raw SQL (any case, spliced in) is refused', async () => {
      const quoted = backend.family === 'mysql' ? '`__kfe_ctx_0`' : '"__kfe_ctx_0"'
      for (const selection of [
        sql`tenant_id as ${sql.raw(quoted)}`,
        sql`tenant_id as __KFE_CTX_0`,
        sql`tenant_id`.as(sql.raw(quoted) as never),
      ]) {
        const e = await expectRefused(
          () =>
            t.db
              .withoutPlugins()
              .selectFrom(t.table)
              .select(['id', 'ssn', selection as never])
              .where('id', '=', 2)
              .execute(),
          'QUERY_REFUSED',
        )
        expect(e.operator).toBe('alias')
      }
    })
  })
})
