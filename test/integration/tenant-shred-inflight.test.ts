import { AsyncLocalStorage } from 'node:async_hooks'
import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { type KeyProvider, KeyRing, KeyStore, localKeyProvider } from '../../src/index.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'

/** Where a read of a tenant's key is held while the tenant is shredded. */
type Step = 'unwrap' | 'metadata'
type KeyRows = Awaited<ReturnType<KeyStore['read']>>

/**
 * A tenant shredded by this process while one of its reads is under way: the unwrap of its key,
 * or the read of its key metadata, started before the shred and ends after it. Neither may put
 * the tenant's key (or its metadata from before the shred) back in this process's caches, where
 * reads would use it until the key cache TTL, and neither may hand the key out.
 */
describe.each(backends())(
  'crypto-shredding with a read of the tenant under way [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const keyTable = uniqueName('kfe_keys_inflight')
      const kekBytes = randomBytes(32)
      // One provider per ring: closing a ring closes its providers.
      const newKek = () => localKeyProvider({ id: 'local:inflight', key: Buffer.from(kekBytes) })
      const kek = newKek()
      const raw = new Kysely<unknown>({ dialect: backend.createDialect() })
      const plain = new KeyStore(raw, { tableName: keyTable })
      /** Per step, the next pass to hold (once): the signal that it was reached, and what releases it. */
      const holds = new Map<Step, { reached: () => void; released: Promise<void> }>()
      async function pass(step: Step): Promise<void> {
        const h = holds.get(step)
        if (h === undefined) return
        holds.delete(step)
        h.reached()
        await h.released
      }
      /** Set inside a (simulated) transaction, as the plugin's insideTransaction is, per async context. */
      const transaction = new AsyncLocalStorage<true>()
      const inTransaction = () => transaction.getStore() === true
      const inside = <T>(fn: () => Promise<T>) => transaction.run(true, fn)
      /** A transaction's first read of the name: its snapshot, both keys alive. */
      const snapshotOf = (ring: KeyRing, keyName: string) => inside(() => ring.versions(keyName, 'data'))
      /**
       * A key store whose reads can be held after the database answered (their rows are then from
       * before the shred), and whose reads in a transaction return the rows of the transaction's
       * first read of a name ever after (a REPEATABLE READ snapshot).
       */
      class SlowStore extends KeyStore {
        readonly snapshots = new Map<string, KeyRows>()
        /** Runs after this store created a name's first keys, before the creator goes on. */
        afterCreate: (() => Promise<void>) | undefined
        override async createInitialKeys(
          ...args: Parameters<KeyStore['createInitialKeys']>
        ): ReturnType<KeyStore['createInitialKeys']> {
          const created = await super.createInitialKeys(...args)
          await this.afterCreate?.()
          return created
        }
        override async read(logicalTable: string): Promise<KeyRows> {
          const taken = inTransaction() ? this.snapshots.get(logicalTable) : undefined
          const rows = taken ?? (await super.read(logicalTable))
          if (inTransaction()) this.snapshots.set(logicalTable, rows)
          await pass('metadata')
          return rows
        }
      }
      /** Unwraps the gated provider was asked for (an audit log's "decrypt" events). */
      let unwraps = 0
      const gated: KeyProvider = {
        id: kek.id,
        generateDataKey: (ref) => kek.generateDataKey(ref),
        rewrap: (source, ref) => kek.rewrap(source, ref),
        async unwrap(wrapped, ref) {
          unwraps++
          await pass('unwrap')
          return kek.unwrap(wrapped, ref)
        },
      }
      afterAll(async () => {
        await kek.close?.()
        await dropTables(raw, [keyTable])
        await raw.destroy()
      })

      /** `tenant`'s keys, and a ring (gated store and provider) that has not read them yet. */
      async function tenantRing(tenant: string) {
        const keyName = `orders#tenant_id=${tenant}`
        await plain.ensureSchema()
        const writer = new KeyRing({ store: plain, providers: [newKek()] })
        await writer.init([keyName])
        await writer.close()
        const store = new SlowStore(raw, { tableName: keyTable })
        const ring = new KeyRing({ store, providers: [gated], readsInTransaction: inTransaction })
        return { keyName, store, ring, ref: { logicalTable: keyName, purpose: 'data' as const, version: 1 } }
      }

      /** Holds the next pass of `step`; resolves once it is reached, with what releases it. */
      function holdAt(step: Step): Promise<() => void> {
        let release!: () => void
        const released = new Promise<void>((resolve) => {
          release = resolve
        })
        return new Promise((reached) => {
          holds.set(step, { reached: () => reached(release), released })
        })
      }

      /** What shred does in this process: tombstones in the key table, then the ring forgets the name. */
      async function shred(ring: KeyRing, keyName: string): Promise<void> {
        expect(await plain.destroy(keyName)).toBe(2)
        ring.forget(keyName)
      }

      /** The ring holds nothing of the shredded tenant, and its next reads are refused. */
      async function nothingLeft(ring: KeyRing, keyName: string): Promise<void> {
        const ref = { logicalTable: keyName, purpose: 'data' as const, version: 1 }
        expect(ring.peekKey(ref)).toBeUndefined()
        expect(ring.peekActiveKey(keyName, 'data')).toBeUndefined()
        expect(ring.stats().cache.size).toBe(0)
        // Metadata first: a read of keys would load it again when it unwraps.
        await expect(ring.versions(keyName, 'data')).rejects.toMatchObject({ code: 'KEY_DESTROYED' })
        await expect(ring.key(ref)).rejects.toMatchObject({ code: 'KEY_DESTROYED' })
        await expect(ring.activeKey(keyName, 'data')).rejects.toMatchObject({ code: 'KEY_DESTROYED' })
      }

      for (const step of ['unwrap', 'metadata'] as const) {
        it(`a read held at its ${step} when the tenant is shredded fails with KEY_DESTROYED and caches nothing`, async () => {
          const { keyName, ref, ring } = await tenantRing(`acme_${step}`)
          const held = holdAt(step)
          const reading = ring.key(ref).catch((e: unknown) => e)
          const release = await held
          await shred(ring, keyName)
          release()
          expect(await reading).toMatchObject({ code: 'KEY_DESTROYED' })
          await nothingLeft(ring, keyName)
          await ring.close()
        })
      }

      it('a metadata read under way at the shred is neither cached nor joined by the reads after it', async () => {
        const { keyName, ring } = await tenantRing('umbrella')
        const held = holdAt('metadata')
        const first = ring.versions(keyName, 'data')
        const release = await held
        await shred(ring, keyName)
        // Started after the shred, while the first read is still held: a read of its own.
        const second = ring.versions(keyName, 'data').catch((e: unknown) => e)
        expect(await second).toMatchObject({ code: 'KEY_DESTROYED' })
        release()
        // The held read answers with what it read before the shred; that is not kept.
        expect((await first).map((k) => k.state)).toEqual(['active'])
        await nothingLeft(ring, keyName)
        await ring.close()
      })

      it('a version the caller read from the key store before the shred is refused by storedKey (a job of the same process)', async () => {
        const { keyName, ring } = await tenantRing('hooli')
        const read = (await plain.read(keyName)).keys.find((k) => k.purpose === 'data')!
        await shred(ring, keyName)
        const shredAt = unwraps
        await expect(ring.storedKey(read)).rejects.toMatchObject({ code: 'KEY_DESTROYED' })
        expect(unwraps).toBe(shredAt) // refused from the key table, before the provider
        await nothingLeft(ring, keyName)
        await ring.close()
      })

      it('inside a transaction whose snapshot predates the shred, the key is refused, not cached', async () => {
        const { keyName, ref, ring } = await tenantRing('soylent')
        await snapshotOf(ring, keyName)
        await shred(ring, keyName)
        // The snapshot still shows the key alive: neither the read nor a read again in it proves it.
        await expect(inside(() => ring.key(ref))).rejects.toMatchObject({ code: 'KEY_DESTROYED' })
        expect(ring.peekKey(ref)).toBeUndefined()
        expect(ring.stats().cache.size).toBe(0)
        await nothingLeft(ring, keyName)
        await ring.close()
      })

      it("a read outside the transaction that joins the transaction's metadata read (older snapshot) is refused, not cached", async () => {
        const { keyName, ref, ring } = await tenantRing('tyrell')
        await snapshotOf(ring, keyName)
        await shred(ring, keyName)
        // The transaction reads the metadata again (held once it has its snapshot's rows); a read
        // outside it, for the same name, joins that load.
        const held = holdAt('metadata')
        const inTx = inside(() => ring.versions(keyName, 'data'))
        const release = await held
        const outside = ring.key(ref).catch((e: unknown) => e)
        release()
        expect((await inTx).map((k) => k.state)).toEqual(['active'])
        expect(await outside).toMatchObject({ code: 'KEY_DESTROYED' })
        await nothingLeft(ring, keyName)
        await ring.close()
      })

      it("an unwrap under way at the shred checks the key table with a read of its own, not the transaction's under way", async () => {
        const { keyName, ref, ring } = await tenantRing('cyberdyne')
        await snapshotOf(ring, keyName)
        const unwrapHeld = holdAt('unwrap')
        const outside = ring.key(ref).catch((e: unknown) => e)
        const releaseUnwrap = await unwrapHeld
        await shred(ring, keyName)
        // The transaction reads the metadata again, from its snapshot, and is held there while
        // the unwrap ends and checks the key table.
        const metadataHeld = holdAt('metadata')
        const inTx = inside(() => ring.versions(keyName, 'data'))
        const releaseMetadata = await metadataHeld
        releaseUnwrap()
        expect(await outside).toMatchObject({ code: 'KEY_DESTROYED' })
        releaseMetadata()
        expect((await inTx).map((k) => k.state)).toEqual(['active'])
        await nothingLeft(ring, keyName)
        await ring.close()
      })

      it('keys this ring created just before the tenant was shredded are not put in its cache after the shred', async () => {
        const keyName = 'orders#tenant_id=wayne'
        await plain.ensureSchema()
        const store = new SlowStore(raw, { tableName: keyTable })
        const ring = new KeyRing({ store, providers: [gated], readsInTransaction: inTransaction })
        store.afterCreate = () => shred(ring, keyName)
        expect((await ring.init([keyName])).created).toHaveLength(2)
        await new Promise((resolve) => setImmediate(resolve)) // the cache is seeded without being awaited
        await nothingLeft(ring, keyName)
        await ring.close()
      })

      it('a forget of a tenant that was not shredded makes an unwrap under way unwrap once more: its key is read again and kept', async () => {
        const { keyName, ref, ring } = await tenantRing('initech')
        const held = holdAt('unwrap')
        const reading = ring.key(ref)
        const release = await held
        const before = unwraps
        ring.forget(keyName)
        release()
        const key = await reading
        expect(key.ref).toEqual(ref)
        expect(ring.peekKey(ref)).toBe(key)
        expect(unwraps - before).toBe(1)
        await ring.close()
      })

      for (const read of ['key', 'activeKey'] as const)
        it(`a shred that lands while the check after an earlier forget reads the key table: ${read} is refused, nothing cached, the provider not asked again`, async () => {
          const { keyName, ref, ring } = await tenantRing(`massive_${read}`)
          const unwrapHeld = holdAt('unwrap')
          const reading = (read === 'key' ? ring.key(ref) : ring.activeKey(keyName, 'data')).catch(
            (e: unknown) => e,
          )
          const releaseUnwrap = await unwrapHeld
          ring.forget(keyName) // not a shred: the unwrap's check reads the key table again
          const checkHeld = holdAt('metadata')
          releaseUnwrap()
          const releaseCheck = await checkHeld // the check has its rows: both keys alive
          await shred(ring, keyName)
          const shredAt = unwraps
          releaseCheck()
          expect(await reading).toMatchObject({ code: 'KEY_DESTROYED' })
          await nothingLeft(ring, keyName)
          // Refused from the key table: the provider was not asked for the shredded key again.
          expect(unwraps).toBe(shredAt)
          await ring.close()
        })
    })
  },
)
