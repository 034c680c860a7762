/**
 * What a database writer can do to the key table, and what the key ring makes of it (issue 13):
 * a corrupt row has its own code and breaks only what needs it; a rollback of the active
 * version is refused for writes and reported; a key wrapped for another version is not staged.
 */
import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { keyCheckValue } from '../../src/keys/key-check.js'
import type { KeyEvent } from '../../src/keys/key-ring.js'
import { KeyRing } from '../../src/keys/key-ring.js'
import { KeyStore } from '../../src/keys/key-store.js'
import { localKeyProvider } from '../../src/keys/local-provider.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'

describe.each(backends())('key store integrity on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const keyTable = uniqueName('kintegrity')
    const kek = randomBytes(32)
    const provider = () => localKeyProvider({ id: 'local:k', key: Uint8Array.from(kek) })
    // biome-ignore lint/suspicious/noExplicitAny: the key table's name is generated
    let db: Kysely<any>
    let store: KeyStore
    const ring = (options: { allowRollback?: boolean; onKeyEvent?: (e: KeyEvent) => void } = {}) =>
      new KeyRing({ store, providers: [provider()], metadataTtlMs: 0, ...options })
    /** A table with data v1 active, and data v2 staged then active (a rotation). */
    const rotated = async (): Promise<string> => {
      const t = uniqueName('t')
      const r = ring()
      await r.init([t])
      const v2 = await provider().generateDataKey({ logicalTable: t, purpose: 'data', version: 2 })
      v2.plaintext.fill(0)
      await store.stage(t, 'data', [v2.wrapped], 2)
      await store.activate(t, 'data', 2)
      await r.close()
      return t
    }

    beforeAll(async () => {
      db = new Kysely({ dialect: backend.createDialect() })
      store = new KeyStore(db, { tableName: keyTable })
      await store.ensureSchema()
    })
    afterAll(async () => {
      await sql`drop table if exists ${sql.table(keyTable)}`.execute(db)
      await db.destroy()
    })

    it('stage refuses a key wrapped for another version than the next (KEY_VERSION_MISMATCH), and stores nothing', async () => {
      const t = uniqueName('t')
      const r = ring()
      await r.init([t])
      const wrongVersion = await provider().generateDataKey({ logicalTable: t, purpose: 'data', version: 3 })
      wrongVersion.plaintext.fill(0)
      await expect(store.stage(t, 'data', [wrongVersion.wrapped], 3)).rejects.toMatchObject({
        code: 'KEY_VERSION_MISMATCH',
        table: t,
        message: expect.stringContaining('next version is 2'),
      })
      expect((await store.list(t, 'data')).map((k) => k.version)).toEqual([1])
      // Skipping a number is allowed only when asked and after a retired version: not after v1,
      // which is active.
      await expect(store.stage(t, 'data', [wrongVersion.wrapped], 3, undefined, true)).rejects.toMatchObject({
        code: 'KEY_VERSION_MISMATCH',
      })
      const v2 = await provider().generateDataKey({ logicalTable: t, purpose: 'data', version: 2 })
      v2.plaintext.fill(0)
      await store.stage(t, 'data', [v2.wrapped], 2)
      await store.setState(t, 'data', 2, 'retired')
      const v4 = await provider().generateDataKey({ logicalTable: t, purpose: 'data', version: 4 })
      v4.plaintext.fill(0)
      // After the retired v2: v4 (one skipped) only when asked, never v5.
      await expect(store.stage(t, 'data', [v4.wrapped], 4)).rejects.toMatchObject({
        code: 'KEY_VERSION_MISMATCH',
      })
      await expect(store.stage(t, 'data', [v4.wrapped], 5, undefined, true)).rejects.toMatchObject({
        code: 'KEY_VERSION_MISMATCH',
      })
      expect((await store.stage(t, 'data', [v4.wrapped], 4, undefined, true)).version).toBe(4)
      expect((await store.list(t, 'data')).map((k) => [k.version, k.state])).toEqual([
        [1, 'active'],
        [2, 'retired'],
        [4, 'staged'],
      ])
      await r.close()
    })

    it('a corrupt row: KEY_STORE_CORRUPT for what needs it (no grace), the other versions keep working', async () => {
      const t = await rotated()
      const r = ring()
      const v2 = await r.activeKey(t, 'data')
      // A writer damages version 1's wrappings.
      await db
        .updateTable(keyTable)
        .set({ wrappings: 'not json {' })
        .where('logical_table', '=', t)
        .where('purpose', '=', 'data')
        .where('version', '=', 1)
        .execute()
      const fresh = ring()
      // Version 2 (active) and the index key still work.
      expect((await fresh.activeKey(t, 'data')).bytes.equals(v2.bytes)).toBe(true)
      await fresh.activeKey(t, 'index')
      // Version 1 is named as corrupt: not missing, not an outage.
      const error = await fresh.key({ logicalTable: t, purpose: 'data', version: 1 }).catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'KEY_STORE_CORRUPT', table: t })
      expect((error as Error).message).toContain(`${t}/data/v1`)
      expect((error as Error).message).not.toContain('not json')
      expect(
        JSON.stringify((error as Error).cause, Object.getOwnPropertyNames(Error.prototype)),
      ).not.toContain('not json')
      // A search over every live data version refuses rather than miss version 1's rows.
      await expect(fresh.searchKeys(t, 'data')).rejects.toMatchObject({ code: 'KEY_STORE_CORRUPT' })
      // list() names it too; read() returns both parts.
      await expect(store.list(t)).rejects.toMatchObject({ code: 'KEY_STORE_CORRUPT' })
      const { keys, corrupt } = await store.read(t)
      expect(keys.map((k) => `${k.purpose}/v${k.version}`)).toEqual(['data/v2', 'index/v1'])
      expect(corrupt.map((c) => `${c.purpose}/v${c.version}/${c.state}`)).toEqual(['data/v1/decrypt-only'])
      await r.close()
      await fresh.close()
    })

    it('a corrupt active row refuses writes instead of falling back to another version, and never gets fresh keys', async () => {
      const t = uniqueName('t')
      const r = ring()
      await r.init([t])
      await db
        .updateTable(keyTable)
        .set({ state: 'bogus' })
        .where('logical_table', '=', t)
        .where('purpose', '=', 'data')
        .execute()
      const dev = new KeyRing({ store, providers: [provider()], autoCreate: true, metadataTtlMs: 0 })
      await expect(dev.activeKey(t, 'data')).rejects.toMatchObject({ code: 'KEY_STORE_CORRUPT', table: t })
      expect((await store.read(t, 'data')).keys).toEqual([])
      await r.close()
      await dev.close()
    })

    it('rollback: a writer makes version 1 active again; writes are refused (KEY_ROLLBACK) and an event is raised', async () => {
      const t = await rotated()
      const events: KeyEvent[] = []
      const r = ring({ onKeyEvent: (e) => events.push(e) })
      expect((await r.activeKey(t, 'data')).ref.version).toBe(2)
      // A writer with database access flips the states back.
      await db
        .updateTable(keyTable)
        .set({ state: sql`case when version = 1 then 'active' else 'decrypt-only' end` })
        .where('logical_table', '=', t)
        .where('purpose', '=', 'data')
        .execute()
      await expect(r.activeKey(t, 'data')).rejects.toMatchObject({
        code: 'KEY_ROLLBACK',
        table: t,
        message: expect.stringContaining('version 1, lower than version 2'),
      })
      expect(r.peekActiveKey(t, 'data')).toBeUndefined()
      // Reads of either version still work.
      await r.key({ logicalTable: t, purpose: 'data', version: 1 })
      await r.key({ logicalTable: t, purpose: 'data', version: 2 })
      expect(events.map((e) => [e.type, e.purpose, e.from, e.to, e.highest])).toEqual([
        ['rollback-refused', 'data', 2, 1, 2],
      ])

      // A deliberate rollback: allowed by option, and still reported.
      const allowed: KeyEvent[] = []
      const ok = ring({ allowRollback: true, onKeyEvent: (e) => allowed.push(e) })
      await store.activate(t, 'data', 2)
      expect((await ok.activeKey(t, 'data')).ref.version).toBe(2)
      await store.activate(t, 'data', 1)
      expect((await ok.activeKey(t, 'data')).ref.version).toBe(1)
      expect(allowed.map((e) => [e.type, e.from, e.to])).toEqual([['active-version-changed', 2, 1]])
      await r.close()
      await ok.close()
    })

    it('key check value: a wrapping replaced by another key of the same ref under the same KEK is named (KEY_CHECK_FAILED)', async () => {
      const t = uniqueName('t')
      const r = ring()
      await r.init([t])
      const [stored] = await store.list(t, 'data')
      expect(stored?.checkValue?.length).toBe(16)
      const good = await r.activeKey(t, 'data')
      expect(Buffer.from(stored?.checkValue ?? []).equals(keyCheckValue(good.bytes, good.ref))).toBe(true)
      await r.close()
      // Another environment sharing the KEK: same ref, another key, a valid wrapping.
      const other = await provider().generateDataKey({ logicalTable: t, purpose: 'data', version: 1 })
      other.plaintext.fill(0)
      await store.setWrappings({ logicalTable: t, purpose: 'data', version: 1 }, [other.wrapped])
      const fresh = ring()
      const error = await fresh.activeKey(t, 'data').catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'KEY_CHECK_FAILED', table: t })
      expect((error as Error).message).toContain(`${t}/data/v1`)
      await fresh.close()
    })

    it('key check value: a row without one (made before it existed) is read unchecked; a malformed one is KEY_STORE_CORRUPT', async () => {
      const t = uniqueName('t')
      const r = ring()
      await r.init([t])
      const expected = (await r.activeKey(t, 'index')).bytes.toString('hex')
      await r.close()
      await db.updateTable(keyTable).set({ check_value: null }).where('logical_table', '=', t).execute()
      const legacy = ring()
      expect((await legacy.activeKey(t, 'index')).bytes.toString('hex')).toBe(expected)
      await legacy.close()
      await db.updateTable(keyTable).set({ check_value: 'zz' }).where('logical_table', '=', t).execute()
      const bad = ring()
      await expect(bad.activeKey(t, 'index')).rejects.toMatchObject({ code: 'KEY_STORE_CORRUPT', table: t })
      await bad.close()
    })

    it('ensureSchema adds the check_value column to a key table made before it', async () => {
      const old = uniqueName('kold')
      await sql`create table ${sql.table(old)} (logical_table varchar(255) not null, purpose varchar(16) not null, version integer not null, state varchar(16) not null, wrappings text not null, created_at ${sql.raw(backend.family === 'mysql' ? 'datetime(3)' : 'timestamptz')} not null, primary key (logical_table, purpose, version))`.execute(
        db,
      )
      try {
        const oldStore = new KeyStore(db, { tableName: old })
        await oldStore.ensureSchema()
        await oldStore.ensureSchema()
        const r = new KeyRing({ store: oldStore, providers: [provider()] })
        await r.init(['t'])
        expect((await oldStore.list('t')).every((k) => k.checkValue?.length === 16)).toBe(true)
        await r.close()
      } finally {
        await sql`drop table ${sql.table(old)}`.execute(db)
      }
    })

    it('a rotation (higher version) is reported as a change, never refused', async () => {
      const t = uniqueName('t')
      const events: KeyEvent[] = []
      const r = ring({ onKeyEvent: (e) => events.push(e) })
      await r.init([t])
      expect((await r.activeKey(t, 'data')).ref.version).toBe(1)
      const v2 = await provider().generateDataKey({ logicalTable: t, purpose: 'data', version: 2 })
      v2.plaintext.fill(0)
      await store.stage(t, 'data', [v2.wrapped], 2)
      await store.activate(t, 'data', 2)
      expect((await r.activeKey(t, 'data')).ref.version).toBe(2)
      expect(events.map((e) => [e.type, e.logicalTable, e.purpose, e.from, e.to])).toEqual([
        ['active-version-changed', t, 'data', 1, 2],
      ])
      await r.close()
    })
  })
})
