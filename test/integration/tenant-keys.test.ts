import { randomUUID } from 'node:crypto'
import { type Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type FieldEncryption, KeyError, readHeader } from '../../src/index.js'
import type { FieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { type TenantFixture, tenantFixture } from '../support/tenant-fixture.js'
import { expectRefused, failure } from './plugin-at-rest.js'

describe.each(backends())('per-tenant keys and crypto-shredding [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    let orders: string
    let keyTable: string
    /** The application: tenants get keys only on purpose. */
    let app: FieldEncryption
    /** Another process of the application, with createTenantKeys. */
    let auto: FieldEncryption
    let db: Kysely<TestDB>
    let autoDb: Kysely<TestDB>
    let raw: Kysely<TestDB>
    let ops: FieldEncryptionOps

    beforeAll(async () => {
      t = await tenantFixture(backend, { app: { createTenantKeys: false } })
      ;({ table: orders, keyTable, encryption: app, db, raw, ops } = t)
      ;({ encryption: auto, db: autoDb } = t.another({ createTenantKeys: true }))
    })

    afterAll(async () => {
      await t?.destroy()
    })

    const keyName = (tenant: string) => `${orders}#tenant_id=${encodeURIComponent(tenant)}`
    const keyRows = async (name: string) =>
      raw.selectFrom(keyTable).selectAll().where('logical_table', '=', name).orderBy('purpose').execute()
    const count = async () =>
      Number(
        (
          await raw
            .selectFrom(orders)
            .select((eb) => eb.fn.countAll().as('n'))
            .executeTakeFirst()
        )?.n,
      )

    async function order(
      d: Kysely<TestDB>,
      tenant: string,
      email: string,
      ssn = '123-45-6789',
    ): Promise<string> {
      const id = randomUUID()
      await d.insertInto(orders).values({ id, tenant_id: tenant, name: 'o', email, ssn }).execute()
      return id
    }

    it('each tenant gets its own data and index keys; rows are written and read with their own tenant keys', async () => {
      const made = await app.initTenant(db, orders, 'acme')
      expect(made.created.map((r) => `${r.logicalTable}/${r.purpose}`)).toEqual([
        `${keyName('acme')}/data`,
        `${keyName('acme')}/index`,
      ])
      await app.initTenant(db, orders, 'globex')
      expect((await app.initTenant(db, orders, 'globex')).created).toEqual([]) // idempotent
      // One statement, two tenants, the same e-mail.
      const [a, g] = [randomUUID(), randomUUID()]
      await db
        .insertInto(orders)
        .values([
          { id: a, tenant_id: 'acme', email: 'same@x.io', ssn: '111-11-1111' },
          { id: g, tenant_id: 'globex', email: 'same@x.io', ssn: '222-22-2222' },
        ])
        .execute()
      // Keys live under the tenants' names; the table itself has none.
      expect((await keyRows(keyName('acme'))).map((r) => `${r.purpose}/v${r.version}/${r.state}`)).toEqual([
        'data/v1/active',
        'index/v1/active',
      ])
      expect(await keyRows(orders)).toEqual([])
      // Different index keys: the same value has different blind indexes in the two tenants.
      const stored = await raw
        .selectFrom(orders)
        .select(['id', 'email_bidx', 'email'])
        .where('id', 'in', [a, g])
        .execute()
      const bidx = (id: string) => Buffer.from(stored.find((r) => r.id === id)!.email_bidx as Uint8Array)
      expect(bidx(a).equals(bidx(g))).toBe(false)
      // One select over both tenants decrypts each row with its own tenant's data key.
      const rows = await db
        .selectFrom(orders)
        .select(['id', 'tenant_id', 'email', 'ssn'])
        .where('id', 'in', [a, g])
        .execute()
      expect(rows.sort((x, y) => (x.tenant_id < y.tenant_id ? -1 : 1))).toEqual([
        { id: a, tenant_id: 'acme', email: 'same@x.io', ssn: '111-11-1111' },
        { id: g, tenant_id: 'globex', email: 'same@x.io', ssn: '222-22-2222' },
      ])
      // The raw helpers take the tenant from the row.
      const ct = await app.encrypt(orders, 'ssn', '333-33-3333', { tenant_id: 'globex', id: g })
      expect(await app.decrypt(orders, 'ssn', ct, { tenant_id: 'globex', id: g })).toBe('333-33-3333')
      const err = await failure(() => app.decrypt(orders, 'ssn', ct, { tenant_id: 'acme', id: g }))
      expect((err as { code?: string }).code).toBe('DECRYPT_AUTH_FAILED')
    })

    it('stream() of a table with per-tenant keys is refused before anything is sent (its keys would load behind the cursor)', async () => {
      const stream = async () => {
        for await (const _ of t.db.selectFrom(t.table).select(['tenant_id', 'email']).stream(2)) {
          // never reached
        }
      }
      await expect(stream()).rejects.toMatchObject({ code: 'QUERY_REFUSED', operator: 'stream' })
      // Its plaintext columns stream as before.
      const ids: unknown[] = []
      for await (const row of t.db.selectFrom(t.table).select('id').stream(2)) ids.push(row.id)
      expect(ids.length).toBeGreaterThan(0)
    })

    it('a search must name one tenant by equality (TENANT_REQUIRED otherwise); with it, it finds that tenant rows only', async () => {
      const a = await order(db, 'acme', 'find@x.io', '555-55-5555')
      const g = await order(db, 'globex', 'find@x.io', '555-55-5555')
      const e = await expectRefused(
        () => db.selectFrom(orders).select('id').where('email', '=', 'find@x.io').execute(),
        'TENANT_REQUIRED',
      )
      expect(e.hint).toContain("where('tenant_id', '=', tenant)")
      expect(e.table).toBe(orders)
      await expectRefused(
        () =>
          db
            .selectFrom(orders)
            .select('id')
            .where((eb) => eb.or([eb('tenant_id', '=', 'acme'), eb('email', '=', 'find@x.io')]))
            .execute(),
        'TENANT_REQUIRED',
      )
      await expectRefused(
        () =>
          db
            .selectFrom(orders)
            .select('id')
            .where('tenant_id', 'in', ['acme', 'globex'])
            .where('ssn', '=', '555-55-5555')
            .execute(),
        'TENANT_REQUIRED',
      )
      await expectRefused(
        () => db.deleteFrom(orders).where('email', '=', 'find@x.io').execute(),
        'TENANT_REQUIRED',
      )
      // A self-join on the blind index compares two rows whose tenants may differ.
      await expectRefused(
        () =>
          db
            .selectFrom(`${orders} as p`)
            .innerJoin(`${orders} as q`, 'p.email', 'q.email')
            .select('p.id')
            .where('p.tenant_id', '=', 'acme')
            .execute(),
        'QUERY_REFUSED',
      )
      // Named by equality: that tenant's index key, that tenant's rows.
      const q = (tenant: string) =>
        db
          .selectFrom(orders)
          .select(['id', 'ssn'])
          .where('tenant_id', '=', tenant)
          .where('email', '=', 'FIND@x.io')
          .where('ssn', '=', '555555555')
          .execute()
      expect(await q('acme')).toEqual([{ id: a, ssn: '555-55-5555' }])
      expect(await q('globex')).toEqual([{ id: g, ssn: '555-55-5555' }])
      // Updates and deletes search the same way.
      await db
        .updateTable(orders)
        .set({ name: 'renamed' })
        .where('tenant_id', '=', 'acme')
        .where('email', '=', 'find@x.io')
        .execute()
      expect((await raw.selectFrom(orders).select('name').where('id', '=', a).executeTakeFirst())?.name).toBe(
        'renamed',
      )
      expect((await raw.selectFrom(orders).select('name').where('id', '=', g).executeTakeFirst())?.name).toBe(
        'o',
      )
      // indexOf for raw SQL needs the tenant too.
      await expectRefused(() => app.indexOf(orders, 'email', 'find@x.io'), 'TENANT_REQUIRED')
      const [probe] = await app.indexOf(orders, 'email', 'find@x.io', undefined, { tenant_id: 'globex' })
      expect(
        (await raw.selectFrom(orders).select('id').where('email_bidx', '=', probe!).execute()).map(
          (r) => r.id,
        ),
      ).toEqual([g])
    })

    it('keys are created only on purpose: a new tenant write fails without them (KEY_NOT_FOUND), or creates them with createTenantKeys; never over a tenant whose rows hold ciphertext (KEYS_MISSING)', async () => {
      const before = await count()
      const e = await failure(() => order(db, 'initech', 'a@initech.io'))
      expect(e).toBeInstanceOf(KeyError)
      expect((e as KeyError).code).toBe('KEY_NOT_FOUND')
      expect(await count()).toBe(before)
      expect(await keyRows(keyName('initech'))).toEqual([])
      // A search never creates keys, even with createTenantKeys.
      const s = await failure(() => t.byEmail('initech', 'a@initech.io', autoDb))
      expect((s as KeyError).code).toBe('KEY_NOT_FOUND')
      expect(await keyRows(keyName('initech'))).toEqual([])
      // Not inside a transaction: a rollback would remove keys that already encrypted data.
      const inTrx = await failure(() =>
        autoDb.transaction().execute((trx) => order(trx, 'initech', 'a@initech.io')),
      )
      expect((inTrx as KeyError).code).toBe('KEY_NOT_FOUND')
      expect((inTrx as KeyError).message).toContain('inside a transaction')
      expect(await keyRows(keyName('initech'))).toEqual([])
      // Nor inside one begun in raw SQL on a connection of the application's own (`statements`
      // run after BEGIN, then the first write of the tenant, then ROLLBACK).
      const inRaw = (...statements: string[]) =>
        failure(() =>
          autoDb.connection().execute(async (c) => {
            await sql`begin`.execute(c)
            try {
              for (const statement of statements) await sql.raw(statement).execute(c)
              await order(c, 'initech', 'a@initech.io')
            } finally {
              await sql`rollback`.execute(c)
            }
          }),
        )
      expect(((await inRaw()) as KeyError).code).toBe('KEY_NOT_FOUND')
      expect(await keyRows(keyName('initech'))).toEqual([])
      // COMMIT AND CHAIN opens the next transaction at once: still inside one.
      const chained = await inRaw('commit and chain')
      expect((chained as KeyError).code).toBe('KEY_NOT_FOUND')
      expect(await keyRows(keyName('initech'))).toEqual([])
      // The first write of the tenant, with createTenantKeys: keys created, row written and readable.
      const id = await order(autoDb, 'initech', 'a@initech.io')
      expect((await keyRows(keyName('initech'))).map((r) => r.purpose)).toEqual(['data', 'index'])
      expect(await db.selectFrom(orders).select('email').where('id', '=', id).execute()).toEqual([
        { email: 'a@initech.io' },
      ])
      // Its key rows are lost (dropped, edited, another environment's backup): no fresh keys over its data.
      await raw.deleteFrom(keyTable).where('logical_table', '=', keyName('initech')).execute()
      auto.keyRing().refresh()
      app.keyRing().refresh()
      const lost = await failure(() => order(autoDb, 'initech', 'b@initech.io'))
      expect((lost as KeyError).code).toBe('KEYS_MISSING')
      expect((lost as KeyError).message).toContain('hold ciphertext')
      const init = await failure(() => app.initTenant(db, orders, 'initech'))
      expect((init as KeyError).code).toBe('KEYS_MISSING')
      const cli = await failure(() => ops.init({ tables: [orders], tenants: ['initech'] }))
      expect((cli as KeyError).code).toBe('KEYS_MISSING')
      expect(await keyRows(keyName('initech'))).toEqual([])
      // Another tenant is unaffected: createTenantKeys makes its keys.
      await order(autoDb, 'umbrella', 'u@umbrella.io')
      expect((await keyRows(keyName('umbrella'))).length).toBe(2)
      // ops.init --tenant creates a tenant's keys and reports them per tenant.
      const result = await ops.init({ tables: [orders], tenants: ['hooli'] })
      expect(result.keys.map((k) => [k.tenant, k.purpose, k.created])).toEqual([
        ['hooli', 'data', true],
        ['hooli', 'index', true],
      ])
    })

    it('a ciphertext copied from one tenant row into another tenant row does not decrypt', async () => {
      const a = await order(db, 'acme', 'copy-a@x.io', '777-77-7777')
      const g = await order(db, 'globex', 'copy-g@x.io', '888-88-8888')
      const source = await raw
        .selectFrom(orders)
        .select(['ssn', 'ssn_bidx'])
        .where('id', '=', a)
        .executeTakeFirstOrThrow()
      await raw
        .updateTable(orders)
        .set({ ssn: source.ssn, ssn_bidx: source.ssn_bidx })
        .where('id', '=', g)
        .execute()
      const e = await failure(() => db.selectFrom(orders).select('ssn').where('id', '=', g).execute())
      expect((e as { code?: string }).code).toBe('DECRYPT_AUTH_FAILED')
      expect((e as { rowContext?: unknown }).rowContext).toEqual({ tenant_id: 'globex', id: g })
      // The search of the copied value under globex's key does not find it either.
      expect(
        await db
          .selectFrom(orders)
          .select('id')
          .where('tenant_id', '=', 'globex')
          .where('ssn', '=', '777-77-7777')
          .execute(),
      ).toEqual([])
      await raw.deleteFrom(orders).where('id', '=', g).execute()
    })

    it('rotation per tenant: kfe rotate --tenant moves one tenant to a new version; --all-tenants every tenant', async () => {
      const old = await order(db, 'globex', 'rot@x.io')
      const invalid = await failure(() => ops.rotate(orders, { purpose: 'data' }))
      expect((invalid as { code?: string }).code).toBe('OPS_INVALID')
      // Without its re-encryption (tenant-rotation.test.ts runs it): the former version stays live.
      const r = await ops.rotate(orders, { purpose: 'data', tenant: 'globex', reencrypt: false })
      expect(r).toMatchObject({ version: 2, previous: 1, state: 'active', interrupted: false })
      expect(r.left).toBeUndefined()
      expect(
        (await keyRows(keyName('globex')))
          .filter((k) => k.purpose === 'data')
          .map((k) => `v${k.version}/${k.state}`),
      ).toEqual(['v1/decrypt-only', 'v2/active'])
      expect((await keyRows(keyName('acme'))).filter((k) => k.purpose === 'data').length).toBe(1)
      await new Promise((resolve) => setTimeout(resolve, 60)) // the application's metadata TTL
      const fresh = await order(db, 'globex', 'rot2@x.io')
      const version = async (id: string) =>
        readHeader(
          (await raw.selectFrom(orders).select('email').where('id', '=', id).executeTakeFirstOrThrow())
            .email as Uint8Array,
        ).keyVersion
      expect(await version(fresh)).toBe(2)
      expect(await version(old)).toBe(1)
      expect(
        await db.selectFrom(orders).select('email').where('id', 'in', [old, fresh]).execute(),
      ).toHaveLength(2)
      // Every tenant's index key: stage all, then activate each.
      const all = await ops.rotateTenants(orders, { purpose: 'index' })
      expect(all.interrupted).toBe(false)
      expect(all.tenants.map((t) => [t.tenant, t.version, t.state]).sort()).toEqual(
        ['acme', 'globex', 'hooli', 'umbrella'].map((t) => [t, 2, 'active']),
      )
      await new Promise((resolve) => setTimeout(resolve, 60))
      // Searches cover both live index versions of the tenant.
      expect(await t.byEmail('globex', 'rot@x.io')).toEqual([{ id: old }])
    })
  })
})
