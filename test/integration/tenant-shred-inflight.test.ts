import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { type KeyProvider, KeyRing, KeyStore, localKeyProvider } from '../../src/index.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'

/** Where a read of a tenant's key is held while the tenant is shredded. */
type Step = 'unwrap' | 'metadata'

/**
 * A tenant shredded by this process while one of its reads is under way: the unwrap of its key,
 * or the read of its key metadata, started before the shred and ends after it. Neither may put
 * the tenant's key back in this process's caches (where reads would use it until the key cache
 * TTL), and neither may hand the key out.
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
      /** The step to hold next (once), the signal that it was reached, and what releases it. */
      let hold: { step: Step; reached: () => void; released: Promise<void> } | undefined
      async function pass(step: Step): Promise<void> {
        const h = hold
        if (h?.step !== step) return
        hold = undefined
        h.reached()
        await h.released
      }
      /** A key store whose reads are held after the database answered (their rows are pre-shred). */
      class SlowStore extends KeyStore {
        override async read(logicalTable: string): ReturnType<KeyStore['read']> {
          const rows = await super.read(logicalTable)
          await pass('metadata')
          return rows
        }
      }
      const gated: KeyProvider = {
        id: kek.id,
        generateDataKey: (ref) => kek.generateDataKey(ref),
        rewrap: (source, ref) => kek.rewrap(source, ref),
        async unwrap(wrapped, ref) {
          await pass('unwrap')
          return kek.unwrap(wrapped, ref)
        },
      }
      afterAll(async () => {
        await kek.close?.()
        await dropTables(raw, [keyTable])
        await raw.destroy()
      })

      /**
       * Gives `tenant` keys, starts a read of its data key on a ring that has not read them yet,
       * holds it at `step`, runs `meanwhile` (a shred, or not), then lets the read go on.
       */
      async function readAround(
        tenant: string,
        step: Step,
        meanwhile: (plain: KeyStore, ring: KeyRing) => Promise<void>,
      ) {
        const keyName = `orders#tenant_id=${tenant}`
        const ref = { logicalTable: keyName, purpose: 'data' as const, version: 1 }
        const plain = new KeyStore(raw, { tableName: keyTable })
        await plain.ensureSchema()
        const writer = new KeyRing({ store: plain, providers: [newKek()] })
        await writer.init([keyName])
        await writer.close()
        const ring = new KeyRing({ store: new SlowStore(raw, { tableName: keyTable }), providers: [gated] })
        let reached!: () => void
        const atStep = new Promise<void>((resolve) => {
          reached = resolve
        })
        let release!: () => void
        hold = { step, reached, released: new Promise<void>((resolve) => (release = resolve)) }
        const reading = ring.key(ref).catch((e: unknown) => e)
        await atStep
        await meanwhile(plain, ring)
        release()
        return { keyName, ref, ring, result: await reading }
      }

      /** What shred does in this process: tombstones in the key table, then the ring forgets the name. */
      const shred = (keyName: string) => async (plain: KeyStore, ring: KeyRing) => {
        expect(await plain.destroy(keyName)).toBe(2)
        ring.forget(keyName)
      }

      for (const step of ['unwrap', 'metadata'] as const) {
        it(`a read held at its ${step} when the tenant is shredded fails with KEY_DESTROYED and caches nothing`, async () => {
          const tenant = `acme_${step}`
          const { keyName, ref, ring, result } = await readAround(
            tenant,
            step,
            shred(`orders#tenant_id=${tenant}`),
          )
          expect(result).toMatchObject({ code: 'KEY_DESTROYED' })
          // The synchronous paths find nothing, and the next reads are refused.
          expect(ring.peekKey(ref)).toBeUndefined()
          expect(ring.peekActiveKey(keyName, 'data')).toBeUndefined()
          expect(ring.stats().cache.size).toBe(0)
          await expect(ring.key(ref)).rejects.toMatchObject({ code: 'KEY_DESTROYED' })
          await expect(ring.activeKey(keyName, 'data')).rejects.toMatchObject({ code: 'KEY_DESTROYED' })
          await ring.close()
        })
      }

      it('a forget of a tenant that was not shredded costs an unwrap under way nothing: its key is read again and kept', async () => {
        const { ref, ring, result } = await readAround('initech', 'unwrap', async (_plain, ring) =>
          ring.forget('orders#tenant_id=initech'),
        )
        expect(result).toMatchObject({ ref })
        expect(ring.peekKey(ref)).toBe(result)
        await ring.close()
      })
    })
  },
)
