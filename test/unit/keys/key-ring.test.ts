import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KeyProviderError } from '../../../src/errors.js'
import type { AuditEvent, KeyProvider, KeyRef } from '../../../src/keys/key-provider.js'
import { KeyRing } from '../../../src/keys/key-ring.js'
import { KeyStore } from '../../../src/keys/key-store.js'
import { localKeyProvider } from '../../../src/keys/local-provider.js'
import { rewrapAll } from '../../../src/keys/rewrap.js'
import { newPGlite } from '../../support/pglite.js'

let db: Kysely<unknown>
let store: KeyStore
const kekA = randomBytes(32)
const kekB = randomBytes(32)

beforeAll(async () => {
  db = new Kysely<unknown>({ dialect: new PGliteDialect(newPGlite()) })
  store = new KeyStore(db)
  await store.ensureSchema()
})
afterAll(async () => {
  await db.destroy()
})

let tableCounter = 0
const freshTable = (): string => `t${++tableCounter}_${Math.random().toString(36).slice(2, 7)}`

const providerA = (): KeyProvider => localKeyProvider({ id: 'local:a', key: Uint8Array.from(kekA) })
const providerB = (): KeyProvider => localKeyProvider({ id: 'local:b', key: Uint8Array.from(kekB) })

/** A provider whose unwrap can be switched off, like a KMS region going down. */
function switchable(inner: KeyProvider) {
  let down = false
  let unwraps = 0
  const provider: KeyProvider = {
    id: inner.id,
    generateDataKey: (ref) => inner.generateDataKey(ref),
    rewrap: (source, ref) => inner.rewrap(source, ref),
    unwrap: async (wrapped, ref) => {
      unwraps++
      if (down)
        throw new KeyProviderError('PROVIDER_UNAVAILABLE', `${inner.id} is down (test)`, {
          providerId: inner.id,
        })
      return inner.unwrap(wrapped, ref)
    },
  }
  return {
    provider,
    setDown: (value: boolean) => {
      down = value
    },
    unwraps: () => unwraps,
  }
}

function hexOf(key: { bytes: Buffer }): string {
  return key.bytes.toString('hex')
}

describe('KeyRing', () => {
  it('autoCreate: creates version 1 of both purposes on first use, wrapped under every provider', async () => {
    const t = freshTable()
    const events: AuditEvent[] = []
    const ring = new KeyRing({
      autoCreate: true,
      store,
      providers: [providerA(), providerB()],
      audit: (e) => events.push(e),
    })
    const data = await ring.activeKey(t, 'data')
    const index = await ring.activeKey(t, 'index')
    expect(hexOf(data)).not.toBe(hexOf(index))
    const stored = await store.list(t)
    expect(stored.map((k) => [k.purpose, k.version, k.state, k.wrappings.map((w) => w.kekId)])).toEqual([
      ['data', 1, 'active', ['local:a', 'local:b']],
      ['index', 1, 'active', ['local:a', 'local:b']],
    ])
    // Creation: one generateDataKey under local:a and one rewrap under local:b per purpose, then
    // each wrapping proven by one unwrap through its own KEK; the generated key seeds the cache,
    // so no unwrap on use.
    expect(events.map((e) => `${e.operation}:${e.kekId}`).sort()).toEqual([
      'generateDataKey:local:a',
      'generateDataKey:local:a',
      'rewrap:local:b',
      'rewrap:local:b',
      'unwrap:local:a',
      'unwrap:local:a',
      'unwrap:local:b',
      'unwrap:local:b',
    ])
    expect(ring.stats().providerCalls).toBe(8)
    await ring.close()
  })

  it('fails over to the next provider when the first throws PROVIDER_UNAVAILABLE; audit shows both attempts', async () => {
    const t = freshTable()
    const creator = new KeyRing({ autoCreate: true, store, providers: [providerA(), providerB()] })
    const expected = hexOf(await creator.activeKey(t, 'data'))
    await creator.close()

    const a = switchable(providerA())
    a.setDown(true)
    const events: AuditEvent[] = []
    const ring = new KeyRing({
      autoCreate: true,
      store,
      providers: [a.provider, providerB()],
      audit: (e) => events.push(e),
    })
    expect(hexOf(await ring.activeKey(t, 'data'))).toBe(expected)
    expect(events.map((e) => [e.operation, e.kekId, e.outcome, e.errorCode])).toEqual([
      ['unwrap', 'local:a', 'failure', 'PROVIDER_UNAVAILABLE'],
      ['unwrap', 'local:b', 'success', undefined],
    ])
    expect(events.every((e) => e.logicalTable === t && e.purpose === 'data' && e.version === 1)).toBe(true)
    await ring.close()
  })

  it('one KEK refuses (disabled) while another is down: reported as the refusal, so no grace delays the revocation', async () => {
    const t = freshTable()
    const creator = new KeyRing({ autoCreate: true, store, providers: [providerA(), providerB()] })
    await creator.activeKey(t, 'data')
    await creator.close()
    const disabled = (inner: KeyProvider): KeyProvider => ({
      ...inner,
      id: inner.id,
      unwrap: async () => {
        throw new KeyProviderError('PROVIDER_KEY_DISABLED', `${inner.id} is disabled (test)`, {
          providerId: inner.id,
        })
      },
    })
    // Both orders: the refusal wins whether the failing-over KEK is first or second.
    for (const order of ['down first', 'disabled first'] as const) {
      const a = switchable(providerA())
      a.setDown(true)
      const providers =
        order === 'down first' ? [a.provider, disabled(providerB())] : [disabled(providerB()), a.provider]
      const ring = new KeyRing({ store, providers })
      const error = await ring.activeKey(t, 'data').catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'PROVIDER_KEY_DISABLED', table: t, providerId: 'local:b' })
      await ring.close()
    }
  })

  it('when every wrapping fails: the first code, an AggregateError cause, and the kek ids tried', async () => {
    const t = freshTable()
    const creator = new KeyRing({ autoCreate: true, store, providers: [providerA(), providerB()] })
    await creator.activeKey(t, 'data')
    await creator.close()

    const a = switchable(providerA())
    const b = switchable(providerB())
    a.setDown(true)
    b.setDown(true)
    const ring = new KeyRing({ autoCreate: true, store, providers: [a.provider, b.provider] })
    const error = await ring.activeKey(t, 'data').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(KeyProviderError)
    expect(error).toMatchObject({ code: 'PROVIDER_UNAVAILABLE', table: t })
    const message = (error as Error).message
    expect(message).toContain(`${t}/data/v1`)
    expect(message).toContain('local:a')
    expect(message).toContain('local:b')
    const cause = (error as Error).cause
    expect(cause).toBeInstanceOf(AggregateError)
    expect((cause as AggregateError).errors).toHaveLength(2)
    await ring.close()
  })

  it('skips wrappings without a configured provider, and says so when nothing else works', async () => {
    const t = freshTable()
    const creator = new KeyRing({ autoCreate: true, store, providers: [providerA()] })
    await creator.activeKey(t, 'index')
    await creator.close()
    const ring = new KeyRing({
      autoCreate: true,
      store,
      providers: [localKeyProvider({ id: 'local:c', key: randomBytes(32) })],
    })
    const error = await ring.activeKey(t, 'index').catch((e: unknown) => e)
    expect(error).toMatchObject({ code: 'CONFIG_INVALID' })
    expect((error as Error).message).toContain('local:a')
    await ring.close()
  })

  it('audit events carry the documented fields and never key bytes; a throwing sink breaks nothing', async () => {
    const t = freshTable()
    const events: AuditEvent[] = []
    const creator = new KeyRing({
      autoCreate: true,
      store,
      providers: [providerA()],
      audit: (e) => events.push(e),
    })
    const data = await creator.activeKey(t, 'data')
    const index = await creator.activeKey(t, 'index')
    const secrets = [hexOf(data), hexOf(index), data.bytes.toString('base64'), index.bytes.toString('base64')]
    const ring = new KeyRing({
      autoCreate: true,
      store,
      providers: [providerA()],
      audit: (e) => events.push(e),
    })
    await ring.activeKey(t, 'data')
    const serialized = JSON.stringify(events)
    for (const s of secrets) expect(serialized).not.toContain(s)
    for (const e of events) {
      expect(Object.keys(e).sort()).toEqual(
        ['durationMs', 'kekId', 'logicalTable', 'operation', 'outcome', 'purpose', 'time', 'version'].sort(),
      )
      expect(e.time).toBeInstanceOf(Date)
      expect(e.durationMs).toBeGreaterThanOrEqual(0)
    }
    expect(events.at(-1)).toMatchObject({
      operation: 'unwrap',
      kekId: 'local:a',
      outcome: 'success',
      version: 1,
    })

    const throwing = new KeyRing({
      autoCreate: true,
      store,
      providers: [providerA()],
      audit: () => {
        throw new Error('audit sink is broken')
      },
    })
    expect(hexOf(await throwing.activeKey(t, 'data'))).toBe(hexOf(data))
    await Promise.all([creator.close(), ring.close(), throwing.close()])
  })

  it('provider calls are O(keys), not O(calls): 1000 activeKey calls', async () => {
    const tables = [freshTable(), freshTable(), freshTable()]
    const creator = new KeyRing({ autoCreate: true, store, providers: [providerA()] })
    await Promise.all(
      Array.from({ length: 1000 }, (_, i) =>
        creator.activeKey(tables[i % 3] as string, i % 2 === 0 ? 'data' : 'index'),
      ),
    )
    // 3 tables × 2 purposes, created once each despite 1000 concurrent first uses: one
    // generateDataKey and one unwrap (its wrapping proven) each.
    expect(creator.stats().providerCalls).toBe(12)
    expect((await store.listAll()).filter((k) => tables.includes(k.logicalTable))).toHaveLength(6)

    // Another process: unwraps each key once, reads metadata once per table.
    const a = switchable(providerA())
    const ring = new KeyRing({ autoCreate: true, store, providers: [a.provider] })
    for (let i = 0; i < 1000; i++)
      await ring.activeKey(tables[i % 3] as string, i % 2 === 0 ? 'data' : 'index')
    await Promise.all(Array.from({ length: 1000 }, (_, i) => ring.activeKey(tables[i % 3] as string, 'data')))
    expect(a.unwraps()).toBe(6)
    expect(ring.stats().providerCalls).toBe(6)
    expect(ring.stats().metadataLoads).toBe(3)
    expect(ring.stats().cache.loads).toBe(6)
    await Promise.all([creator.close(), ring.close()])
  })

  it('re-unwraps each key once per cache TTL, and serves cached keys through an outage within grace', async () => {
    let now = 1_000_000
    const t = freshTable()
    const a = switchable(providerA())
    const creator = new KeyRing({ autoCreate: true, store, providers: [providerA()] })
    const expected = hexOf(await creator.activeKey(t, 'data'))
    await creator.close()
    const ring = new KeyRing({
      autoCreate: true,
      store,
      providers: [a.provider],
      cache: { ttlMs: 60_000, graceMs: 120_000 },
      metadataTtlMs: 30_000,
      now: () => now,
    })
    await ring.activeKey(t, 'data')
    expect(a.unwraps()).toBe(1)
    now += 59_999
    for (let i = 0; i < 100; i++) await ring.activeKey(t, 'data')
    expect(a.unwraps()).toBe(1)
    now += 1
    await ring.activeKey(t, 'data')
    expect(a.unwraps()).toBe(2)
    a.setDown(true)
    now += 100_000
    expect(hexOf(await ring.activeKey(t, 'data'))).toBe(expected) // stale, within grace
    expect(ring.stats().cache.staleServed).toBe(1)
    now += 80_000
    await expect(ring.activeKey(t, 'data')).rejects.toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
    await ring.close()
  })

  it('searchKeys: staged + active + decrypt-only, newest first; key() reads any version', async () => {
    let now = 1_000_000
    const t = freshTable()
    const ring = new KeyRing({
      autoCreate: true,
      store,
      providers: [providerA()],
      metadataTtlMs: 30_000,
      now: () => now,
    })
    const v1 = hexOf(await ring.activeKey(t, 'index'))
    const kek = providerA()
    const stage = async (version: number) => {
      const g = await kek.generateDataKey({ logicalTable: t, purpose: 'index', version })
      g.plaintext.fill(0)
      return store.stage(t, 'index', [g.wrapped])
    }
    await stage(2)
    await stage(3)
    // Metadata is cached: the staged versions are invisible until metadataTtlMs passes...
    expect((await ring.searchKeys(t, 'index')).map((k) => k.ref.version)).toEqual([1])
    now += 30_000
    expect((await ring.searchKeys(t, 'index')).map((k) => k.ref.version)).toEqual([3, 2, 1])
    await store.activate(t, 'index', 2)
    await store.setState(t, 'index', 1, 'retired')
    ring.refresh() // ...or until refresh()
    expect((await ring.searchKeys(t, 'index')).map((k) => k.ref.version)).toEqual([3, 2])
    expect((await ring.activeKey(t, 'index')).ref.version).toBe(2)
    expect(hexOf(await ring.key({ logicalTable: t, purpose: 'index', version: 1 }))).toBe(v1) // retired: still readable
    expect((await ring.versions(t, 'index')).map((k) => k.state)).toEqual(['retired', 'active', 'staged'])
    await expect(ring.key({ logicalTable: t, purpose: 'index', version: 99 })).rejects.toMatchObject({
      code: 'KEY_NOT_FOUND',
    })
    await ring.close()
  })

  it('key() sees a version staged by another process without waiting for the metadata TTL', async () => {
    let now = 1_000_000
    const t = freshTable()
    const ring = new KeyRing({ autoCreate: true, store, providers: [providerA()], now: () => now })
    await ring.activeKey(t, 'data')
    const other = new KeyRing({ autoCreate: true, store, providers: [providerA()] })
    const g = await providerA().generateDataKey({ logicalTable: t, purpose: 'data', version: 2 })
    await store.stage(t, 'data', [g.wrapped])
    now += 1000 // rate limit of forced reloads
    const ref: KeyRef = { logicalTable: t, purpose: 'data', version: 2 }
    expect((await ring.key(ref)).bytes.equals(g.plaintext)).toBe(true)
    expect((await other.key(ref)).bytes.equals(g.plaintext)).toBe(true)
    await Promise.all([ring.close(), other.close()])
  })

  it('autoCreate: false refuses a table without keys with KEY_NOT_FOUND', async () => {
    const t = freshTable()
    const ring = new KeyRing({ store, providers: [providerA()], autoCreate: false })
    await expect(ring.activeKey(t, 'data')).rejects.toMatchObject({ code: 'KEY_NOT_FOUND', table: t })
    expect(await store.list(t)).toEqual([])
    await ring.close()
  })

  it('close() zeroes cached keys, closes providers and refuses further use', async () => {
    const t = freshTable()
    const kek = providerA()
    const ring = new KeyRing({ autoCreate: true, store, providers: [kek] })
    const key = await ring.activeKey(t, 'data')
    const held = key.bytes
    await ring.close()
    expect(held.every((b) => b === 0)).toBe(true)
    await expect(ring.activeKey(t, 'data')).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' })
    await expect(kek.generateDataKey({ logicalTable: t, purpose: 'data', version: 9 })).rejects.toMatchObject(
      {
        code: 'PROVIDER_UNAVAILABLE',
      },
    )
  })

  it('redacts itself', async () => {
    const ring = new KeyRing({ autoCreate: true, store, providers: [providerA()] })
    const key = await ring.activeKey(freshTable(), 'data')
    expect(JSON.stringify(ring)).not.toContain(hexOf(key))
    expect(String(ring)).toContain('local:a')
    await ring.close()
  })

  it('refuses duplicate provider ids and an empty provider list', () => {
    expect(() => new KeyRing({ autoCreate: true, store, providers: [] })).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID' }),
    )
    expect(() => new KeyRing({ autoCreate: true, store, providers: [providerA(), providerA()] })).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID' }),
    )
  })
})

describe('rewrapAll', () => {
  it('moves every key from local:a to local:b; the ring then works with local:b alone', async () => {
    // Its own key table, so that only these keys are rewrapped.
    const own = new KeyStore(db, { tableName: `kfe_keys_rewrap_${Math.random().toString(36).slice(2, 7)}` })
    await own.ensureSchema()
    const tables = [freshTable(), freshTable()]
    const before = new KeyRing({ autoCreate: true, store: own, providers: [providerA()] })
    const expected = new Map<string, string>()
    for (const t of tables) {
      for (const purpose of ['data', 'index'] as const) {
        expected.set(`${t}/${purpose}/1`, hexOf(await before.activeKey(t, purpose)))
      }
    }
    const g = await providerA().generateDataKey({
      logicalTable: tables[0] as string,
      purpose: 'data',
      version: 2,
    })
    await own.stage(tables[0] as string, 'data', [g.wrapped])
    expected.set(`${tables[0]}/data/2`, g.plaintext.toString('hex'))
    await before.close()

    const events: AuditEvent[] = []
    const result = await rewrapAll({
      store: own,
      from: [providerA()],
      to: providerB(),
      removeKekIds: ['local:a'],
      audit: (e) => events.push(e),
    })
    expect(result).toEqual({ keys: 5, rewrapped: 5 })
    expect(events.filter((e) => e.operation === 'rewrap' && e.kekId === 'local:b')).toHaveLength(5)
    expect(events.filter((e) => e.operation === 'unwrap' && e.kekId === 'local:a')).toHaveLength(5)
    for (const k of await own.listAll()) expect(k.wrappings.map((w) => w.kekId)).toEqual(['local:b'])

    const after = new KeyRing({ autoCreate: true, store: own, providers: [providerB()] })
    for (const [name, hex] of expected) {
      const [t, purpose, version] = name.split('/') as [string, 'data' | 'index', string]
      expect(hexOf(await after.key({ logicalTable: t, purpose, version: Number(version) }))).toBe(hex)
    }
    await after.close()

    // Idempotent: nothing left to rewrap.
    expect(await rewrapAll({ store: own, from: [providerA()], to: providerB() })).toEqual({
      keys: 5,
      rewrapped: 0,
    })
    await db.schema.dropTable(own.tableName).execute()
  })

  it('adds a wrapping while keeping the old one, and never removes the target', async () => {
    const own = new KeyStore(db, { tableName: `kfe_keys_add_${Math.random().toString(36).slice(2, 7)}` })
    await own.ensureSchema()
    const ring = new KeyRing({ autoCreate: true, store: own, providers: [providerA()] })
    await ring.activeKey(freshTable(), 'data')
    await ring.close()
    expect(await rewrapAll({ store: own, from: [providerA()], to: providerB() })).toEqual({
      keys: 2,
      rewrapped: 2,
    })
    for (const k of await own.listAll())
      expect(k.wrappings.map((w) => w.kekId)).toEqual(['local:a', 'local:b'])
    await expect(
      rewrapAll({ store: own, from: [providerA()], to: providerB(), removeKekIds: ['local:b'] }),
    ).rejects.toMatchObject({ code: 'CONFIG_INVALID' })
    await db.schema.dropTable(own.tableName).execute()
  })
})

describe('rewrapAll: a new wrapping is proved before old ones are removed', () => {
  async function storeWithOneKey() {
    const own = new KeyStore(db, { tableName: `kfe_keys_prove_${Math.random().toString(36).slice(2, 7)}` })
    await own.ensureSchema()
    const ring = new KeyRing({ autoCreate: true, store: own, providers: [providerA()] })
    const table = freshTable()
    const key = hexOf(await ring.activeKey(table, 'data'))
    await ring.close()
    return { own, table, key }
  }

  it('a KEK whose rewrap yields a wrapping of another key is refused, and nothing is removed', async () => {
    const { own, table } = await storeWithOneKey()
    const b = providerB()
    const liar: KeyProvider = {
      id: b.id,
      generateDataKey: (ref) => b.generateDataKey(ref),
      unwrap: (wrapped, ref) => b.unwrap(wrapped, ref),
      // Wraps a different (random) key: a buggy or misconfigured keeper.
      rewrap: async (_source, ref) => (await b.generateDataKey(ref)).wrapped,
    }
    const before = await own.list(table)
    await expect(
      rewrapAll({ store: own, from: [providerA()], to: liar, removeKekIds: ['local:a'] }),
    ).rejects.toMatchObject({ code: 'UNWRAP_FAILED' })
    expect(await own.list(table)).toEqual(before)
  })

  it('two concurrent rewraps adding different KEKs both keep their wrapping (compare-and-set)', async () => {
    const { own, table, key } = await storeWithOneKey()
    const c = localKeyProvider({ id: 'local:c', key: randomBytes(32) })
    await Promise.all([
      rewrapAll({ store: own, from: [providerA()], to: providerB() }),
      rewrapAll({ store: own, from: [providerA()], to: c }),
    ])
    const [stored] = await own.list(table, 'data')
    expect(stored?.wrappings.map((w) => w.kekId).sort()).toEqual(['local:a', 'local:b', 'local:c'])
    for (const provider of [providerB(), c]) {
      const ring = new KeyRing({ autoCreate: true, store: own, providers: [provider] })
      expect(hexOf(await ring.activeKey(table, 'data'))).toBe(key)
      await ring.close()
    }
  })
})
