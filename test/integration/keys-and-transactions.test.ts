import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted, KeyStore, localKeyProvider } from '../../src/index.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import { type TenantTable, tenantTable } from '../support/tenant-table.js'

/**
 * Keys are never created, nor the key table touched, inside the application's transaction: its
 * rollback would remove keys that rows may already be encrypted under (the instance caches them),
 * and MySQL commits the open transaction at any DDL, `CREATE TABLE IF NOT EXISTS` of a table that
 * exists included. A session with autocommit off (MySQL's `SET autocommit = 0`) is a transaction.
 */
describe.each(backends())('keys and the application transaction [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const kek = randomBytes(32)
    const local = () => localKeyProvider({ id: 'local:tx-keys', key: Buffer.from(kek) })
    const plain = uniqueName('tx_plain')
    let t: TenantTable
    const plainIds = async () =>
      (await t.raw.selectFrom(plain).select('id').orderBy('id').execute()).map((r) => Number(r.id))
    const tenants = async () =>
      [
        ...new Set(
          (await new KeyStore(t.raw, { tableName: t.keyTable }).listAll()).map((k) => k.logicalTable),
        ),
      ].sort()

    beforeAll(async () => {
      t = await tenantTable(backend, {
        prefix: 'tx_keys',
        columns: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
        idType: 'integer',
        tenantType: 'varchar(64)',
        provider: local,
      })
      await sql`create table ${sql.table(plain)} (id integer)`.execute(t.raw)
      await t.process().encryption.initTenant(t.raw, t.table, 'acme')
    }, 120_000)
    afterAll(async () => {
      await t?.destroy([plain])
    })

    it('init and initTenant given a transaction are CONFIG_INVALID; the transaction still rolls back whole', async () => {
      const { encryption, db } = t.process()
      for (const call of ['init', 'initTenant'] as const) {
        const failed = await db
          .transaction()
          .execute(async (trx) => {
            await trx.insertInto(plain).values({ id: 1 }).execute()
            await (call === 'init' ? encryption.init(trx) : encryption.initTenant(trx, t.table, 'globex'))
          })
          .catch((e: unknown) => e)
        expect(failed).toMatchObject({ code: 'CONFIG_INVALID' })
        expect((failed as Error).message).toContain('transaction')
      }
      expect(await plainIds()).toEqual([])
      expect(await tenants()).toEqual([`${t.table}#tenant_id=acme`])
    })

    it("development mode: a tenant's first write of the process inside a transaction that rolls back leaves nothing behind", async () => {
      const { db } = t.process({ autoCreateKeys: true })
      const failed = await db
        .transaction()
        .execute(async (trx) => {
          await trx.insertInto(plain).values({ id: 10 }).execute()
          await trx.insertInto(t.table).values({ id: 10, tenant_id: 'acme', email: 'a@acme.io' }).execute()
          throw new Error('rollback please')
        })
        .catch((e: unknown) => e)
      expect(failed).toMatchObject({ message: 'rollback please' })
      // MySQL committed both at the key table's CREATE TABLE IF NOT EXISTS.
      expect(await plainIds()).toEqual([])
      expect(await t.raw.selectFrom(t.table).select('id').execute()).toEqual([])
    })

    it.runIf(backend.family === 'mysql')(
      'SET autocommit = 0 on a connection is a transaction: a new tenant gets no keys there, and the rollback leaves none',
      async () => {
        const { db } = t.process({ createTenantKeys: true })
        const failed = await db
          .connection()
          .execute(async (c) => {
            await sql`set autocommit = 0`.execute(c)
            try {
              await c
                .insertInto(t.table)
                .values({ id: 20, tenant_id: 'globex', email: 'g@globex.io' })
                .execute()
            } finally {
              await sql`rollback`.execute(c)
              await sql`set autocommit = 1`.execute(c)
            }
          })
          .catch((e: unknown) => e)
        expect(failed).toMatchObject({ code: 'KEY_NOT_FOUND' })
        expect(await tenants()).toEqual([`${t.table}#tenant_id=acme`])
        expect(await t.raw.selectFrom(t.table).select('id').execute()).toEqual([])
        // Outside it, the tenant's first write makes its keys.
        await db.insertInto(t.table).values({ id: 21, tenant_id: 'globex', email: 'g@globex.io' }).execute()
        expect(await tenants()).toEqual([`${t.table}#tenant_id=acme`, `${t.table}#tenant_id=globex`])
        await t.raw.deleteFrom(t.table).execute()
      },
    )
  })
})
