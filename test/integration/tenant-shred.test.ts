import { randomBytes, randomUUID } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  fieldEncryption,
  KeyError,
  KeyRing,
  KeyStore,
  keyCheckValue,
  localKeyProvider,
  rewrapAll,
} from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { type TenantFixture, tenantFixture } from '../support/tenant-fixture.js'
import { failure } from './plugin-at-rest.js'

/** Crypto-shredding of one tenant (`kfe shred`), on every backend. */
describe.each(backends())('crypto-shredding [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: TenantFixture
    const kek = randomBytes(32)
    beforeAll(async () => {
      t = await tenantFixture(backend, {
        provider: localKeyProvider({ id: 'local:tenants', key: Buffer.from(kek) }),
      })
      // acme: data v1, index v1 and v2 (a rotated index key); globex: v1 of both.
      await t.encryption.initTenant(t.db, t.table, 'acme')
      await t.ops.rotate(t.table, { purpose: 'index', tenant: 'acme', reencrypt: false })
      await t.settle()
    })
    afterAll(async () => {
      await t?.destroy()
    })
    const keyRows = async (name: string) =>
      t.raw.selectFrom(t.keyTable).selectAll().where('logical_table', '=', name).orderBy('purpose').execute()

    it('kfe shred destroys one tenant keys: its rows fail with KEY_DESTROYED, its keys are never re-created, other tenants are unaffected, an audit record is written', async () => {
      const a = await t.order('acme', 'shred@x.io')
      const g = await t.order('globex', 'keep@x.io')
      const dry = await t.ops.shred(t.table, { tenant: 'acme', dryRun: true })
      expect(dry).toMatchObject({ destroyed: 3, alreadyDestroyed: 0, dryRun: true }) // data v1, index v1 and v2
      expect((await keyRows(t.keyName('acme'))).every((k) => k.state !== 'destroyed')).toBe(true)
      const done = await t.ops.shred(t.table, { tenant: 'acme' })
      expect(done).toMatchObject({ tenant: 'acme', keyName: t.keyName('acme'), destroyed: 3, dryRun: false })
      // Tombstones: every row kept, no wrapping, no check value.
      const rows = await keyRows(t.keyName('acme'))
      expect(rows.map((k) => [k.state, k.wrappings, k.check_value ?? null])).toEqual(
        rows.map(() => ['destroyed', '[]', null]),
      )
      // A process that starts now (or whose caches expired) cannot read, search or write acme.
      const { dialects, close } =
        backend.name === 'pglite'
          ? { dialects: [], close: async () => {} }
          : { dialects: [t.extraDialect()], close: async () => {} }
      const fresh = fieldEncryption({
        schema: t.schema,
        // Its own provider object on the same KEK: closing `fresh` closes it.
        keyProvider: localKeyProvider({ id: 'local:tenants', key: Buffer.from(kek) }),
        keyTable: t.keyTable,
        verifySchema: false,
        createTenantKeys: true,
      })
      const freshDb =
        backend.name === 'pglite'
          ? undefined
          : new Kysely<TestDB>({ dialect: fresh.wrap(dialects[0]!), plugins: [fresh.plugin] })
      // (PGlite: one in-memory database per instance; the application's own Kysely, once its caches are dropped.)
      if (freshDb === undefined) {
        t.encryption.keyRing().forget(t.keyName('acme'))
      }
      const reader = freshDb ?? t.db
      const writer = freshDb ?? t.db
      try {
        const read = await failure(() =>
          reader.selectFrom(t.table).select('email').where('id', '=', a).execute(),
        )
        expect(read).toBeInstanceOf(KeyError)
        expect((read as KeyError).code).toBe('KEY_DESTROYED')
        expect((read as KeyError).table).toBe(t.table)
        expect((read as KeyError).message).toContain('"acme"')
        const search = await failure(() => t.byEmail('acme', 'shred@x.io', reader))
        expect((search as KeyError).code).toBe('KEY_DESTROYED')
        // Not re-created, even with createTenantKeys or an explicit init.
        const write = await failure(() =>
          writer
            .insertInto(t.table)
            .values({ id: randomUUID(), tenant_id: 'acme', name: 'o', email: 'again@x.io', ssn: '1' })
            .execute(),
        )
        expect((write as KeyError).code).toBe('KEY_DESTROYED')
        expect((await t.encryption.initTenant(t.db, t.table, 'acme')).created).toEqual([])
        expect((await keyRows(t.keyName('acme'))).every((k) => k.state === 'destroyed')).toBe(true)
        // Other tenants: untouched.
        expect(await reader.selectFrom(t.table).select('email').where('id', '=', g).execute()).toEqual([
          { email: 'keep@x.io' },
        ])
        expect((await keyRows(t.keyName('globex'))).some((k) => k.state === 'destroyed')).toBe(false)
      } finally {
        await fresh.close()
        await freshDb?.destroy()
        await close()
      }
      // The audit record, by the database's clock.
      const audit = await t.raw.selectFrom(t.jobsTable).selectAll().where('kind', '=', 'shred').execute()
      expect(audit.map((r) => [r.id, r.logical_table, Number(r.total_batches)])).toEqual([
        [`shred:${t.keyName('acme')}`, t.keyName('acme'), 3],
      ])
      // Shredding again destroys nothing new; a tenant without keys is an error, not a tombstone.
      expect(await t.ops.shred(t.table, { tenant: 'acme' })).toMatchObject({
        destroyed: 0,
        alreadyDestroyed: 3,
      })
      // kfe status counts the table's tenants from the key table (acme shredded, globex live), and
      // acme's rows apart: unreadable by design, not failing rows.
      const [st] = (await t.ops.status({ table: t.table })).tables
      expect(st?.tenants?.destroyed).toBe(1)
      expect(st?.tenants?.live).toBeGreaterThanOrEqual(1)
      expect(st?.tenants?.shreddedRows).toBeGreaterThanOrEqual(1)
      expect(st?.verdict).toMatch(
        /with live keys, 1 shredded; \d+ rows of shredded tenants \(unreadable by design\)/,
      )
      expect(st?.attention.some((a) => a.includes('kfe init'))).toBe(false)
      expect(((await failure(() => t.ops.shred(t.table, { tenant: 'nobody' }))) as KeyError).code).toBe(
        'KEY_NOT_FOUND',
      )
      // A KEK rotation (rewrap) passes over the tombstones and gives them no wrapping.
      const next = localKeyProvider({ id: 'local:tenants-2', key: randomBytes(32) })
      // Its dry run counts the keys the run will wrap: not the tombstones. (Not closed: it would
      // close the fixture's provider.)
      const dryRewrap = await fieldEncryptionOps({
        db: t.raw,
        schema: t.schema,
        keyProvider: [t.provider, next],
        keyTable: t.keyTable,
        jobsTable: t.jobsTable,
      }).rewrap({ from: t.provider.id, to: next.id, dryRun: true })
      const rewrapped = await rewrapAll({
        store: new KeyStore(t.raw, { tableName: t.keyTable }),
        from: [t.provider],
        to: next,
      })
      expect(rewrapped.rewrapped).toBeGreaterThan(0)
      expect(dryRewrap.rewrapped).toBe(rewrapped.rewrapped)
      expect((await keyRows(t.keyName('acme'))).map((k) => k.wrappings)).toEqual(['[]', '[]', '[]'])
      expect((await keyRows(t.keyName('globex'))).every((k) => k.wrappings.includes('local:tenants-2'))).toBe(
        true,
      )
      // No rotation brings a shredded tenant back: staging after its tombstones is refused, and a
      // version staged in a race with the shred (its row inserted after the shred's update) is
      // never activated.
      const store = new KeyStore(t.raw, { tableName: t.keyTable })
      const wrapped = [{ kekId: 'local:tenants', wrapped: randomBytes(60) }]
      const staged = await failure(() => store.stage(t.keyName('acme'), 'data', wrapped))
      expect((staged as KeyError).code).toBe('KEY_DESTROYED')
      await t.raw
        .insertInto(t.keyTable)
        .values({
          logical_table: t.keyName('acme'),
          purpose: 'data',
          version: 9,
          state: 'staged',
          wrappings: JSON.stringify([
            { kekId: 'local:tenants', wrapped: randomBytes(60).toString('base64') },
          ]),
          created_at: new Date(),
        })
        .execute()
      const activated = await failure(() => store.activate(t.keyName('acme'), 'data', 9))
      expect((activated as KeyError).code).toBe('KEY_DESTROYED')
      expect((await keyRows(t.keyName('acme'))).find((k) => Number(k.version) === 9)?.state).toBe('staged')
    })

    it('a process that has seen the tombstones (its metadata reloaded) stops decrypting with the keys it cached', async () => {
      const id = await t.order('initech', 'cached@x.io')
      // The application's instance reads the row: initech's data key is in its cache.
      expect(await t.db.selectFrom(t.table).select('email').where('id', '=', id).execute()).toEqual([
        { email: 'cached@x.io' },
      ])
      await t.ops.shred(t.table, { tenant: 'initech' })
      await t.settle()
      // A search reloads the metadata and sees the tombstones …
      expect(((await failure(() => t.byEmail('initech', 'cached@x.io'))) as KeyError).code).toBe(
        'KEY_DESTROYED',
      )
      // … and a read on the same instance no longer decrypts with the cached key.
      const read = await failure(() =>
        t.db.selectFrom(t.table).select('email').where('id', '=', id).execute(),
      )
      expect((read as KeyError).code).toBe('KEY_DESTROYED')
    })
  })
})

/**
 * A tenant's rotation stages a version while the tenant is shredded: the stager read the versions
 * (no tombstone yet), the shred ran, then the stager inserted. No live key of the shredded tenant
 * may be left in the key table.
 */
describe.each(backends())('crypto-shredding racing a stage [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const keyTable = uniqueName('kfe_keys_shred')
    const keyName = 'orders#tenant_id=acme'
    const kek = localKeyProvider({ id: 'local:race', key: randomBytes(32) })
    const [plainDialect, slowDialect] = backend.createDialectPair()
    const raw = new Kysely<unknown>({ dialect: plainDialect })
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    let inserting!: () => void
    const insertSeen = new Promise<void>((resolve) => {
      inserting = resolve
    })
    // The stager's INSERT waits until the shred has run.
    const slow = new Kysely<unknown>({
      dialect: hooked(slowDialect, async (query) => {
        if (/^insert into/i.test(query.sql) && query.sql.includes(keyTable)) {
          inserting()
          await gate
        }
      }),
    })
    afterAll(async () => {
      await dropTables(raw, [keyTable])
      await slow.destroy()
      // On PGlite the pair shares one instance, which slow.destroy() closed.
      if (backend.name !== 'pglite') await raw.destroy()
    })

    it('the version staged after the shred is destroyed too, and the stage fails with KEY_DESTROYED', async () => {
      const plain = new KeyStore(raw, { tableName: keyTable })
      await plain.ensureSchema()
      const ring = new KeyRing({ store: plain, providers: [kek] })
      await ring.init([keyName])
      const ref = { logicalTable: keyName, purpose: 'data' as const, version: 2 }
      const generated = await kek.generateDataKey(ref)
      const staging = new KeyStore(slow, { tableName: keyTable })
        .stage(keyName, 'data', [generated.wrapped], 2, keyCheckValue(generated.plaintext, ref))
        .catch((e: unknown) => e)
      generated.plaintext.fill(0)
      await insertSeen
      expect(await plain.destroy(keyName)).toBe(2)
      release()
      const error = await staging
      expect(error).toBeInstanceOf(KeyError)
      expect(error).toMatchObject({ code: 'KEY_DESTROYED' })
      const rows = await plain.listAll([keyName])
      expect(rows.map((k) => [k.purpose, k.version, k.state, k.wrappings.length])).toEqual([
        ['data', 1, 'destroyed', 0],
        ['data', 2, 'destroyed', 0],
        ['index', 1, 'destroyed', 0],
      ])
      const fresh = new KeyRing({ store: plain, providers: [kek] })
      await expect(fresh.key(ref)).rejects.toMatchObject({ code: 'KEY_DESTROYED' })
      await ring.close()
    })
  })
})

/**
 * The other order, on PostgreSQL: the shred's UPDATE has taken its snapshot and waits on a row
 * lock while a stage inserts and reads the versions again (no tombstone yet: the UPDATE has not
 * committed). Only the shred's own read after its update (destroyVersions) finds the new version.
 */
describe.each(backends().filter((b) => b.name === 'postgres'))(
  'crypto-shredding waiting on a lock while a stage runs [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const keyTable = uniqueName('kfe_keys_shredlock')
      const keyName = 'orders#tenant_id=acme'
      const kek = localKeyProvider({ id: 'local:racelock', key: randomBytes(32) })
      const dbs = [0, 1, 2].map(() => new Kysely<unknown>({ dialect: backend.createDialect() }))
      const [raw, shredder, stager] = dbs as [Kysely<unknown>, Kysely<unknown>, Kysely<unknown>]
      afterAll(async () => {
        await dropTables(raw, [keyTable])
        for (const db of dbs) await db.destroy()
      })

      it('the version staged while the shred waited is destroyed by the shred', async () => {
        const plain = new KeyStore(raw, { tableName: keyTable })
        await plain.ensureSchema()
        const ring = new KeyRing({ store: plain, providers: [kek] })
        await ring.init([keyName])
        // A transaction holds data v1's row: the shred's UPDATE blocks on it, its snapshot taken.
        let shred: Promise<number> | undefined
        await raw.transaction().execute(async (trx) => {
          await sql`select 1 from ${sql.table(keyTable)} where logical_table = ${keyName} and purpose = 'data' and version = 1 for update`.execute(
            trx,
          )
          shred = new KeyStore(shredder, { tableName: keyTable }).destroy(keyName)
          shred.catch(() => undefined) // awaited below, once the lock is gone
          // Until PostgreSQL shows the shred waiting on the lock.
          for (let i = 0; i < 400; i++) {
            const { rows } = await sql<{ n: string | number }>`select count(*) as n from pg_stat_activity
            where wait_event_type = 'Lock' and query like ${`update %${keyTable}%`}`.execute(raw)
            if (Number(rows[0]?.n) > 0) break
            await new Promise((resolve) => setTimeout(resolve, 25))
          }
          const ref = { logicalTable: keyName, purpose: 'data' as const, version: 2 }
          const generated = await kek.generateDataKey(ref)
          // The stage commits, and its read after the insert sees no tombstone (not yet committed).
          const staged = await new KeyStore(stager, { tableName: keyTable }).stage(
            keyName,
            'data',
            [generated.wrapped],
            2,
            keyCheckValue(generated.plaintext, ref),
          )
          generated.plaintext.fill(0)
          expect(staged.version).toBe(2)
        })
        // The lock is gone: the shred's update ends, and its read after it finds v2.
        expect(await shred).toBe(3)
        const rows = await plain.listAll([keyName])
        expect(rows.map((k) => [k.purpose, k.version, k.state, k.wrappings.length])).toEqual([
          ['data', 1, 'destroyed', 0],
          ['data', 2, 'destroyed', 0],
          ['index', 1, 'destroyed', 0],
        ])
        await ring.close()
      })
    })
  },
)
