/**
 * One conformance suite for every key provider (DESIGN.md §2, STYLE.md habit 9): the local KEK,
 * AWS KMS (the real @aws-sdk/client-kms against the loopback endpoint) and PKCS#11 (SoftHSM2).
 * Each case runs on each provider; the plugin cases also run on every database backend.
 *
 * Provider calls are counted at the keeper: the KMS endpoint's request counters, and a counting
 * wrapper in front of the local and PKCS#11 providers.
 */
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { FieldEncryptionError, KeyProviderError } from '../../src/errors.js'
import type { AuditEvent, KeyRef } from '../../src/keys/key-provider.js'
import { KeyRing } from '../../src/keys/key-ring.js'
import { KeyStore } from '../../src/keys/key-store.js'
import { backends, uniqueName } from '../support/backends.js'
import { newPGlite } from '../support/pglite.js'
import {
  manualClock,
  type ProviderFixture,
  type ProviderTestDb,
  providerFactories,
  providerTestDb,
  type TestProcess,
} from '../support/providers.js'

const REF: KeyRef = { logicalTable: 'conformance', purpose: 'data', version: 1 }
const TTL = 60_000
/**
 * Rows of the O(keys) workload: 4 inserts of 500, then 200 searches by each process (every
 * `LOOKUP_STEP`-th row). Its calls are compared exactly with the 2 keys (2 for the writer, 2 for
 * a fresh reader), so 2,000 rows and 400 statements tell O(keys) from O(rows) or O(statements) as
 * 10,000 rows did; the rows stay below a salt epoch (2^16 encryptions), as they did.
 */
const WORKLOAD_ROWS = 2_000
const LOOKUP_STEP = 10
const GRACE = 120_000

/** Awaits a rejection; fails the test unless it is a KeyProviderError. */
async function providerError(promise: Promise<unknown>): Promise<KeyProviderError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(KeyProviderError)
  return error as KeyProviderError
}

/** Every way a key's bytes could appear in text. */
function encodings(bytes: Buffer): string[] {
  return [
    bytes.toString('hex'),
    bytes.toString('base64'),
    bytes.toString('base64url'),
    JSON.stringify([...bytes]),
  ]
}

async function count(t: ProviderTestDb, table: string): Promise<number> {
  const row = await t.raw
    .selectFrom(table)
    .select((eb) => eb.fn.countAll<number | string | bigint>().as('n'))
    .executeTakeFirstOrThrow()
  return Number(row.n)
}

/**
 * A failed query may leave a sibling key load in flight (a query loads its data and index keys in
 * parallel, and stops at the first failure). A later query joins such a load and sees its error,
 * and its request may reach the keeper after the test moved on. Joining the loads of both keys
 * waits for them, so the next step of a test observes only its own calls.
 */
async function settleKeyLoads(p: TestProcess, table: string): Promise<void> {
  const ring = p.encryption.keyRing()
  await Promise.allSettled(
    (['data', 'index'] as const).map((purpose) => ring.key({ logicalTable: table, purpose, version: 1 })),
  )
}

/**
 * One PGlite key store shared by the provider-alone cases. Started in a hook, not by the first
 * test that needs it: a PGlite takes ~8 s of CPU to start (30-70 s of wall time on a loaded
 * machine), which counted against that test's 60 s timeout and failed it under load.
 */
let sharedStore: { db: Kysely<unknown>; store: KeyStore } | undefined
beforeAll(async () => {
  const db = new Kysely<unknown>({ dialect: new PGliteDialect(newPGlite()) })
  const store = new KeyStore(db, { tableName: uniqueName('conformance_keys') })
  await store.ensureSchema()
  sharedStore = { db, store }
})
function keyStore(): KeyStore {
  if (sharedStore === undefined) throw new Error('the shared key store is started in beforeAll')
  return sharedStore.store
}
afterAll(async () => {
  await sharedStore?.db.destroy()
})

const userRow = (i: number) => ({
  name: `user ${i}`,
  email: `User${i}@Example.io`,
  ssn: `${String(100 + (i % 900)).padStart(3, '0')}-45-${String(i % 10_000).padStart(4, '0')}`,
  score: i,
})

describe.each(providerFactories())('provider conformance: $name', (factory) => {
  describe.runIf(factory.available)(`${factory.name}`, () => {
    let fx: ProviderFixture
    beforeAll(async () => {
      fx = await factory.create()
    })
    afterEach(() => fx.reset())
    afterAll(async () => {
      await fx?.cleanup()
    })

    describe('the provider alone', () => {
      it('round trip: generateDataKey then unwrap gives the same 32 bytes, in 2 keeper calls', async () => {
        const before = fx.calls()
        const generated = await fx.provider.generateDataKey(REF)
        expect(generated.plaintext).toHaveLength(32)
        expect(generated.wrapped.kekId).toBe(fx.provider.id)
        const unwrapped = await fx.provider.unwrap(generated.wrapped, REF)
        expect(unwrapped.equals(generated.plaintext)).toBe(true)
        expect(fx.calls() - before).toBe(2)
      })

      it.each([
        ['another table', { ...REF, logicalTable: 'other' }],
        ['another purpose', { ...REF, purpose: 'index' as const }],
        ['another version', { ...REF, version: 2 }],
      ])('a wrapping presented for %s is refused with a typed error', async (_, ref) => {
        const generated = await fx.provider.generateDataKey(REF)
        const error = await providerError(fx.provider.unwrap(generated.wrapped, ref))
        expect(['PROVIDER_INVALID_CIPHERTEXT', 'UNWRAP_FAILED']).toContain(error.code)
        expect(error.providerId).toBe(fx.provider.id)
        expect(error.table).toBe(ref.logicalTable)
        for (const s of encodings(generated.plaintext)) expect(error.message).not.toContain(s)
      })

      it('a wrapping made under another KEK (relabelled as ours) is refused by the keeper with a typed error', async () => {
        const other = await fx.otherKek()
        const generated = await other.generateDataKey(REF)
        const relabelled = { kekId: fx.provider.id, wrapped: generated.wrapped.wrapped }
        const error = await providerError(fx.provider.unwrap(relabelled, REF))
        expect(['PROVIDER_INVALID_CIPHERTEXT', 'UNWRAP_FAILED']).toContain(error.code)
        for (const s of encodings(generated.plaintext)) expect(error.message).not.toContain(s)
      })

      it('a wrapping that names another KEK id is refused with a typed error', async () => {
        const other = await fx.otherKek()
        const generated = await other.generateDataKey(REF)
        const error = await providerError(fx.provider.unwrap(generated.wrapped, REF))
        expect(['PROVIDER_INVALID_CIPHERTEXT', 'UNWRAP_FAILED']).toContain(error.code)
      })

      it('a disabled KEK fails with PROVIDER_KEY_DISABLED and a clear message, and works again once enabled', async () => {
        const generated = await fx.provider.generateDataKey(REF)
        fx.fault.disable()
        const error = await providerError(fx.provider.unwrap(generated.wrapped, REF))
        expect(error.code).toBe('PROVIDER_KEY_DISABLED')
        expect(error.message).toMatch(/disabled/i)
        expect(error.providerId).toBe(fx.provider.id)
        expect(error.table).toBe(REF.logicalTable)
        for (const s of encodings(generated.plaintext)) expect(error.message).not.toContain(s)
        expect((await providerError(fx.provider.generateDataKey(REF))).code).toBe('PROVIDER_KEY_DISABLED')
        fx.fault.enable()
        expect((await fx.provider.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
      })

      it('a keeper that is down fails with PROVIDER_UNAVAILABLE', async () => {
        const generated = await fx.provider.generateDataKey(REF)
        fx.fault.down()
        expect((await providerError(fx.provider.unwrap(generated.wrapped, REF))).code).toBe(
          'PROVIDER_UNAVAILABLE',
        )
        expect((await providerError(fx.provider.generateDataKey(REF))).code).toBe('PROVIDER_UNAVAILABLE')
        fx.fault.up()
        expect((await fx.provider.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
      })

      it('100 parallel ring.key(ref) of one uncached key: exactly 1 unwrap at the keeper, identical correct bytes', async () => {
        const store = keyStore()
        const table = `single_flight_${fx.name}`
        const creator = new KeyRing({ autoCreate: true, store, providers: [fx.provider] })
        const expected = Buffer.from((await creator.activeKey(table, 'data')).bytes)
        // Another process: same key store, empty cache.
        const ring = new KeyRing({ autoCreate: true, store, providers: [fx.provider] })
        const ref: KeyRef = { logicalTable: table, purpose: 'data', version: 1 }
        const before = fx.calls()
        const keys = await Promise.all(Array.from({ length: 100 }, () => ring.key(ref)))
        expect(fx.calls() - before).toBe(1)
        expect(ring.stats().providerCalls).toBe(1)
        for (const key of keys) expect(key.bytes.equals(expected)).toBe(true)
        expect(new Set(keys).size).toBe(1)
        await creator.close()
        await ring.close()
      })
    })

    describe.each(backends())('through the plugin on $name', (backend) => {
      describe.runIf(backend.available)(`${backend.name}`, () => {
        let t: ProviderTestDb
        beforeAll(async () => {
          t = await providerTestDb(backend)
        })
        afterAll(async () => {
          await t?.destroy()
        })
        afterEach(async () => {
          fx.reset()
          await t.raw.deleteFrom(t.names.users).execute()
          await t.raw.deleteFrom(t.names.orders).execute()
          await t.raw.deleteFrom(t.names.keys).execute()
        })

        it('outage: cached keys serve through ttl and grace, then fail typed; uncached keys fail; nothing half-written', async () => {
          const users = t.names.users
          const orders = t.names.orders
          const clock = manualClock()
          const p = await t.open({
            keyProvider: fx.provider,
            cache: { ttlMs: TTL, graceMs: GRACE, now: clock.now },
          })
          await p.db.insertInto(users).values([1, 2, 3].map(userRow)).execute()
          expect(
            await p.db.selectFrom(users).select('email').where('email', '=', 'user2@example.io').execute(),
          ).toEqual([{ email: 'User2@Example.io' }])

          fx.fault.down()
          const atOutage = fx.calls()
          // Within ttl: the keeper is not even asked.
          await p.db.insertInto(users).values(userRow(4)).execute()
          expect(await p.db.selectFrom(users).select('id').execute()).toHaveLength(4)
          expect(
            await p.db.selectFrom(users).select('score').where('email', '=', 'user4@example.io').execute(),
          ).toEqual([{ score: 4 }])
          expect(fx.calls()).toBe(atOutage)

          // Past ttl, within grace: the reload fails (PROVIDER_UNAVAILABLE), the stale keys serve.
          clock.advance(TTL + 1)
          await p.db.insertInto(users).values(userRow(5)).execute()
          const rows = await p.db.selectFrom(users).selectAll().orderBy('id').execute()
          expect(rows.map((r) => r.email)).toEqual([1, 2, 3, 4, 5].map((i) => `User${i}@Example.io`))
          expect(
            await p.db.selectFrom(users).select('name').where('email', '=', 'USER5@example.io').execute(),
          ).toEqual([{ name: 'user 5' }])
          expect(fx.calls()).toBeGreaterThan(atOutage) // reloads were attempted
          expect(p.encryption.stats().keys?.cache.staleServed).toBeGreaterThan(0)

          // An uncached key (a table used for the first time) fails, typed; no row is written.
          const uncached = await p.db
            .insertInto(orders)
            .values({ item: 'book', email: 'a@x.io' })
            .execute()
            .then(
              () => undefined,
              (e: unknown) => e,
            )
          expect(uncached).toBeInstanceOf(KeyProviderError)
          expect((uncached as KeyProviderError).code).toBe('PROVIDER_UNAVAILABLE')
          expect((uncached as KeyProviderError).providerId).toBe(fx.provider.id)
          expect((uncached as KeyProviderError).table).toBe(orders)
          expect(await count(t, orders)).toBe(0)

          // Past ttl + grace: every query on the table fails with the provider's typed error.
          clock.advance(GRACE)
          const atRest = await count(t, users)
          for (const query of [
            () => p.db.selectFrom(users).selectAll().execute(),
            () => p.db.selectFrom(users).select('id').where('email', '=', 'user1@example.io').execute(),
            () => p.db.insertInto(users).values(userRow(6)).execute(),
          ]) {
            const error = await query().then(
              () => undefined,
              (e: unknown) => e,
            )
            expect(error).toBeInstanceOf(KeyProviderError)
            expect((error as KeyProviderError).code).toBe('PROVIDER_UNAVAILABLE')
          }
          expect(await count(t, users)).toBe(atRest)
          // A transaction that needs no key (plaintext columns only) still runs: the keys loaded
          // before its BEGIN are a best effort, not a condition.
          const ids = await p.db.transaction().execute((trx) => trx.selectFrom(users).select('id').execute())
          expect(ids).toHaveLength(atRest)
          // Still down: let loads the failed queries left in flight fail, so recovery is seen cleanly.
          await settleKeyLoads(p, users)

          // The keeper is back: everything works again, and every row at rest is whole.
          fx.fault.up()
          await p.db.insertInto(users).values(userRow(6)).execute()
          const all = await p.db.selectFrom(users).selectAll().orderBy('id').execute()
          expect(all.map((r) => r.score)).toEqual([1, 2, 3, 4, 5, 6])
          const atRestRows = await t.raw
            .selectFrom(users)
            .select(['email', 'email_bidx', 'ssn', 'ssn_bidx'])
            .execute()
          for (const r of atRestRows) {
            for (const v of Object.values(r)) expect(v).toBeInstanceOf(Uint8Array)
          }
          await p.close()
        })

        it('revocation: a disabled KEK stops a running process at ttl, without waiting for grace', async () => {
          const users = t.names.users
          const clock = manualClock()
          const p = await t.open({
            keyProvider: fx.provider,
            cache: { ttlMs: TTL, graceMs: GRACE, now: clock.now },
          })
          await p.db.insertInto(users).values([1, 2].map(userRow)).execute()
          fx.fault.disable()
          // Within ttl the cached keys still work: that is the revocation latency.
          expect(await p.db.selectFrom(users).select('id').execute()).toHaveLength(2)
          clock.advance(TTL)
          const atRest = await count(t, users)
          for (const query of [
            () => p.db.selectFrom(users).selectAll().execute(),
            () => p.db.selectFrom(users).select('id').where('email', '=', 'user1@example.io').execute(),
            () => p.db.insertInto(users).values(userRow(3)).execute(),
          ]) {
            const error = await query().then(
              () => undefined,
              (e: unknown) => e,
            )
            expect(error).toBeInstanceOf(KeyProviderError)
            expect((error as KeyProviderError).code).toBe('PROVIDER_KEY_DISABLED')
          }
          expect(await count(t, users)).toBe(atRest)
          expect(p.encryption.stats().keys?.cache.staleServed).toBe(0)
          await settleKeyLoads(p, users)
          fx.fault.enable()
          expect(await p.db.selectFrom(users).select('id').execute()).toHaveLength(2)
          await p.close()
        })

        it(`provider calls stay O(keys) over a ${WORKLOAD_ROWS.toLocaleString('en')}-row workload`, async () => {
          const users = t.names.users
          const start = fx.calls()
          const writer = await t.open({ keyProvider: fx.provider })
          for (let from = 0; from < WORKLOAD_ROWS; from += 500) {
            await writer.db
              .insertInto(users)
              .values(Array.from({ length: 500 }, (_, i) => userRow(from + i)))
              .execute()
          }
          const written = await writer.db.selectFrom(users).select(['email', 'score']).execute()
          expect(written).toHaveLength(WORKLOAD_ROWS)
          for (let i = 0; i < WORKLOAD_ROWS; i += LOOKUP_STEP) {
            const found = await writer.db
              .selectFrom(users)
              .select('score')
              .where('email', '=', `user${i}@example.io`)
              .execute()
            expect(found).toEqual([{ score: i }])
          }
          // Writer: one generateDataKey per key (users: data + index) and one unwrap proving its
          // wrapping, seeded into the cache.
          const writerCalls = fx.calls() - start
          // A fresh process reads everything: one unwrap per key.
          const reader = await t.open({ keyProvider: fx.provider })
          const read = await reader.db.selectFrom(users).selectAll().execute()
          expect(read).toHaveLength(WORKLOAD_ROWS)
          expect(new Set(read.map((r) => r.email)).size).toBe(WORKLOAD_ROWS)
          for (let i = 1; i < WORKLOAD_ROWS; i += LOOKUP_STEP) {
            const found = await reader.db
              .selectFrom(users)
              .select('score')
              .where('email', '=', `user${i}@example.io`)
              .execute()
            expect(found).toEqual([{ score: i }])
          }
          const readerCalls = fx.calls() - start - writerCalls
          console.log(
            `[${factory.name}/${backend.name}] ${WORKLOAD_ROWS} rows, 2 keys: writer ${writerCalls} keeper calls, fresh reader ${readerCalls}`,
          )
          expect(writerCalls).toBe(4)
          expect(readerCalls).toBe(2)
          expect(writer.encryption.stats().keys?.providerCalls).toBe(4)
          expect(reader.encryption.stats().keys?.providerCalls).toBe(2)
          await writer.close()
          await reader.close()
        })

        it('every provider call emits one audit event: fields, outcomes, and no key bytes', async () => {
          const users = t.names.users
          const orders = t.names.orders
          const events: AuditEvent[] = []
          const audit = (e: AuditEvent) => events.push(e)
          const start = fx.calls()
          const a = await t.open({ keyProvider: fx.provider, audit })
          await a.db.insertInto(users).values(userRow(1)).execute()
          await a.db.insertInto(orders).values({ item: 'pen', email: 'a@x.io' }).execute()
          const b = await t.open({ keyProvider: fx.provider, audit })
          expect(
            await b.db.selectFrom(users).select('email').where('email', '=', 'user1@example.io').execute(),
          ).toHaveLength(1)
          expect(await b.db.selectFrom(orders).selectAll().execute()).toHaveLength(1)
          fx.fault.down()
          const c = await t.open({ keyProvider: fx.provider, audit })
          await expect(c.db.selectFrom(users).selectAll().execute()).rejects.toBeInstanceOf(
            FieldEncryptionError,
          )
          fx.fault.up()

          expect(events).toHaveLength(fx.calls() - start)
          const summary = events.map(
            (e) =>
              `${e.operation} ${e.logicalTable === users ? 'users' : 'orders'}/${e.purpose}/v${e.version} ${e.outcome}`,
          )
          expect(summary.sort()).toEqual(
            [
              'generateDataKey users/data/v1 success',
              'generateDataKey users/index/v1 success',
              'generateDataKey orders/data/v1 success',
              'generateDataKey orders/index/v1 success',
              // a's key creation proves each new wrapping
              'unwrap users/data/v1 success',
              'unwrap users/index/v1 success',
              'unwrap orders/data/v1 success',
              'unwrap orders/index/v1 success',
              'unwrap users/index/v1 success',
              'unwrap users/data/v1 success',
              'unwrap orders/data/v1 success',
              'unwrap users/data/v1 failure',
            ].sort(),
          )
          for (const e of events) {
            expect(e.kekId).toBe(fx.provider.id)
            expect([users, orders]).toContain(e.logicalTable)
            expect(e.time).toBeInstanceOf(Date)
            expect(e.durationMs).toBeGreaterThanOrEqual(0)
            if (e.outcome === 'failure') expect(e.errorCode).toBe('PROVIDER_UNAVAILABLE')
            else expect(e.errorCode).toBeUndefined()
          }
          const json = JSON.stringify(events)
          for (const table of [users, orders]) {
            for (const purpose of ['data', 'index'] as const) {
              const key = await b.encryption.keyRing().key({ logicalTable: table, purpose, version: 1 })
              for (const s of encodings(key.bytes)) expect(json).not.toContain(s)
            }
          }
          await a.close()
          await b.close()
          await c.close()
        })
      })
    })
  })
})
