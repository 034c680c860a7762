/**
 * Two processes start on an empty key table: B reads the key table (no keys), A creates the keys
 * and writes a row, then B samples the table for ciphertext before it would create keys. B must
 * not take A's row for the data of lost keys (KEYS_MISSING, "restore the key table from its
 * backup"): the keys are there now, and B uses them. Not on PGlite: one in-memory instance is one
 * process's database, and one session, which B's held sample would block.
 */
import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  KeyStore,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, backends, dropTables, onlyTables, uniqueName } from '../support/backends.js'
import { hooked } from '../support/hooked-dialect.js'

/** The ciphertext sample of `holdsCiphertext` (src/schema/sample-ciphertext.ts). */
const SAMPLE = /select \S+ as [`"]?v[`"]? from .* is not null limit \d+$/i

describe.each(backends())('key creation racing another process [$name]', (backend: Backend) => {
  describe.runIf(backend.available && backend.name !== 'pglite')('', () => {
    const users = uniqueName('rusers')
    const schema = encryptedSchema({ [users]: { email: encrypted.text({ index: { name: 'email_bidx' } }) } })
    const kek = randomBytes(32)
    const keyTables: string[] = []
    const opened: Array<{ close(): Promise<void> }> = []
    // biome-ignore lint/suspicious/noExplicitAny: generated table names
    const dbs: Kysely<any>[] = []
    // biome-ignore lint/suspicious/noExplicitAny: generated table names
    let raw: Kysely<any>

    /** A "process" on `keyTable`; its ciphertext sample first waits for `gate`, when given. */
    const open = (keyTable: string, autoCreateKeys: boolean, gate?: Promise<void>) => {
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ key: kek }),
        keyTable,
        autoCreateKeys,
        verifySchema: onlyTables(users),
      })
      const dialect =
        gate === undefined
          ? backend.createDialect()
          : hooked(backend.createDialect(), async (query) => {
              if (SAMPLE.test(query.sql)) await gate
            })
      // biome-ignore lint/suspicious/noExplicitAny: generated table names
      const db = new Kysely<any>({ dialect: encryption.wrap(dialect), plugins: [encryption.plugin] })
      opened.push(encryption)
      dbs.push(db)
      return { encryption, db }
    }

    beforeAll(async () => {
      raw = new Kysely({ dialect: backend.createDialect() })
      await raw.schema
        .createTable(users)
        .addColumn('id', backend.family === 'postgres' ? 'serial' : 'integer', (c) =>
          backend.family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
        )
        .$call(addEncryptedColumns(schema, users, backend.family))
        .execute()
      await createBlindIndexes(raw, schema, users)
    })
    afterAll(async () => {
      for (const db of dbs) await db.destroy()
      for (const e of opened) await e.close()
      await dropTables(raw, [users, ...keyTables])
      await raw.destroy()
    })

    for (const mode of ['autoCreateKeys', 'init'] as const) {
      it(`${mode}: B, which read no keys before A created them and wrote a row, uses A's keys (no KEYS_MISSING)`, async () => {
        await sql`delete from ${sql.table(users)}`.execute(raw)
        const keyTable = uniqueName('rkeys')
        keyTables.push(keyTable)
        let aWrote!: () => void
        const gate = new Promise<void>((resolve) => {
          aWrote = resolve
        })
        const a = open(keyTable, mode === 'autoCreateKeys')
        const b = open(keyTable, mode === 'autoCreateKeys', gate)
        const bRun = (async () => {
          if (mode === 'init') await b.encryption.init(b.db)
          await b.db.insertInto(users).values({ email: 'b@x.io' }).execute()
        })()
        // B has read the empty key table and waits in its sample until A has written.
        await new Promise((resolve) => setTimeout(resolve, 200))
        if (mode === 'init') await a.encryption.init(a.db)
        await a.db.insertInto(users).values({ email: 'a@x.io' }).execute()
        aWrote()
        await bRun
        // One key of each purpose (A's), both processes' rows readable under it.
        const keys = await new KeyStore(raw, { tableName: keyTable }).listAll()
        expect(keys.map((k) => [k.purpose, k.version])).toEqual([
          ['data', 1],
          ['index', 1],
        ])
        const rows = await a.db.selectFrom(users).select('email').orderBy('id').execute()
        expect(rows.map((r) => r.email).sort()).toEqual(['a@x.io', 'b@x.io'])
      })
    }
  })
})
