import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type TenantPair, tenantPair } from '../support/tenant-pair.js'

const UUID = '0c0a2f1e-7d3b-4c5a-9e8f-a1b2c3d4e5f6'
const UPPER = UUID.toUpperCase()

/** The key names of a fixture's key table. */
async function keyNames(fx: TenantPair): Promise<string[]> {
  const rows = await fx.raw.selectFrom(fx.keyTable).select('logical_table').distinct().execute()
  return rows.map((r) => r.logical_table as string).sort()
}

const emailsOf = (rows: readonly { id: unknown; email: unknown }[]) =>
  rows.map((r) => [Number(r.id), r.email]).sort((a, b) => (a[0] as number) - (b[0] as number))

/** A tenant pair whose row 1 is tenant 'acme' and row 2 tenant 'Acme', both with the email same@x.io. */
async function acmePair(backend: Backend, prefix: string, tenantType: string): Promise<TenantPair> {
  const fx = await tenantPair(backend, { prefix, tenantType })
  await fx.writerDb
    .insertInto(fx.table)
    .values([
      { id: 1, tenant_id: 'acme', email: 'same@x.io' },
      { id: 2, tenant_id: 'Acme', email: 'same@x.io' },
    ])
    .execute()
  return fx
}

/**
 * A tenant value names its keys and is bound into each ciphertext's AAD, so every path (write,
 * read, search, update) must agree on it: a UUID is the same tenant in any letter case, and a
 * value the database matches without being equal to it (a case-insensitive collation, a string
 * converted to an integer) never gets another tenant's or row's ciphertexts.
 */
describe.each(backends())('tenant value identity [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    // PostgreSQL's uuid type and MariaDB's (10.7+) return lower case whatever was written.
    describe.each(['uuid', 'varchar(36)'])('a UUID tenant in a %s column, written in upper case', (type) => {
      let fx: TenantPair
      beforeAll(async () => {
        fx = await tenantPair(backend, { prefix: 'tk_uuid', tenantType: type })
        await fx.writerDb
          .insertInto(fx.table)
          .values([
            { id: 1, tenant_id: UPPER, email: 'upper@x.io' },
            { id: 2, tenant_id: UUID, email: 'lower@x.io' },
          ])
          .execute()
      }, 120_000)
      afterAll(async () => {
        await fx?.teardown()
      })

      it.runIf(type === 'uuid')(
        'a UUID in braces is refused: the uuid type would store it in another form (CONTEXT_MISSING)',
        async () => {
          const insert = fx.writerDb
            .insertInto(fx.table)
            .values({ id: 3, tenant_id: `{${UPPER}}`, email: 'braces@x.io' })
            .execute()
          await expect(insert).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
          expect(await fx.raw.selectFrom(fx.table).select('id').where('id', '=', 3).execute()).toEqual([])
        },
      )

      it('one tenant: one key name (lower case), and both rows read back under it', async () => {
        expect(await keyNames(fx)).toEqual([`${fx.table}#tenant_id=${UUID}`])
        const stored = await fx.raw.selectFrom(fx.table).select(['id', 'tenant_id']).orderBy('id').execute()
        // What the database returns: the uuid type lower-cases, a text column keeps the case.
        const upperBack = type === 'uuid' ? UUID : UPPER
        expect(stored.map((r) => r.tenant_id)).toEqual([upperBack, UUID])
        const rows = await fx.readerDb.selectFrom(fx.table).select(['id', 'email']).execute()
        expect(emailsOf(rows)).toEqual([
          [1, 'upper@x.io'],
          [2, 'lower@x.io'],
        ])
      })

      it('a search naming the tenant in either case finds the rows of either spelling the database matches', async () => {
        const search = (tenant: string, email: string) =>
          fx.readerDb
            .selectFrom(fx.table)
            .select('id')
            .where('tenant_id', '=', tenant)
            .where('email', '=', email)
            .execute()
        // A uuid column (and MariaDB's case-insensitive varchar) matches either spelling;
        // PostgreSQL's varchar matches only the same one.
        const caseBlind = type === 'uuid' || backend.family === 'mysql'
        expect(await search(UUID, 'lower@x.io')).toEqual([{ id: 2 }])
        expect(await search(UPPER, 'upper@x.io')).toEqual([{ id: 1 }])
        expect(await search(UUID, 'upper@x.io')).toEqual(caseBlind ? [{ id: 1 }] : [])
        expect(await search(UPPER, 'lower@x.io')).toEqual(caseBlind ? [{ id: 2 }] : [])
      })

      it('an update naming the tenant in the other case writes a value that reads back', async () => {
        const caseBlind = type === 'uuid' || backend.family === 'mysql'
        const result = await fx.writerDb
          .updateTable(fx.table)
          .set({ email: 'changed@x.io' })
          .where('tenant_id', '=', caseBlind ? UUID : UPPER)
          .where('id', '=', 1)
          .executeTakeFirst()
        expect(Number(result.numUpdatedRows)).toBe(1)
        const row = await fx.readerDb
          .selectFrom(fx.table)
          .select(['id', 'email'])
          .where('id', '=', 1)
          .execute()
        expect(row).toEqual([{ id: 1, email: 'changed@x.io' }])
        // And a search under either spelling finds it (where the database matches that spelling).
        const found = await fx.readerDb
          .selectFrom(fx.table)
          .select('id')
          .where('tenant_id', '=', UPPER)
          .where('email', '=', 'changed@x.io')
          .execute()
        expect(found).toEqual([{ id: 1 }])
        expect(await keyNames(fx)).toEqual([`${fx.table}#tenant_id=${UUID}`])
      })
    })

    describe("tenants 'acme' and 'Acme' in a varchar column (MariaDB's default collation: case-insensitive)", () => {
      let fx: TenantPair
      beforeAll(async () => {
        fx = await acmePair(backend, 'tk_case', 'varchar(16)')
      }, 120_000)
      afterAll(async () => {
        await fx?.teardown()
      })

      it('two tenants, two key names', async () => {
        expect(await keyNames(fx)).toEqual([`${fx.table}#tenant_id=Acme`, `${fx.table}#tenant_id=acme`])
      })

      it("a read by tenant returns the rows the database matches, each decrypted under its own row's tenant", async () => {
        const rows = await fx.readerDb
          .selectFrom(fx.table)
          .select(['id', 'email'])
          .where('tenant_id', '=', 'acme')
          .execute()
        expect(emailsOf(rows)).toEqual(
          backend.family === 'mysql'
            ? [
                [1, 'same@x.io'],
                [2, 'same@x.io'],
              ]
            : [[1, 'same@x.io']],
        )
      })

      it('a search names its tenant exactly: the blind index is that tenant’s, so only its rows match', async () => {
        for (const [tenant, id] of [
          ['acme', 1],
          ['Acme', 2],
        ] as const) {
          const found = await fx.readerDb
            .selectFrom(fx.table)
            .select(['id', 'tenant_id'])
            .where('tenant_id', '=', tenant)
            .where('email', '=', 'same@x.io')
            .execute()
          expect(found).toEqual([{ id, tenant_id: tenant }])
        }
        // The statement carries the exact guard beside the tenant's equality.
        const compiled = fx.readerDb
          .selectFrom(fx.table)
          .select('id')
          .where('tenant_id', '=', 'acme')
          .where('email', '=', 'same@x.io')
          .compile()
        expect(compiled.sql).toMatch(/md5\(concat\(/)
      })

      it("an update whose WHERE names 'acme' never writes 'acme' ciphertexts into a row of 'Acme' (nor of 'acme ')", async () => {
        const update = (tenant: string, id: number | string) =>
          fx.writerDb
            .updateTable(fx.table)
            .set({ email: 'stolen@x.io' })
            .where('tenant_id', '=', tenant)
            .where('id', '=', id as number)
            .executeTakeFirst()
        expect(Number((await update('acme', 2)).numUpdatedRows)).toBe(0)
        expect(Number((await update('Acme', 1)).numUpdatedRows)).toBe(0)
        // Trailing spaces: MariaDB compares 'acme ' equal to 'acme'. Tenant 'acme ' holds no
        // ciphertext of its own (the sampling is exact too), so its keys are created on this first
        // write, and the update matches no row: row 1 is tenant 'acme'.
        expect(Number((await update('acme ', 1)).numUpdatedRows)).toBe(0)
        expect(await keyNames(fx)).toContain(`${fx.table}#tenant_id=acme%20`)
        const rows = await fx.readerDb.selectFrom(fx.table).select(['id', 'email']).execute()
        expect(emailsOf(rows)).toEqual([
          [1, 'same@x.io'],
          [2, 'same@x.io'],
        ])
      })

      it("a hand-written md5(concat(tenant_id)) term of its own does not stand in for the plugin's exact guard", async () => {
        // Terms of the guard's form with another value or operator: the database matches row 2
        // ('Acme') by tenant 'acme' where its collation does, and the plugin must still add the
        // guard of 'acme' (before, any such term on a column named tenant_id suppressed it).
        for (const [op, value] of [
          ['=', 'Acme'],
          ['<>', 'zzz'],
        ] as const) {
          const result = await fx.writerDb
            .updateTable(fx.table)
            .set({ email: 'stolen@x.io' })
            .where('tenant_id', '=', 'acme')
            .where('id', '=', 2)
            .where((eb) =>
              eb(eb.fn('md5', [eb.fn('concat', [eb.ref('tenant_id')])]), op, eb.fn('md5', [eb.val(value)])),
            )
            .executeTakeFirst()
          expect(Number(result.numUpdatedRows)).toBe(0)
        }
        const rows = await fx.readerDb.selectFrom(fx.table).select(['id', 'email']).execute()
        expect(emailsOf(rows)).toEqual([
          [1, 'same@x.io'],
          [2, 'same@x.io'],
        ])
      })

      it("an insert of id '07' (an integer column stores 7) is refused before anything is sent (CONTEXT_MISSING)", async () => {
        const insert = fx.writerDb
          .insertInto(fx.table)
          .values({ id: '07' as unknown as number, tenant_id: 'acme', email: 'seven@x.io' })
          .execute()
        await expect(insert).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
        expect(await fx.raw.selectFrom(fx.table).select('id').where('id', '=', 7).execute()).toEqual([])
        // '-0' too: the column stores 0, another context value than "-0".
        await expect(
          fx.writerDb
            .insertInto(fx.table)
            .values({ id: '-0' as unknown as number, tenant_id: 'acme', email: 'zero@x.io' })
            .execute(),
        ).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
        expect(await fx.raw.selectFrom(fx.table).select('id').where('id', '=', 0).execute()).toEqual([])
        // The canonical form goes through and reads back.
        await fx.writerDb
          .insertInto(fx.table)
          .values({ id: '7', tenant_id: 'acme', email: 'seven@x.io' })
          .execute()
        const back = await fx.readerDb
          .selectFrom(fx.table)
          .select(['id', 'email'])
          .where('id', '=', 7)
          .execute()
        expect(back).toEqual([{ id: 7, email: 'seven@x.io' }])
      })

      it("an update whose id is '01' (the database converts it to 1) does not bind row 1's ciphertext to '01'", async () => {
        // Refused where the schema check read the column's type (integer); the exact guard would
        // otherwise leave row 1 alone (0 rows updated).
        const result = fx.writerDb
          .updateTable(fx.table)
          .set({ email: 'other@x.io' })
          .where('tenant_id', '=', 'acme')
          .where('id', '=', '01' as unknown as number)
          .executeTakeFirst()
        await expect(result).rejects.toMatchObject({ code: 'CONTEXT_MISSING' })
        const row = await fx.readerDb
          .selectFrom(fx.table)
          .select(['id', 'email'])
          .where('id', '=', 1)
          .execute()
        expect(row).toEqual([{ id: 1, email: 'same@x.io' }])
        // The same update in the canonical form goes through and reads back.
        const ok = await fx.writerDb
          .updateTable(fx.table)
          .set({ email: 'other@x.io' })
          .where('tenant_id', '=', 'acme')
          .where('id', '=', 1)
          .executeTakeFirst()
        expect(Number(ok.numUpdatedRows)).toBe(1)
        const back = await fx.readerDb
          .selectFrom(fx.table)
          .select(['id', 'email'])
          .where('id', '=', 1)
          .execute()
        expect(back).toEqual([{ id: 1, email: 'other@x.io' }])
      })
    })

    // PostgreSQL compares 'acme' and 'Acme' equal under a nondeterministic ICU collation (as
    // MariaDB's default does); PGlite has no ICU, and MariaDB refuses a multi-table UPDATE that
    // writes encrypted columns, so the UPDATE … FROM form reaches PostgreSQL only.
    describe.runIf(backend.name === 'postgres')(
      "an UPDATE … FROM whose search guards another relation's tenant_id",
      () => {
        let fx: TenantPair
        beforeAll(async () => {
          const raw = new Kysely<unknown>({ dialect: backend.createDialect() })
          try {
            await sql`create collation if not exists kfe_test_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`.execute(
              raw,
            )
          } finally {
            await raw.destroy()
          }
          fx = await acmePair(backend, 'tk_ci', 'varchar(16) collate kfe_test_ci')
        }, 120_000)
        afterAll(async () => {
          await fx?.teardown()
        })

        it("still gets the guard of the updated table's own tenant: no 'acme' ciphertext lands in row 2 ('Acme')", async () => {
          // The search on c.email adds md5(concat(c.tenant_id)) = md5('Acme'), a guard of another
          // relation: before, it stood in for the guard of t.tenant_id, and row 2, which the
          // collation matches by 'acme', was written under tenant 'acme' (unreadable afterwards).
          const t = fx.table
          const result = await fx.writerDb
            .updateTable(t)
            .from(`${t} as c`)
            .set({ email: 'stolen@x.io' })
            .whereRef('c.id', '=', `${t}.id`)
            .where(`${t}.tenant_id`, '=', 'acme')
            .where(`${t}.id`, '=', 2)
            .where('c.tenant_id', '=', 'Acme')
            .where('c.email', '=', 'same@x.io')
            .executeTakeFirst()
          expect(Number(result.numUpdatedRows)).toBe(0)
          // Named by its own tenant, the same update goes through and reads back.
          const own = await fx.writerDb
            .updateTable(t)
            .from(`${t} as c`)
            .set({ email: 'own@x.io' })
            .whereRef('c.id', '=', `${t}.id`)
            .where(`${t}.tenant_id`, '=', 'Acme')
            .where(`${t}.id`, '=', 2)
            .where('c.tenant_id', '=', 'Acme')
            .where('c.email', '=', 'same@x.io')
            .executeTakeFirst()
          expect(Number(own.numUpdatedRows)).toBe(1)
          const rows = await fx.readerDb.selectFrom(t).select(['id', 'email']).execute()
          expect(emailsOf(rows)).toEqual([
            [1, 'same@x.io'],
            [2, 'own@x.io'],
          ])
        })
      },
    )
  })
})
