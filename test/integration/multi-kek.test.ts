/**
 * Several KEKs per key (DESIGN.md §2 and §5): every new key wrapped under each configured KEK,
 * unwrap failing over in order, `rewrapAll` adding and removing wrappings without touching a user
 * row, and an online KEK rotation. The KEKs are real: AWS KMS through the loopback endpoint
 * (@aws-sdk/client-kms), an AES-256 key on a SoftHSM2 token, and a local key.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { KeyProviderError } from '../../src/errors.js'
import type { AuditEvent, KeyProvider } from '../../src/keys/key-provider.js'
import { rewrapAll } from '../../src/keys/rewrap.js'
import { backends } from '../support/backends.js'
import {
  kmsFixture,
  localFixture,
  type ProviderFixture,
  type ProviderTestDb,
  pkcs11Fixture,
  providerTestDb,
  type TestProcess,
  wrappingsByKey,
} from '../support/providers.js'
import { softHsmAvailable } from '../support/softhsm.js'

type KmsFixture = Awaited<ReturnType<typeof kmsFixture>>

const userRow = (i: number) => ({
  name: `user ${i}`,
  email: `User${i}@Example.io`,
  ssn: `123-45-${String(i).padStart(4, '0')}`,
  score: i,
})

/**
 * Reads everything back through `p` (rows, searches) and checks it against what was written:
 * `users` rows by number, and the orders {@link seed} wrote for `seeded` (one per 4 users).
 */
async function expectReadable(
  t: ProviderTestDb,
  p: TestProcess,
  users: readonly number[],
  seeded: readonly number[] = users,
): Promise<void> {
  const rows = await p.db.selectFrom(t.names.users).selectAll().orderBy('id').execute()
  rows.sort((a, b) => a.score - b.score)
  expect(rows.map((r) => [r.email, r.ssn, r.score])).toEqual(
    [...users].sort((a, b) => a - b).map((i) => [userRow(i).email, userRow(i).ssn, i]),
  )
  for (const i of users.slice(0, 5)) {
    const found = await p.db
      .selectFrom(t.names.users)
      .select('score')
      .where('email', '=', `user${i}@example.io`)
      .execute()
    expect(found).toEqual([{ score: i }])
  }
  const orders = await p.db.selectFrom(t.names.orders).select(['item', 'email']).execute()
  expect(orders).toHaveLength(seeded.filter((i) => i % 4 === 0).length)
  for (const o of orders) expect(o.email).toBe(`buyer-${o.item}@x.io`)
}

async function seed(t: ProviderTestDb, p: TestProcess, from: number, to: number): Promise<number[]> {
  const ids = Array.from({ length: to - from + 1 }, (_, i) => from + i)
  await p.db.insertInto(t.names.users).values(ids.map(userRow)).execute()
  const orders = ids.filter((i) => i % 4 === 0)
  if (orders.length > 0) {
    await p.db
      .insertInto(t.names.orders)
      .values(orders.map((i) => ({ item: `o${i}`, email: `buyer-o${i}@x.io` })))
      .execute()
  }
  return ids
}

/** Every row of both tables exactly as stored (bytes), for before/after comparisons. */
async function snapshot(t: ProviderTestDb): Promise<unknown[]> {
  return [
    await t.raw.selectFrom(t.names.users).selectAll().orderBy('id').execute(),
    await t.raw.selectFrom(t.names.orders).selectAll().orderBy('id').execute(),
  ]
}

describe.runIf(softHsmAvailable)('several KEKs per key', () => {
  let kms: KmsFixture
  let hsm: ProviderFixture
  beforeAll(async () => {
    kms = await kmsFixture()
    hsm = await pkcs11Fixture()
  })
  afterEach(() => {
    kms.reset()
    hsm.reset()
  })
  afterAll(async () => {
    await kms?.cleanup()
    await hsm?.cleanup()
  })

  describe.each(backends())('on $name', (backend) => {
    describe.runIf(backend.available)(`${backend.name}`, () => {
      let t: ProviderTestDb
      beforeAll(async () => {
        t = await providerTestDb(backend)
      })
      afterAll(async () => {
        await t?.destroy()
      })
      afterEach(async () => {
        for (const table of [t.names.users, t.names.orders, t.names.keys])
          await t.raw.deleteFrom(table).execute()
      })

      it('a ring with [KMS, PKCS#11] wraps each new key under both KEKs, and each wrapping unwraps to the same key', async () => {
        const events: AuditEvent[] = []
        const p = await t.open({ keyProvider: [kms.provider, hsm.provider], audit: (e) => events.push(e) })
        await seed(t, p, 1, 4)
        const kekIds = [kms.provider.id, hsm.provider.id]
        expect(await wrappingsByKey(t.store)).toEqual({
          [`${t.names.orders}/data/v1`]: kekIds,
          [`${t.names.orders}/index/v1`]: kekIds,
          [`${t.names.users}/data/v1`]: kekIds,
          [`${t.names.users}/index/v1`]: kekIds,
        })
        // The primary generates, the other KEK wraps the same plaintext (rewrap): 2 calls per key.
        expect(events.filter((e) => e.operation === 'generateDataKey').map((e) => e.kekId)).toEqual(
          Array(4).fill(kms.provider.id),
        )
        expect(events.filter((e) => e.operation === 'rewrap').map((e) => e.kekId)).toEqual(
          Array(4).fill(hsm.provider.id),
        )
        for (const stored of await t.store.listAll()) {
          const ref = { logicalTable: stored.logicalTable, purpose: stored.purpose, version: stored.version }
          const inUse = (await p.encryption.keyRing().key(ref)).bytes
          const [viaKms, viaHsm] = stored.wrappings
          expect((await kms.provider.unwrap(viaKms!, ref)).equals(inUse)).toBe(true)
          expect((await hsm.provider.unwrap(viaHsm!, ref)).equals(inUse)).toBe(true)
        }
        await p.close()
      })

      it('KMS down: unwrap fails over to the HSM (audit: the failure, then the success); reads work with an empty cache', async () => {
        const writer = await t.open({ keyProvider: [kms.provider, hsm.provider] })
        const users = await seed(t, writer, 1, 12)
        await writer.close()

        kms.fault.down()
        const events: AuditEvent[] = []
        const reader = await t.open({
          keyProvider: [kms.provider, hsm.provider],
          audit: (e) => events.push(e),
        })
        await expectReadable(t, reader, users)
        // Writes too: the active keys came through the HSM.
        await seed(t, reader, 13, 16)
        await expectReadable(t, reader, [...users, 13, 14, 15, 16])

        const byKey = new Map<string, string[]>()
        for (const e of events) {
          const k = `${e.logicalTable === t.names.users ? 'users' : 'orders'}/${e.purpose}`
          const line = `${e.operation} ${e.kekId === kms.provider.id ? 'kms' : 'hsm'} ${e.outcome}${e.errorCode ? ` ${e.errorCode}` : ''}`
          byKey.set(k, [...(byKey.get(k) ?? []), line])
        }
        const failover = ['unwrap kms failure PROVIDER_UNAVAILABLE', 'unwrap hsm success']
        expect(Object.fromEntries(byKey)).toEqual({
          'users/data': failover,
          'users/index': failover,
          'orders/data': failover,
          'orders/index': failover,
        })
        await reader.close()

        // Both keepers down: a fresh process fails with the first KEK's typed error, naming both.
        hsm.fault.down()
        const stranded = await t.open({ keyProvider: [kms.provider, hsm.provider] })
        const error = await stranded.db
          .selectFrom(t.names.users)
          .selectAll()
          .execute()
          .then(
            () => undefined,
            (e: unknown) => e,
          )
        expect(error).toBeInstanceOf(KeyProviderError)
        expect((error as KeyProviderError).code).toBe('PROVIDER_UNAVAILABLE')
        expect((error as KeyProviderError).message).toContain(kms.provider.id)
        expect((error as KeyProviderError).message).toContain(hsm.provider.id)
        await stranded.close()
      })

      it('rewrapAll adds a wrapping under a new KEK and removes an old one, touching no user row', async () => {
        const writer = await t.open({ keyProvider: [kms.provider, hsm.provider] })
        const users = await seed(t, writer, 1, 20)
        await writer.close()
        const before = await snapshot(t)

        const kms2 = await kms.otherKek()
        const events: AuditEvent[] = []
        const reEncrypts = kms.kms.calls.ReEncrypt
        const decrypts = kms.kms.calls.Decrypt
        const result = await rewrapAll({
          store: t.store,
          from: [kms.provider, hsm.provider],
          to: kms2,
          removeKekIds: [hsm.provider.id],
          audit: (e) => events.push(e),
        })
        expect(result).toEqual({ keys: 4, rewrapped: 4 })
        const kekIds = [kms.provider.id, kms2.id]
        expect(Object.values(await wrappingsByKey(t.store))).toEqual(Array(4).fill(kekIds))
        // KMS to KMS in one region: ReEncrypt inside KMS. Because the HSM wrapping is removed, each
        // new wrapping is proved first: unwrapped under the new KEK and compared with the key
        // unwrapped from the old wrapping (2 Decrypts per key).
        expect(kms.kms.calls.ReEncrypt - reEncrypts).toBe(4)
        expect(kms.kms.calls.Decrypt - decrypts).toBe(8)
        expect(events.map((e) => `${e.operation} ${e.outcome}`)).toEqual(
          Array(4).fill(['rewrap success', 'unwrap success', 'unwrap success']).flat(),
        )

        expect(await snapshot(t)).toEqual(before)

        // A fresh process that knows only the new KEK reads and searches everything.
        const fresh = await t.open({ keyProvider: kms2 })
        await expectReadable(t, fresh, users)
        await fresh.close()
        // The HSM wrapping is really gone: a process with only the HSM cannot unwrap.
        const hsmOnly = await t.open({ keyProvider: hsm.provider })
        await expect(hsmOnly.db.selectFrom(t.names.users).selectAll().execute()).rejects.toMatchObject({
          code: 'CONFIG_INVALID',
        })
        await hsmOnly.close()
        // Idempotent: a second run rewraps nothing and changes nothing.
        expect(
          await rewrapAll({
            store: t.store,
            from: [kms.provider],
            to: kms2,
            removeKekIds: [hsm.provider.id],
          }),
        ).toEqual({ keys: 4, rewrapped: 0 })
        expect(await snapshot(t)).toEqual(before)
      })

      it('KEK rotation online: reads and writes through the plugin during the rewrap all succeed', async () => {
        const writer = await t.open({ keyProvider: [kms.provider, hsm.provider] })
        const seeded = await seed(t, writer, 1, 8)
        await writer.close()
        const local = await localFixture()
        try {
          const newKek: KeyProvider = local.provider
          // Step 1 of a rotation: every process lists the new KEK (after the old ones). A 1 ms key
          // TTL and no metadata cache make each query re-read the key store and unwrap again, so
          // the queries really race the rewrap instead of running on cached keys.
          const app = await t.open({
            keyProvider: [kms.provider, hsm.provider, newKek],
            cache: { ttlMs: 1 },
            metadataTtlMs: 0,
          })
          kms.kms.setLatency(40) // KMS unwraps stay in flight while the key store changes
          let rotating = true
          let rewrapDone = false
          let next = 100
          const written: number[] = []
          const errors: unknown[] = []
          let startedDuringRewrap = 0
          let doneAfterRewrap = 0
          let completed = 0
          let wake: (() => void) | undefined
          /** Runs one query; counts those that overlapped the rewrap and those that saw its result. */
          const query = async (run: () => Promise<void>): Promise<void> => {
            const during = !rewrapDone
            await run()
            if (during) startedDuringRewrap++
            else doneAfterRewrap++
            completed++
            wake?.()
          }
          // The rewrap is held before each key until the workers have completed QUERIES_PER_KEY
          // more queries, so queries run while 0, 1, 2 and 3 of the 4 keys are rotated however
          // slow the machine is (counted events, not timing: a loaded machine once let only 4
          // queries overlap an unheld rewrap).
          const QUERIES_PER_KEY = 2
          const heldFor: number[] = []
          const heldTarget: KeyProvider = {
            id: newKek.id,
            generateDataKey: (ref) => newKek.generateDataKey(ref),
            unwrap: (wrapped, ref) => newKek.unwrap(wrapped, ref),
            rewrap: async (source, ref) => {
              const from = completed
              while (completed < from + QUERIES_PER_KEY && errors.length === 0)
                await new Promise<void>((resolve) => {
                  wake = resolve
                })
              heldFor.push(completed - from)
              return newKek.rewrap(source, ref)
            },
          }
          const worker = async (): Promise<void> => {
            // Bounded, so a failing rewrap or a broken query cannot spin forever.
            while (rotating && errors.length < 5 && next < 2_000) {
              const i = next++
              try {
                await query(async () => {
                  await app.db.insertInto(t.names.users).values(userRow(i)).execute()
                  written.push(i)
                })
                await query(async () => {
                  const found = await app.db
                    .selectFrom(t.names.users)
                    .select(['score', 'ssn'])
                    .where('email', '=', `user${i}@example.io`)
                    .execute()
                  expect(found).toEqual([{ score: i, ssn: userRow(i).ssn }])
                })
                await query(async () => {
                  const probe = seeded[i % seeded.length] as number
                  const old = await app.db
                    .selectFrom(t.names.users)
                    .select('email')
                    .where('score', '=', probe)
                    .execute()
                  expect(old).toEqual([{ email: userRow(probe).email }])
                })
              } catch (error) {
                errors.push(error)
                wake?.()
              }
              // PGlite and the local KEK answer in microtasks: yield, or timers and I/O starve.
              await new Promise((resolve) => setImmediate(resolve))
            }
          }
          const workers = Array.from({ length: 3 }, worker)
          let result: unknown
          try {
            result = await rewrapAll({
              store: t.store,
              from: [kms.provider, hsm.provider],
              to: heldTarget,
              removeKekIds: [kms.provider.id, hsm.provider.id],
            })
            rewrapDone = true
            // Keep the load on until the workers have run on the rotated key store too.
            while (doneAfterRewrap < 9 && errors.length === 0)
              await new Promise((resolve) => setTimeout(resolve, 5))
          } finally {
            rotating = false
            await Promise.all(workers)
            kms.kms.setLatency(0)
          }
          expect(errors).toEqual([])
          expect(result).toEqual({ keys: 4, rewrapped: 4 })
          // Each of the 4 keys' rewraps waited for 2 queries that started before the rewrap ended.
          expect(heldFor).toHaveLength(4)
          for (const n of heldFor) expect(n).toBeGreaterThanOrEqual(QUERIES_PER_KEY)
          expect(startedDuringRewrap).toBeGreaterThanOrEqual(4 * QUERIES_PER_KEY)
          expect(doneAfterRewrap).toBeGreaterThanOrEqual(9)
          // 4 rewraps, then the app's own unwraps through the new KEK once the old wrappings were gone.
          expect(local.calls()).toBeGreaterThan(4)
          expect(Object.values(await wrappingsByKey(t.store))).toEqual(Array(4).fill([newKek.id]))
          await app.close()

          // Step 3: the old KEKs are revoked; a process with only the new KEK reads everything.
          kms.fault.disable()
          hsm.fault.disable()
          const fresh = await t.open({ keyProvider: newKek })
          await expectReadable(t, fresh, [...seeded, ...written], seeded)
          await fresh.close()
        } finally {
          await local.cleanup()
        }
      })
    })
  })
})
