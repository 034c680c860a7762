import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ActiveVersions } from '../../../src/keys/active-versions.js'
import type { KeyProvider } from '../../../src/keys/key-provider.js'
import { KeyRing } from '../../../src/keys/key-ring.js'
import type { KeyEvent } from '../../../src/keys/key-ring-options.js'
import { KeyStore } from '../../../src/keys/key-store.js'
import { localKeyProvider } from '../../../src/keys/local-provider.js'
import { newPGlite } from '../../support/pglite.js'

let db: Kysely<unknown>
let store: KeyStore
const kek = randomBytes(32)
const provider = (): KeyProvider => localKeyProvider({ id: 'local:bounds', key: Uint8Array.from(kek) })

beforeAll(async () => {
  db = new Kysely<unknown>({ dialect: new PGliteDialect(newPGlite()) })
  store = new KeyStore(db)
  await store.ensureSchema()
})
afterAll(async () => {
  await db.destroy()
})

describe('KeyRing metadataMax', () => {
  it('metadataMax must be a positive integer (CONFIG_INVALID)', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => new KeyRing({ store, providers: [provider()], metadataMax: bad })).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID' }),
      )
    }
  })

  it('holds at most metadataMax key names, reloads a dropped one from the store, and unwraps nothing again', async () => {
    const names = Array.from(
      { length: 12 },
      (_, i) => `bounds_${i}_${Math.random().toString(36).slice(2, 7)}`,
    )
    const creator = new KeyRing({ store, providers: [provider()] })
    await creator.init(names)
    await creator.close()

    const ring = new KeyRing({ store, providers: [provider()], metadataMax: 3 })
    const first = await Promise.all(
      names.map((n) => ring.activeKey(n, 'data').then((k) => k.bytes.toString('hex'))),
    )
    expect(ring.stats()).toMatchObject({ metadataNames: 3, metadataLoads: 12, providerCalls: 12 })
    // The first names were dropped: read again from the store, keys from the key cache.
    const again = []
    for (const n of names) again.push((await ring.activeKey(n, 'data')).bytes.toString('hex'))
    expect(again).toEqual(first)
    expect(ring.stats()).toMatchObject({ metadataNames: 3, metadataLoads: 24, providerCalls: 12 })
    // The last three are held: no store read.
    for (const n of names.slice(-3)) await ring.activeKey(n, 'data')
    expect(ring.stats().metadataLoads).toBe(24)
    await ring.close()
  })
})

describe('ActiveVersions bound', () => {
  it('remembers the highest version of at most max key names (both purposes), least recently seen forgotten first', () => {
    const events: KeyEvent[] = []
    const versions = new ActiveVersions(false, (e) => events.push(e), 2)
    for (const name of ['a', 'b']) {
      expect(versions.accept(name, 'data', 2)).toBe(true)
      expect(versions.accept(name, 'index', 2)).toBe(true)
    }
    // a and b are remembered: a rollback of either is refused.
    expect(versions.accept('a', 'data', 1)).toBe(false)
    expect(versions.highest('b', 'index')).toBe(2)
    // A third name pushes out the least recently seen entries (a/index, then b/data).
    versions.accept('c', 'data', 5)
    versions.accept('c', 'index', 5)
    expect(versions.highest('a', 'index')).toBeUndefined()
    expect(versions.highest('b', 'data')).toBeUndefined()
    // A forgotten name starts again from the version it sees next, as after a restart.
    expect(versions.accept('b', 'data', 1)).toBe(true)
    expect(versions.highest('c', 'data')).toBe(5)
    expect(events.map((e) => `${e.type} ${e.logicalTable}/${e.purpose}`)).toEqual(['rollback-refused a/data'])
  })
})
