/**
 * Key creation proves every wrapping it stores, as `rotate` does (src/keys/key-wrapping.ts): a
 * KEK whose wrapping of a new key does not unwrap to it, or is labelled with another KEK's id,
 * fails `kfe init` (`ops.init`), `encryption.init`, `encryption.initTenant` and a tenant's first
 * write (`createTenantKeys`) with `UNWRAP_FAILED` naming that KEK, and nothing is stored: a broken
 * disaster-recovery wrapping is found at creation, not once the primary KEK is gone. A KEK that
 * does not answer is reported as the outage it is.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  fieldEncryption,
  type KeyProvider,
  KeyProviderError,
  type KeyRef,
  KeyStore,
  localKeyProvider,
  type WrappedKey,
} from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, onlyTables } from '../support/backends.js'
import { type OpsTestDb, useOpsTestDb } from '../support/ops-db.js'
import { unclosable } from '../support/providers.js'
import { tenantFixture } from '../support/tenant-fixture.js'

/** The operations on a fixture's tables with these KEKs. */
const opsOn = (t: OpsTestDb, keyProvider: KeyProvider[]) =>
  fieldEncryptionOps({
    db: t.raw,
    schema: t.schema,
    keyProvider,
    keyTable: t.keyTable,
    jobsTable: t.jobsTable,
  })

/** What is wrong with every wrapping a {@link faultyKek} makes. */
type Fault = 'garbled' | 'mislabelled' | 'another key' | 'unwrap unavailable'

/**
 * A real local KEK whose every new wrapping (generated or rewrapped) carries `fault`: its tag
 * flipped, another KEK's id, a wrapping of another key for the same ref; or, for `unwrap
 * unavailable`, good wrappings that it cannot unwrap now (`PROVIDER_UNAVAILABLE`).
 */
function faultyKek(fault: Fault, id = `local:dr-${fault.replaceAll(' ', '-')}`): KeyProvider {
  const inner = localKeyProvider({ id, key: randomBytes(32) })
  const spoil = async (wrapped: WrappedKey, ref: KeyRef): Promise<WrappedKey> => {
    switch (fault) {
      case 'garbled': {
        const bytes = Uint8Array.from(wrapped.wrapped)
        bytes[bytes.length - 1]! ^= 1
        return { kekId: wrapped.kekId, wrapped: bytes }
      }
      case 'mislabelled':
        return { kekId: 'local:elsewhere', wrapped: wrapped.wrapped }
      case 'another key': {
        const other = await inner.generateDataKey(ref)
        other.plaintext.fill(0)
        return other.wrapped
      }
      case 'unwrap unavailable':
        return wrapped
    }
  }
  return {
    id,
    async generateDataKey(ref) {
      const generated = await inner.generateDataKey(ref)
      return { plaintext: generated.plaintext, wrapped: await spoil(generated.wrapped, ref) }
    },
    async rewrap(source, ref) {
      return spoil(await inner.rewrap(source, ref), ref)
    },
    async unwrap(wrapped, ref) {
      if (fault === 'unwrap unavailable') {
        throw new KeyProviderError('PROVIDER_UNAVAILABLE', `${id} is not answering (test fault).`, {
          providerId: id,
          table: ref.logicalTable,
        })
      }
      return inner.unwrap(wrapped, ref)
    },
  }
}

const BAD_WRAPPINGS: readonly Fault[] = ['garbled', 'mislabelled', 'another key']

/** The error `call` rejects with. */
async function failure(call: () => Promise<unknown>): Promise<unknown> {
  return call().then(
    () => expect.fail('expected a rejection'),
    (error: unknown) => error,
  )
}

/** The refusal of a new key whose wrapping under `kekId` failed its proof. */
function refusal(kekId: string): unknown {
  return expect.objectContaining({
    name: 'KeyProviderError',
    code: 'UNWRAP_FAILED',
    providerId: kekId,
    message: expect.stringContaining(`its wrapping under ${kekId}`),
  })
}

describe.each(backends())('key creation proves every wrapping [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('table keys', () => {
    const t = useOpsTestDb(backend, { init: false })

    /** `init` through `kfe init`'s library call, or the application's, with `providers`. */
    const init = async (via: 'ops' | 'encryption', providers: KeyProvider[]): Promise<unknown> => {
      if (via === 'ops') {
        const ops = opsOn(t, providers)
        try {
          return await ops.init()
        } finally {
          await ops.close()
        }
      }
      const encryption = fieldEncryption({
        schema: t.schema,
        keyProvider: providers,
        keyTable: t.keyTable,
        verifySchema: onlyTables(),
      })
      try {
        return await encryption.init(t.raw)
      } finally {
        await encryption.close()
      }
    }

    it('init refuses a KEK whose wrapping does not unwrap to the new key or names another KEK (UNWRAP_FAILED naming it), second or first; nothing is stored', async () => {
      const store = new KeyStore(t.raw, { tableName: t.keyTable })
      for (const via of ['ops', 'encryption'] as const) {
        for (const fault of BAD_WRAPPINGS) {
          const dr = faultyKek(fault)
          for (const providers of [[unclosable(t.provider), dr], [dr]]) {
            const error = await failure(() => init(via, providers))
            expect(error, `${via} ${fault} ${providers.length}`).toEqual(refusal(dr.id))
            expect((error as Error).message).toContain('nothing was stored')
            // The key table was made; the table has no key.
            expect(await store.list(t.table)).toEqual([])
          }
        }
      }
      // The same table, with KEKs that prove: both keys, under both.
      const good = localKeyProvider({ id: 'local:dr-good', key: randomBytes(32) })
      await init('ops', [unclosable(t.provider), good])
      expect((await store.list(t.table)).map((k) => [k.purpose, k.wrappings.map((w) => w.kekId)])).toEqual([
        ['data', [t.provider.id, good.id]],
        ['index', [t.provider.id, good.id]],
      ])
    })
  })

  describe.runIf(backend.available)('outage', () => {
    const t = useOpsTestDb(backend, { init: false })

    it('a KEK that does not answer while its wrapping is proven fails init with its own PROVIDER_UNAVAILABLE, not as a bad wrapping; nothing is stored', async () => {
      const dr = faultyKek('unwrap unavailable')
      const ops = opsOn(t, [unclosable(t.provider), dr])
      try {
        const error = await failure(() => ops.init())
        expect(error).toBeInstanceOf(KeyProviderError)
        expect(error).toMatchObject({ code: 'PROVIDER_UNAVAILABLE', providerId: dr.id })
      } finally {
        await ops.close()
      }
      expect(await new KeyStore(t.raw, { tableName: t.keyTable }).list(t.table)).toEqual([])
    })
  })

  describe.runIf(backend.available)('rotate', () => {
    const t = useOpsTestDb(backend)

    it('rotate proves the same way (ROTATION_REFUSED naming the KEK, with the provider refusal as cause); nothing is staged', async () => {
      const store = new KeyStore(t.raw, { tableName: t.keyTable })
      for (const fault of BAD_WRAPPINGS) {
        const dr = faultyKek(fault)
        const ops = opsOn(t, [unclosable(t.provider), dr])
        try {
          const error = await failure(() => ops.rotate(t.table, { purpose: 'data', reencrypt: false }))
          expect(error, fault).toMatchObject({ name: 'OperationError', code: 'ROTATION_REFUSED' })
          expect((error as Error).message).toContain(`under ${dr.id}`)
          if (fault === 'garbled') expect((error as Error).cause).toMatchObject({ code: 'UNWRAP_FAILED' })
        } finally {
          await ops.close()
        }
        expect((await store.list(t.table)).map((k) => `${k.purpose}/v${k.version}`)).toEqual([
          'data/v1',
          'index/v1',
        ])
      }
    })
  })

  describe.runIf(backend.available)('tenant keys', () => {
    it("initTenant and a tenant's first write (createTenantKeys) refuse a KEK whose wrapping does not prove; the tenant has no key and no row", async () => {
      const t = await tenantFixture(backend)
      try {
        const store = new KeyStore(t.raw, { tableName: t.keyTable })
        for (const fault of BAD_WRAPPINGS) {
          const dr = faultyKek(fault)
          const { encryption, db } = t.another({
            keyProvider: [unclosable(t.provider), dr],
            createTenantKeys: true,
          })
          const tenant = `acme-${fault.replaceAll(' ', '-')}`
          expect(await failure(() => encryption.initTenant(db, t.table, tenant))).toEqual(refusal(dr.id))
          expect(await store.list(t.keyName(tenant))).toEqual([])

          const write = () =>
            db
              .insertInto(t.table)
              .values({ id: randomUUID(), tenant_id: tenant, name: 'o', email: 'a@x.io', ssn: '123-45-6789' })
              .execute()
          expect(await failure(write)).toEqual(refusal(dr.id))
          expect(await store.list(t.keyName(tenant))).toEqual([])
          expect(
            await t.raw.selectFrom(t.table).select('id').where('tenant_id', '=', tenant).execute(),
          ).toEqual([])
        }
        // The fixture's application (one KEK) still makes a tenant's keys on its first write.
        await t.order('globex', 'b@x.io')
        expect((await store.list(t.keyName('globex'))).map((k) => k.purpose)).toEqual(['data', 'index'])
      } finally {
        await t.destroy()
      }
    })
  })
})
