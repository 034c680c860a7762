import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  KeyStore,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, backends, dropTables, onlyTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'

const TTL = 200
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Key metadata read inside a transaction is that transaction's snapshot (REPEATABLE READ:
 * PostgreSQL's on request, MariaDB's by default), which may be older than the metadata TTL. It is
 * used for that query, never cached: an index version activated meanwhile is seen by the next
 * query outside the transaction, as the rotation protocol (wait a TTL, then activate) assumes.
 */
describe.each(backends())('key metadata read inside a transaction [$name]', (backend: Backend) => {
  // PGlite: one session, so no second process writes beside the open transaction.
  describe.runIf(backend.available && backend.name !== 'pglite')('', () => {
    const table = uniqueName('kmt_users')
    const keyTable = uniqueName('kmt_keys')
    const schema = encryptedSchema({ [table]: { email: encrypted.text({ index: { name: 'email_bidx' } }) } })
    const kek = randomBytes(32)
    const instance = (): { encryption: FieldEncryption; db: Kysely<TestDB> } => {
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ id: 'local:kmt', key: Buffer.from(kek) }),
        keyTable,
        metadataTtlMs: TTL,
        verifySchema: onlyTables(table),
      })
      return {
        encryption,
        db: new Kysely<TestDB>({
          dialect: encryption.wrap(backend.createDialect()),
          plugins: [encryption.plugin],
        }),
      }
    }
    let raw: Kysely<TestDB>
    let p: ReturnType<typeof instance>
    let q: ReturnType<typeof instance>
    beforeAll(async () => {
      raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
      await raw.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('name', 'varchar(20)')
        .$call(addEncryptedColumns(schema, table, backend.family))
        .execute()
      await createBlindIndexes(raw, schema, table)
      p = instance()
      q = instance()
      await p.encryption.init(p.db)
    }, 120_000)
    afterAll(async () => {
      for (const x of [p, q]) {
        await x?.encryption.close()
        await x?.db.destroy()
      }
      if (raw !== undefined) await dropTables(raw, [table, keyTable])
      await raw?.destroy()
    })

    it('a search inside a REPEATABLE READ transaction does not leave its snapshot of the key table cached', async () => {
      await p.db.insertInto(table).values({ id: 1, name: 'A', email: 'a@x.io' }).execute()
      const trx = await p.db.startTransaction().setIsolationLevel('repeatable read').execute()
      try {
        await trx.selectFrom(table).select('id').execute() // the snapshot is taken here
        // A rotation of the index key: staged, a TTL for every process to see it, then active.
        const store = new KeyStore(raw, { tableName: keyTable })
        const provider = localKeyProvider({ id: 'local:kmt', key: Buffer.from(kek) })
        const next = await provider.generateDataKey({ logicalTable: table, purpose: 'index', version: 2 })
        next.plaintext.fill(0)
        await store.stage(table, 'index', [next.wrapped])
        await sleep(TTL * 3)
        await store.activate(table, 'index', 2)
        await sleep(TTL * 2)
        // Another process writes with the new index version only.
        await q.db.insertInto(table).values({ id: 2, name: 'B', email: 'b@x.io' }).execute()
        // Inside the transaction the metadata is reloaded (past its TTL): the snapshot's view.
        expect(await trx.selectFrom(table).select('name').where('email', '=', 'a@x.io').execute()).toEqual([
          { name: 'A' },
        ])
        await trx.commit().execute()
      } finally {
        if (!trx.isCommitted) await trx.rollback().execute()
      }
      // Outside it, the row written with version 2 is found at once (it was not, for another TTL).
      expect(await p.db.selectFrom(table).select('name').where('email', '=', 'b@x.io').execute()).toEqual([
        { name: 'B' },
      ])
    })
  })
})
