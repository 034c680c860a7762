import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * A stream longer than the key cache TTL (and the metadata TTL): its key is unwrapped again from
 * the versions read before the cursor opened, with no key-store read behind the cursor (which
 * waited for ever on PostgreSQL), and every row is read.
 */
describe.each(backends())('a stream that outlives the key cache TTL [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const [rawDialect, appDialect] = backend.createDialectPair()
    // biome-ignore lint/suspicious/noExplicitAny: generated table names
    const raw = new Kysely<any>({ dialect: rawDialect })
    const table = uniqueName('stream_ttl')
    const keyTable = uniqueName('stream_ttl_keys')
    const schema = encryptedSchema({ [table]: { email: encrypted.text() } })
    const encryption = fieldEncryption({
      schema,
      keyProvider: localKeyProvider({ id: 'local:stream-ttl', key: randomBytes(32) }),
      keyTable,
      verifySchema: false,
      metadataTtlMs: 300,
      cache: { ttlMs: 1000, graceMs: 0 },
    })
    // biome-ignore lint/suspicious/noExplicitAny: generated table names
    const db = new Kysely<any>({ dialect: encryption.wrap(appDialect), plugins: [encryption.plugin] })
    afterAll(async () => {
      for (const t of [table, keyTable]) await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      await encryption.close()
      // One PGlite under both: destroying one Kysely closes it.
      await db.destroy()
      if (backend.name !== 'pglite') await raw.destroy()
    })

    it('reads every row, 400 ms apart with a 1 s key TTL and a 300 ms metadata TTL', async () => {
      await raw.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .$call(addEncryptedColumns(schema, table, backend.family))
        .execute()
      await encryption.init(db)
      for (let i = 1; i <= 6; i++)
        await db
          .insertInto(table)
          .values({ id: i, email: `u${i}@x.io` })
          .execute()
      const seen: unknown[] = []
      for await (const row of db.selectFrom(table).select(['id', 'email']).orderBy('id').stream(1)) {
        seen.push(row)
        await pause(400)
      }
      expect(seen).toEqual([1, 2, 3, 4, 5, 6].map((id) => ({ id, email: `u${id}@x.io` })))
    }, 30_000)
  })
})
