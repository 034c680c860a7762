import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  KeyStore,
  localKeyProvider,
} from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
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
        // A Kysely transaction in that session ends, and the session is still in one.
        const again = await db
          .connection()
          .execute(async (c) => {
            await sql`set autocommit = 0`.execute(c)
            try {
              await c
                .transaction()
                .execute((trx) =>
                  trx.insertInto(t.table).values({ id: 22, tenant_id: 'acme', email: 'a@acme.io' }).execute(),
                )
              await c
                .insertInto(t.table)
                .values({ id: 23, tenant_id: 'globex', email: 'g@globex.io' })
                .execute()
            } finally {
              await sql`rollback`.execute(c)
              await sql`set autocommit = 1`.execute(c)
            }
          })
          .catch((e: unknown) => e)
        expect(again).toMatchObject({ code: 'KEY_NOT_FOUND' })
        expect(await tenants()).toEqual([`${t.table}#tenant_id=acme`])
        await t.raw.deleteFrom(t.table).execute()
        // Outside it, the tenant's first write makes its keys.
        await db.insertInto(t.table).values({ id: 21, tenant_id: 'globex', email: 'g@globex.io' }).execute()
        expect(await tenants()).toEqual([`${t.table}#tenant_id=acme`, `${t.table}#tenant_id=globex`])
        await t.raw.deleteFrom(t.table).execute()
      },
    )
  })
})

/**
 * The key table made inside a caller's transaction (a migration's, or `fieldEncryptionOps` given
 * one): its existence is asked of the catalog, so a missing table does not abort a PostgreSQL
 * transaction; development mode never makes it there, and says so with a typed error.
 */
describe.each(backends())('the key table and a caller transaction [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const [rawDialect, appDialect] = backend.createDialectPair()
    // biome-ignore lint/suspicious/noExplicitAny: generated table names
    const db = new Kysely<any>({ dialect: rawDialect })
    const drops: string[] = []
    afterAll(async () => {
      for (const t of drops) await sql`drop table if exists ${sql.table(t)}`.execute(db)
      if (backend.name !== 'pglite') await db.destroy()
    })

    it('KeyStore(trx).ensureSchema() and ops({ db: trx }).init() on a fresh database', async () => {
      const users = uniqueName('tx_fresh')
      const keys = uniqueName('tx_fresh_keys')
      const jobs = uniqueName('tx_fresh_jobs')
      drops.push(users, keys, jobs, `${jobs}_batches`)
      await sql`create table ${sql.table(users)} (id integer primary key, email ${sql.raw(backend.family === 'mysql' ? 'blob' : 'bytea')})`.execute(
        db,
      )
      const schema = encryptedSchema({ [users]: { email: encrypted.text() } })
      const created = await db.transaction().execute(async (trx) => {
        await new KeyStore(trx, { tableName: keys }).ensureSchema()
        const ops = fieldEncryptionOps({
          db: trx,
          schema,
          keyProvider: localKeyProvider({ id: 'local:tx-fresh', key: randomBytes(32) }),
          keyTable: keys,
          jobsTable: jobs,
        })
        return (await ops.init()).created
      })
      expect(created).toBe(2)
      expect(await new KeyStore(db, { tableName: keys }).list(users)).toHaveLength(2)
    })

    it('development mode, a fresh database, a first query inside a transaction: KEY_NOT_FOUND saying why, and the transaction still usable', async () => {
      const users = uniqueName('tx_dev')
      const keys = uniqueName('tx_dev_keys')
      drops.push(users, keys)
      const schema = encryptedSchema(
        { [users]: { email: encrypted.text() } },
        { tables: { [users]: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' } } },
      )
      await db.schema
        .createTable(users)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(64)')
        .$call(addEncryptedColumns(schema, users, backend.family))
        .execute()
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ id: 'local:tx-dev', key: randomBytes(32) }),
        keyTable: keys,
        autoCreateKeys: true,
        createTenantKeys: true,
        verifySchema: false,
      })
      // biome-ignore lint/suspicious/noExplicitAny: generated table names
      const app = new Kysely<any>({ dialect: encryption.wrap(appDialect), plugins: [encryption.plugin] })
      let after: unknown
      const failed = await app
        .transaction()
        .execute(async (trx) => {
          await trx
            .insertInto(users)
            .values({ id: 1, tenant_id: 'acme', email: 'a@x.io' })
            .execute()
            .catch(async (error: unknown) => {
              after = await sql`select 1 as one`.execute(trx).then(
                () => 'ok',
                (e: unknown) => e,
              )
              throw error
            })
        })
        .catch((e: unknown) => e)
      expect(failed).toMatchObject({ code: 'KEY_NOT_FOUND' })
      expect((failed as Error).message).toMatch(/not created inside a transaction|outside transactions/)
      expect(after).toBe('ok')
      // Outside a transaction, development mode makes the table and the tenant's keys.
      await app.insertInto(users).values({ id: 2, tenant_id: 'acme', email: 'b@x.io' }).execute()
      expect(await app.selectFrom(users).select(['id', 'email']).execute()).toEqual([
        { id: 2, email: 'b@x.io' },
      ])
      await encryption.close()
      if (backend.name !== 'pglite') await app.destroy()
    })
  })
})
