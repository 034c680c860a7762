import { randomBytes } from 'node:crypto'
import type { CompiledQuery, Dialect } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KeyStore, localKeyProvider } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb } from '../support/encrypted-db.js'
import { hooked } from '../support/hooked-dialect.js'
import { expectIndexOf, ids, storedBytes } from './plugin-at-rest.js'

/**
 * The application's dialect with a tap below the encryption wrapper: records each query exactly
 * as the database receives it (after deferred values were resolved and probes expanded). A
 * spy on the real driver, not a mock.
 */
const tapped = (dialect: Dialect, sent: CompiledQuery[]): Dialect =>
  hooked(dialect, async (query) => {
    sent.push(query)
  })

describe.each(backends())('plugin index rotation [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const kek = randomBytes(32)
    const provider = localKeyProvider({ key: kek })
    const sent: CompiledQuery[] = []
    let t: EncryptedTestDb
    let u: string
    let store: KeyStore
    /** v1 index values of rows written before the rotation. */
    let v1Email: Buffer

    /** The last query the database received that searched `column`. */
    const lastSearch = (column: string) =>
      [...sent]
        .reverse()
        .find((q) => q.sql.includes(backend.family === 'mysql' ? `\`${column}\` in` : `"${column}" in`))

    beforeAll(async () => {
      const tappedBackend: Backend = {
        ...backend,
        createDialectPair: () => {
          const [app, raw] = backend.createDialectPair()
          return [tapped(app, sent), raw]
        },
      }
      t = await encryptedTestDb(tappedBackend, { keyProvider: provider })
      u = t.names.users
      store = new KeyStore(t.raw, { tableName: t.names.keys })
      await t.db
        .insertInto(u)
        .values([
          { id: 1, name: 'old-1', email: 'old1@x.io', ssn: '123-00-0001' },
          { id: 2, name: 'old-2', email: 'old2@x.io', ssn: '123-00-0002' },
        ])
        .execute()
      const row = await t.raw.selectFrom(u).select('email_bidx').where('id', '=', 1).executeTakeFirstOrThrow()
      v1Email = storedBytes(row.email_bidx)
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('a staged index version is searched beside the active one', async () => {
      const generated = await provider.generateDataKey({ logicalTable: u, purpose: 'index', version: 2 })
      generated.plaintext.fill(0)
      const staged = await store.stage(u, 'index', [generated.wrapped])
      expect(staged.version).toBe(2)
      t.encryption.keyRing().refresh()

      // Two live versions: one probe value per version.
      const probes = await t.encryption.indexOf(u, 'email', 'old1@x.io')
      expect(probes).toHaveLength(2)
      expect(probes.some((p) => p.equals(v1Email))).toBe(true)

      sent.length = 0
      const rows = await t.db.selectFrom(u).select(['id', 'email']).where('email', '=', 'old1@x.io').execute()
      expect(rows).toEqual([{ id: 1, email: 'old1@x.io' }])
      const search = lastSearch('email_bidx')
      expect(search?.sql).toMatch(
        backend.family === 'mysql' ? /`email_bidx` in \(\?, \?\)/ : /"email_bidx" in \(\$1, \$2\)/,
      )
      expect(search?.parameters).toHaveLength(2)
      for (const p of search?.parameters ?? []) expect(p).toBeInstanceOf(Uint8Array)
      // The search index too (with its false-positive filter).
      expect(ids(await t.db.selectFrom(u).select('id').where('ssn', '=', '123-00-0002').execute())).toEqual([
        2,
      ])
      expect(
        ids(await t.db.selectFrom(u).select('id').where('email', 'in', ['old1@x.io', 'old2@x.io']).execute()),
      ).toEqual([1, 2])
      expect(lastSearch('email_bidx')?.parameters).toHaveLength(4)
    })

    it('rows written while v2 is staged still use the active v1 index', async () => {
      await t.db.insertInto(u).values({ id: 3, name: 'during', email: 'during@x.io' }).execute()
      const stored = await t.raw
        .selectFrom(u)
        .select('email_bidx')
        .where('id', '=', 3)
        .executeTakeFirstOrThrow()
      const [active, staged] = await t.encryption.indexOf(u, 'email', 'during@x.io')
      // indexOf lists the active version (still v1) first, then the staged v2.
      expect(storedBytes(stored.email_bidx).equals(active as Buffer)).toBe(true)
      expect(staged?.equals(active as Buffer)).toBe(false)
    })

    it('after activating v2, new rows get v2 indexes and old and new rows are all found', async () => {
      await store.activate(u, 'index', 2)
      t.encryption.keyRing().refresh()
      const states = (await store.list(u, 'index')).map((k) => [k.version, k.state])
      expect(states).toEqual([
        [1, 'decrypt-only'],
        [2, 'active'],
      ])

      await t.db
        .insertInto(u)
        .values({ id: 4, name: 'new-4', email: 'new4@x.io', ssn: '123-00-0004' })
        .execute()
      const stored = await t.raw
        .selectFrom(u)
        .select(['email_bidx', 'ssn_bidx'])
        .where('id', '=', 4)
        .executeTakeFirstOrThrow()
      await expectIndexOf(t, u, 'email', stored.email_bidx, 'new4@x.io')
      await expectIndexOf(t, u, 'ssn', stored.ssn_bidx, '123000004')
      const [active, previous] = await t.encryption.indexOf(u, 'email', 'old1@x.io')
      expect(previous?.equals(v1Email)).toBe(true)
      expect(active?.equals(v1Email)).toBe(false)

      sent.length = 0
      for (const [id, email] of [
        [1, 'old1@x.io'],
        [3, 'during@x.io'],
        [4, 'new4@x.io'],
      ] as const) {
        expect(await t.db.selectFrom(u).select(['id', 'email']).where('email', '=', email).execute()).toEqual(
          [{ id, email }],
        )
        expect(lastSearch('email_bidx')?.parameters).toHaveLength(2)
      }
      expect(
        ids(
          await t.db.selectFrom(u).select('id').where('ssn', 'in', ['123-00-0001', '123-00-0004']).execute(),
        ),
      ).toEqual([1, 4])
      expect(
        ids(
          await t.db
            .selectFrom(u)
            .select('id')
            .where('email', 'not in', ['old1@x.io', 'new4@x.io'])
            .execute(),
        ),
      ).toEqual([2, 3])
    })

    it('once v1 is retired, only v2 is searched', async () => {
      await store.setState(u, 'index', 1, 'retired')
      t.encryption.keyRing().refresh()
      sent.length = 0
      expect(await t.db.selectFrom(u).select('id').where('email', '=', 'new4@x.io').execute()).toEqual([
        { id: 4 },
      ])
      expect(lastSearch('email_bidx')?.parameters).toHaveLength(1)
      // Rows still indexed under v1 are no longer found: the operator must re-index before retiring.
      expect(await t.db.selectFrom(u).select('id').where('email', '=', 'old1@x.io').execute()).toEqual([])
    })
  })
})
