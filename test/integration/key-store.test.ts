import { randomBytes } from 'node:crypto'
import type { PGlite } from '@electric-sql/pglite'
import { type Dialect, type Driver, Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { WrappedKey } from '../../src/keys/key-provider.js'
import { KeyRing } from '../../src/keys/key-ring.js'
import { KeyStore } from '../../src/keys/key-store.js'
import { localKeyProvider } from '../../src/keys/local-provider.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import { newPGlite } from '../support/pglite.js'

const INSTANCES = 10

/**
 * Several Kysely instances on ONE PGlite must share one driver: PGlite is a single session, and
 * kysely-pglite-dialect serialises transactions per driver only. Separate drivers would interleave
 * two transactions on that one session.
 */
function sharedPgliteDialect(pglite: PGlite): Dialect {
  const base = new PGliteDialect(pglite)
  const driver = base.createDriver()
  const shared: Driver = {
    init: () => driver.init(),
    acquireConnection: () => driver.acquireConnection(),
    beginTransaction: (c, s) => driver.beginTransaction(c, s),
    commitTransaction: (c) => driver.commitTransaction(c),
    rollbackTransaction: (c) => driver.rollbackTransaction(c),
    releaseConnection: (c) => driver.releaseConnection(c),
    destroy: async () => {}, // the PGlite instance is closed once, in afterAll
  }
  return {
    createAdapter: () => base.createAdapter(),
    createDriver: () => shared,
    createQueryCompiler: () => base.createQueryCompiler(),
    createIntrospector: (db) => base.createIntrospector(db),
  }
}

function fakeWrapping(kekId = 'local:test'): WrappedKey {
  return { kekId, wrapped: new Uint8Array(randomBytes(61)) }
}

describe.each(backends())('KeyStore on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const tableName = uniqueName('kfe_keys_it')
    const kekHex = randomBytes(32).toString('hex')
    let pglite: PGlite | undefined
    let dbs: Kysely<unknown>[] = []
    let stores: KeyStore[] = []
    let store: KeyStore

    beforeAll(async () => {
      if (backend.name === 'pglite') pglite = newPGlite()
      const shared = pglite === undefined ? undefined : sharedPgliteDialect(pglite)
      const dialect = (): Dialect => shared ?? backend.createDialect()
      dbs = Array.from({ length: INSTANCES }, () => new Kysely<unknown>({ dialect: dialect() }))
      stores = dbs.map((db) => new KeyStore(db, { tableName }))
      store = stores[0] as KeyStore
      // Concurrent ensureSchema from every instance: must neither fail nor duplicate anything.
      await Promise.all(stores.map((s) => s.ensureSchema()))
    })

    afterAll(async () => {
      await dbs[0]?.schema.dropTable(tableName).ifExists().execute()
      await Promise.all(dbs.map((db) => db.destroy()))
      await pglite?.close()
    })

    it('detects the SQL family from the adapter', () => {
      expect(store.family).toBe(backend.family)
    })

    it('ensureSchema is idempotent', async () => {
      await store.ensureSchema()
      await store.ensureSchema()
      expect(await store.list('nothing-here')).toEqual([])
    })

    it('createInitial: 10 racing instances create exactly one version 1; every ring gets the same key', async () => {
      const logicalTable = `users_${Math.random().toString(36).slice(2, 8)}`
      const rings = stores.map(
        (s) =>
          new KeyRing({
            autoCreate: true,
            store: s,
            providers: [localKeyProvider({ id: 'local:it', key: kekHex })],
            metadataTtlMs: 0,
          }),
      )
      const data = await Promise.all(rings.map((r) => r.activeKey(logicalTable, 'data')))
      const index = await Promise.all(rings.map((r) => r.activeKey(logicalTable, 'index')))
      const dataHex = new Set(data.map((k) => k.bytes.toString('hex')))
      const indexHex = new Set(index.map((k) => k.bytes.toString('hex')))
      expect(dataHex.size).toBe(1)
      expect(indexHex.size).toBe(1)
      expect([...dataHex][0]).not.toBe([...indexHex][0])
      const stored = await store.list(logicalTable)
      expect(stored.map((k) => [k.purpose, k.version, k.state])).toEqual([
        ['data', 1, 'active'],
        ['index', 1, 'active'],
      ])
      expect(stored[0]?.createdAt).toBeInstanceOf(Date)
      await Promise.all(rings.map((r) => r.close()))
    })

    it('createInitial reports created=false and returns the winner row to the loser', async () => {
      const logicalTable = uniqueName('t')
      const results = await Promise.all(
        stores.map((s) => s.createInitial(logicalTable, 'data', [fakeWrapping()])),
      )
      expect(results.filter((r) => r.created)).toHaveLength(1)
      const winner = results.find((r) => r.created)?.key
      for (const r of results) {
        expect(r.key.version).toBe(1)
        expect(
          Buffer.from(r.key.wrappings[0]?.wrapped ?? []).equals(
            Buffer.from(winner?.wrappings[0]?.wrapped ?? [1]),
          ),
        ).toBe(true)
      }
    })

    it('stage / activate / setState keep exactly one active version', async () => {
      const t = uniqueName('t')
      await store.createInitial(t, 'data', [fakeWrapping()])
      const v2 = await store.stage(t, 'data', [fakeWrapping()])
      expect([v2.version, v2.state]).toEqual([2, 'staged'])
      await store.activate(t, 'data', 2)
      expect((await store.list(t, 'data')).map((k) => k.state)).toEqual(['decrypt-only', 'active'])
      await store.activate(t, 'data', 2) // idempotent
      await store.setState(t, 'data', 1, 'retired')
      expect((await store.list(t, 'data')).map((k) => k.state)).toEqual(['retired', 'active'])

      await expect(store.setState(t, 'data', 2, 'decrypt-only')).rejects.toMatchObject({
        code: 'KEY_STATE_INVALID',
      })
      await expect(store.setState(t, 'data', 2, 'retired')).rejects.toMatchObject({
        code: 'KEY_STATE_INVALID',
      })
      await expect(store.activate(t, 'data', 1)).rejects.toMatchObject({ code: 'KEY_STATE_INVALID' })
      await expect(store.setState(t, 'data', 1, 'staged')).rejects.toMatchObject({
        code: 'KEY_STATE_INVALID',
      })
      await expect(store.activate(t, 'data', 9)).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' })
      await expect(store.stage(uniqueName('none'), 'data', [fakeWrapping()])).rejects.toMatchObject({
        code: 'KEY_NOT_FOUND',
      })
      // Rollback: a decrypt-only version may become active again.
      await store.stage(t, 'data', [fakeWrapping()])
      await store.activate(t, 'data', 3)
      await store.setState(t, 'data', 2, 'active')
      expect((await store.list(t, 'data')).map((k) => k.state)).toEqual(['retired', 'active', 'decrypt-only'])
    })

    it('two racing activations leave exactly one active version', async () => {
      for (let round = 0; round < 3; round++) {
        const t = uniqueName('race')
        await store.createInitial(t, 'index', [fakeWrapping()])
        await store.stage(t, 'index', [fakeWrapping()])
        await store.stage(t, 'index', [fakeWrapping()])
        await Promise.all([stores[1]?.activate(t, 'index', 2), stores[2]?.activate(t, 'index', 3)])
        const states = (await store.list(t, 'index')).map((k) => k.state)
        expect(states.filter((s) => s === 'active')).toHaveLength(1)
        expect(states[0]).toBe('decrypt-only')
        expect(states.filter((s) => s === 'decrypt-only')).toHaveLength(2)
      }
    })

    it('racing stages get distinct versions', async () => {
      const t = uniqueName('stage')
      await store.createInitial(t, 'data', [fakeWrapping()])
      const staged = await Promise.all(stores.slice(0, 5).map((s) => s.stage(t, 'data', [fakeWrapping()])))
      expect(staged.map((k) => k.version).sort()).toEqual([2, 3, 4, 5, 6])
    })

    it('setWrappings adds and removes KEK wrappings without touching anything else', async () => {
      const t = uniqueName('wrap')
      const first = fakeWrapping('local:a')
      await store.createInitial(t, 'data', [first])
      const ref = { logicalTable: t, purpose: 'data' as const, version: 1 }
      const second = fakeWrapping('local:b')
      await store.setWrappings(ref, [first, second])
      let [k] = await store.list(t, 'data')
      expect(k?.wrappings.map((w) => w.kekId)).toEqual(['local:a', 'local:b'])
      expect(Buffer.from(k?.wrappings[1]?.wrapped ?? []).equals(Buffer.from(second.wrapped))).toBe(true)
      await store.setWrappings(ref, [second])
      await store.setWrappings(ref, [second]) // unchanged value: still fine
      ;[k] = await store.list(t, 'data')
      expect(k?.wrappings.map((w) => w.kekId)).toEqual(['local:b'])
      expect(k?.state).toBe('active')
      await expect(store.setWrappings(ref, [])).rejects.toMatchObject({ code: 'CONFIG_INVALID' })
      await expect(store.setWrappings({ ...ref, version: 7 }, [second])).rejects.toMatchObject({
        code: 'KEY_NOT_FOUND',
      })
    })

    it('listAll lists every key ordered by table, purpose, version', async () => {
      const all = await store.listAll()
      const keys = all.map(
        (k) => `${k.logicalTable}\u0000${k.purpose}\u0000${String(k.version).padStart(5, '0')}`,
      )
      expect(keys).toEqual([...keys].sort())
      expect(all.length).toBeGreaterThan(5)
    })

    it('a key table that does not exist lists no keys (never initialised, or dropped)', async () => {
      const missing = new KeyStore(dbs[0] as Kysely<unknown>, { tableName: uniqueName('missing') })
      expect(await missing.list('users')).toEqual([])
    })

    it('wraps database errors in KEY_STORE_ERROR without secrets', async () => {
      const name = uniqueName('broken')
      const db = dbs[0] as Kysely<unknown>
      await sql`create table ${sql.table(name)} (id integer)`.execute(db)
      try {
        const broken = new KeyStore(db, { tableName: name })
        const error = await broken.list('users').catch((e: unknown) => e)
        expect(error).toMatchObject({ code: 'KEY_STORE_ERROR', table: 'users' })
        expect((error as Error).cause).toBeDefined()
      } finally {
        await sql`drop table ${sql.table(name)}`.execute(db)
      }
    })
  })
})
