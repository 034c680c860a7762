import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { activateDataKey, checkEveryKekUnwraps, stageDataKey } from '../../examples/keys.js'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  KeyStore,
  localKeyProvider,
  readHeader,
} from '../../src/index.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'

// biome-ignore lint/suspicious/noExplicitAny: table names are generated per test file.
type AnyDB = Record<string, any>

// docs/keys.md's worked example (examples/keys.ts), run as written against every backend.
describe.each(backends())('keys worked example (examples/keys.ts) [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('accounts')
    const keyTable = uniqueName('kfe_keys')
    const schema = encryptedSchema({ [table]: { iban: encrypted.text({ index: { name: 'iban_bidx' } }) } })
    const kek = localKeyProvider({ id: 'local:main', key: randomBytes(32) })
    const dr = localKeyProvider({ id: 'local:dr', key: randomBytes(32) })
    let encryption: FieldEncryption
    let db: Kysely<AnyDB>
    let raw: Kysely<AnyDB>
    let store: KeyStore

    beforeAll(async () => {
      encryption = fieldEncryption({ schema, keyProvider: kek, keyTable, verifySchema: onlyTables() })
      const [app, plain] = backend.createDialectPair()
      db = new Kysely<AnyDB>({ dialect: encryption.wrap(app), plugins: [encryption.plugin] })
      raw = new Kysely<AnyDB>({ dialect: plain })
      store = new KeyStore(raw, { tableName: keyTable })
      await db.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .$call(addEncryptedColumns(schema, table, backend.family))
        .execute()
      await createBlindIndexes(db, schema, table)
      await encryption.init(db)
      await db.insertInto(table).values({ id: 1, iban: 'DE89 3704 0044 0532 0130 00' }).execute() // v1 keys
    })
    afterAll(async () => {
      if (db !== undefined) {
        for (const t of [table, keyTable]) await sql`drop table if exists ${sql.table(t)}`.execute(raw)
        await encryption.close()
        await dr.close?.()
        await db.destroy()
        if (backend.name !== 'pglite') await raw.destroy()
      }
    })

    it('stages version 2 wrapped under both KEKs, each of which unwraps it alone', async () => {
      const staged = await stageDataKey(store, [kek, dr], table)
      expect(staged).toMatchObject({ logicalTable: table, purpose: 'data', version: 2, state: 'staged' })
      expect(staged.wrappings.map((w) => w.kekId)).toEqual(['local:main', 'local:dr'])
      await checkEveryKekUnwraps([kek, dr], staged)
      // Staged: rows are still written with version 1.
      encryption.keyRing().refresh()
      await db.insertInto(table).values({ id: 2, iban: 'GB82 WEST 1234 5698 7654 32' }).execute()
      const row = await raw.selectFrom(table).select('iban').where('id', '=', 2).executeTakeFirstOrThrow()
      expect(readHeader(row.iban).keyVersion).toBe(1)
    })

    it('once activated, new rows use version 2 and every row still decrypts and is found', async () => {
      await activateDataKey(store, table, 2)
      encryption.keyRing().refresh()
      await db.insertInto(table).values({ id: 3, iban: 'FR14 2004 1010 0505 0001 3M02 606' }).execute()
      const row = await raw.selectFrom(table).select('iban').where('id', '=', 3).executeTakeFirstOrThrow()
      expect(readHeader(row.iban).keyVersion).toBe(2)
      expect((await store.list(table, 'data')).map((k) => [k.version, k.state])).toEqual([
        [1, 'decrypt-only'],
        [2, 'active'],
      ])
      expect(await db.selectFrom(table).select(['id', 'iban']).orderBy('id').execute()).toEqual([
        { id: 1, iban: 'DE89 3704 0044 0532 0130 00' },
        { id: 2, iban: 'GB82 WEST 1234 5698 7654 32' },
        { id: 3, iban: 'FR14 2004 1010 0505 0001 3M02 606' },
      ])
      // A data-key rotation leaves the blind index alone: the old row is found by equality.
      expect(
        await db.selectFrom(table).select('id').where('iban', '=', 'DE89 3704 0044 0532 0130 00').execute(),
      ).toEqual([{ id: 1 }])
    })

    it('two rotations racing: one stages version 3, the other is refused with KEY_VERSION_MISMATCH and stores nothing', async () => {
      // Both read the versions (2 is the last) before either stages.
      let listed = 0
      let bothListed: () => void = () => undefined
      const barrier = new Promise<void>((resolve) => {
        bothListed = resolve
      })
      const racing = Object.create(store, {
        list: {
          value: async (...args: Parameters<KeyStore['list']>) => {
            const versions = await store.list(...args)
            if (++listed === 2) bothListed()
            await barrier
            return versions
          },
        },
        stage: { value: store.stage.bind(store) },
        setState: { value: store.setState.bind(store) },
      }) as KeyStore
      const results = await Promise.allSettled([
        stageDataKey(racing, [kek, dr], table),
        stageDataKey(racing, [kek, dr], table),
      ])
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
      const refused = results.filter((r) => r.status === 'rejected')
      expect(refused).toHaveLength(1)
      expect((refused[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'KEY_VERSION_MISMATCH' })
      const versions = await store.list(table, 'data')
      expect(versions.map((k) => [k.version, k.state])).toEqual([
        [1, 'decrypt-only'],
        [2, 'active'],
        [3, 'staged'],
      ])
      await checkEveryKekUnwraps([kek, dr], versions[2]!)
    })

    it('refuses to stage for a table with no key yet', async () => {
      await expect(stageDataKey(store, [kek], uniqueName('none'))).rejects.toThrow(/no data key yet/)
    })
  })
})
