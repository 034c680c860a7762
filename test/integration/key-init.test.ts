/**
 * Keys are created only on purpose (issue 13): `encryption.init(db)` is the explicit step; a
 * table without keys fails with KEY_NOT_FOUND; a table whose keys were lost while it holds
 * ciphertext never gets fresh ones (KEYS_MISSING), in development mode (autoCreateKeys) too.
 * Also issue 12 items 4 and 9: one instance over two dialects, and never two queries at once on
 * one connection.
 */
import { randomBytes } from 'node:crypto'
import { type DatabaseConnection, type Dialect, Kysely, sql } from 'kysely'
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
import { fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'

/** Wraps a dialect: records, per connection, the most queries it ever ran at once. */
function concurrencyProbe(dialect: Dialect): { dialect: Dialect; maxInFlight: () => number } {
  let max = 0
  const inFlight = new WeakMap<DatabaseConnection, number>()
  const patched = new WeakSet<DatabaseConnection>()
  return {
    maxInFlight: () => max,
    dialect: {
      createAdapter: () => dialect.createAdapter(),
      createQueryCompiler: () => dialect.createQueryCompiler(),
      createIntrospector: (db) => dialect.createIntrospector(db),
      createDriver: () => {
        const driver = dialect.createDriver()
        const acquire = driver.acquireConnection.bind(driver)
        driver.acquireConnection = async () => {
          const c = await acquire()
          if (patched.has(c)) return c
          patched.add(c)
          const execute = c.executeQuery.bind(c)
          c.executeQuery = async (query) => {
            const n = (inFlight.get(c) ?? 0) + 1
            inFlight.set(c, n)
            max = Math.max(max, n)
            try {
              return await execute(query)
            } finally {
              inFlight.set(c, (inFlight.get(c) ?? 1) - 1)
            }
          }
          return c
        }
        return driver
      },
    },
  }
}

describe.each(backends())('explicit key creation on $name', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const users = uniqueName('iusers')
    const notes = uniqueName('inotes')
    const keyTable = uniqueName('ikeys')
    const schema = encryptedSchema({
      [users]: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
      [notes]: { body: encrypted.text() },
    })
    const kek = randomBytes(32)
    const [appDialect, rawDialect] = backend.createDialectPair()
    // biome-ignore lint/suspicious/noExplicitAny: generated table names
    let raw: Kysely<any>
    const opened: Array<{ close(): Promise<void> }> = []
    /** A new "process": its own instance, on a connection-concurrency probe. */
    const open = (options: { autoCreateKeys?: boolean } = {}) => {
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ key: kek }),
        keyTable,
        ...options,
        verifySchema: onlyTables(),
      })
      const probe = concurrencyProbe(appDialect)
      // biome-ignore lint/suspicious/noExplicitAny: generated table names
      const db = new Kysely<any>({ dialect: encryption.wrap(probe.dialect), plugins: [encryption.plugin] })
      opened.push(encryption)
      return { encryption, db, maxInFlight: probe.maxInFlight }
    }
    const store = () => new KeyStore(raw, { tableName: keyTable })
    const dropKeyTable = () => sql`drop table if exists ${sql.table(keyTable)}`.execute(raw)
    /**
     * kfe over keys that are gone while the rows hold ciphertext: `init --dry-run` refuses
     * (KEYS_MISSING) as `init` does; returns the verdict `status` gives the table.
     */
    const opsVerdictOverLostKeys = async (): Promise<string | undefined> => {
      const ops = fieldEncryptionOps({
        db: raw,
        schema,
        keyProvider: localKeyProvider({ key: kek }),
        keyTable,
        jobsTable: `${keyTable}_jobs`,
      })
      try {
        await expect(ops.init({ tables: [users], dryRun: true })).rejects.toMatchObject({
          code: 'KEYS_MISSING',
        })
        return (await ops.status({ table: users })).tables[0]?.verdict
      } finally {
        await ops.close()
      }
    }

    beforeAll(async () => {
      raw = new Kysely({ dialect: rawDialect })
      const idType = backend.family === 'postgres' ? 'serial' : 'integer'
      for (const t of [users, notes]) {
        await raw.schema
          .createTable(t)
          .addColumn('id', idType, (c) =>
            backend.family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
          )
          .$call(addEncryptedColumns(schema, t, backend.family))
          .execute()
      }
      await createBlindIndexes(raw, schema, users)
    })
    afterAll(async () => {
      for (const e of opened) await e.close()
      for (const t of [users, notes, keyTable]) await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      await raw.destroy()
    })

    it('before init: a write fails with KEY_NOT_FOUND naming the init step, writes nothing, creates no key', async () => {
      const { db } = open()
      const error = await db
        .insertInto(users)
        .values({ email: 'a@x.io' })
        .execute()
        .catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'KEY_NOT_FOUND', table: users })
      expect((error as Error).message).toContain('init')
      expect((await raw.selectFrom(users).selectAll().execute()).length).toBe(0)
      expect(await store().listAll()).toEqual([])
    })

    it('before init: a transaction over plain work still runs (no annotated table touched)', async () => {
      const { db } = open()
      const n = await db.transaction().execute(async (trx) => {
        const r = await sql<{ n: number }>`select 1 as n`.execute(trx)
        return Number(r.rows[0]?.n)
      })
      expect(n).toBe(1)
    })

    it('init creates the key table and version 1 of both purposes of every table; a second init creates nothing', async () => {
      const { encryption, db } = open()
      const first = await encryption.init(db)
      const refs = (list: readonly { logicalTable: string; purpose: string; version: number }[]) =>
        list.map((r) => `${r.logicalTable}/${r.purpose}/v${r.version}`).sort()
      const all = [`${notes}/data/v1`, `${notes}/index/v1`, `${users}/data/v1`, `${users}/index/v1`].sort()
      expect(refs(first.created)).toEqual(all)
      expect(first.existing).toEqual([])
      const second = await encryption.init(db)
      expect(second.created).toEqual([])
      expect(refs(second.existing)).toEqual(all)
      // The instance that ran init writes and reads at once (its cached "no keys" was dropped).
      await db.insertInto(users).values({ email: 'a@x.io' }).execute()
      expect(await db.selectFrom(users).select('email').where('email', '=', 'a@x.io').execute()).toEqual([
        { email: 'a@x.io' },
      ])
    })

    it('encryption.decrypt of null, a string or a number: NOT_CIPHERTEXT naming table and column, never the value', async () => {
      const { encryption, db } = open()
      await db.selectFrom(users).select('id').execute()
      for (const value of [null, 'secret-plaintext@x.io', 42, undefined]) {
        const error = await encryption.decrypt(users, 'email', value as never).catch((e: unknown) => e)
        expect(error).toMatchObject({ code: 'NOT_CIPHERTEXT', table: users, column: 'email' })
        expect((error as Error).message).not.toContain('secret-plaintext')
      }
    })

    it('another process sees keys created elsewhere without waiting for the metadata TTL', async () => {
      // The first test's process looked while there were no keys; that is not cached.
      const { db } = open()
      await db.insertInto(notes).values({ body: 'hello' }).execute()
      expect(await db.selectFrom(notes).select('body').execute()).toEqual([{ body: 'hello' }])
    })

    it('a fresh process runs a transaction with one query at a time on its connection (pg: no DeprecationWarning)', async () => {
      const warnings: string[] = []
      const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`)
      process.on('warning', onWarning)
      try {
        const { db, maxInFlight } = open()
        await db.transaction().execute(async (trx) => {
          await trx.insertInto(notes).values({ body: 'in a transaction' }).execute()
          await trx.selectFrom(users).select('email').execute()
        })
        // The key loads of both tables ran on the transaction's connection before BEGIN.
        expect(maxInFlight()).toBe(1)
      } finally {
        process.off('warning', onWarning)
      }
      expect(warnings.filter((w) => w.includes('already executing a query'))).toEqual([])
    })

    it('development mode: keys created on first use, one query at a time, inside a first transaction too', async () => {
      const fresh = uniqueName('ifresh')
      const freshKeys = uniqueName('ifreshkeys')
      const devSchema = encryptedSchema({
        [fresh]: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
        [`${fresh}_b`]: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
      })
      for (const t of [fresh, `${fresh}_b`]) {
        await raw.schema
          .createTable(t)
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .$call(addEncryptedColumns(devSchema, t, backend.family))
          .execute()
        await createBlindIndexes(raw, devSchema, t)
      }
      const encryption = fieldEncryption({
        schema: devSchema,
        keyProvider: localKeyProvider({ key: kek }),
        keyTable: freshKeys,
        autoCreateKeys: true,
        verifySchema: onlyTables(),
      })
      opened.push(encryption)
      const probe = concurrencyProbe(appDialect)
      // biome-ignore lint/suspicious/noExplicitAny: generated table names
      const db = new Kysely<any>({ dialect: encryption.wrap(probe.dialect), plugins: [encryption.plugin] })
      try {
        await db.transaction().execute(async (trx) => {
          await trx.insertInto(fresh).values({ id: 1, email: 'dev@x.io' }).execute()
        })
        expect(probe.maxInFlight()).toBe(1)
        expect((await new KeyStore(raw, { tableName: freshKeys }).listAll()).length).toBe(4)
        expect(await db.selectFrom(fresh).select('email').execute()).toEqual([{ email: 'dev@x.io' }])

        // The key table is dropped: development mode must not create keys over the ciphertext.
        await sql`drop table ${sql.table(freshKeys)}`.execute(raw)
        encryption.keyRing().refresh() // this process's metadata TTL has passed
        await expect(
          db.insertInto(fresh).values({ id: 2, email: 'new@x.io' }).execute(),
        ).rejects.toMatchObject({
          code: 'KEYS_MISSING',
          table: fresh,
          message: expect.stringMatching(/dropped.*restored from another environment/),
        })
        // A process started after the drop, in development mode too.
        const later = fieldEncryption({
          schema: devSchema,
          keyProvider: localKeyProvider({ key: kek }),
          keyTable: freshKeys,
          autoCreateKeys: true,
          verifySchema: onlyTables(),
        })
        opened.push(later)
        // biome-ignore lint/suspicious/noExplicitAny: generated table names
        const laterDb = new Kysely<any>({ dialect: later.wrap(appDialect), plugins: [later.plugin] })
        await expect(laterDb.selectFrom(fresh).select('email').execute()).rejects.toMatchObject({
          code: 'KEYS_MISSING',
          table: fresh,
        })
        expect(await new KeyStore(raw, { tableName: freshKeys }).list(fresh)).toEqual([])
      } finally {
        for (const t of [fresh, `${fresh}_b`, freshKeys]) {
          await sql`drop table if exists ${sql.table(t)}`.execute(raw)
        }
      }
    })

    it('a database writer deletes the index keys: searches are refused with KEYS_MISSING, never fresh keys (dev mode too)', async () => {
      const dev = open({ autoCreateKeys: true })
      await dev.db.insertInto(users).values({ email: 'b@x.io' }).execute()
      const before = await store().list(users, 'index')
      await raw
        .deleteFrom(keyTable)
        .where('logical_table', '=', users)
        .where('purpose', '=', 'index')
        .execute()
      try {
        for (const proc of [open(), open({ autoCreateKeys: true })]) {
          await expect(
            proc.db.selectFrom(users).select('email').where('email', '=', 'b@x.io').execute(),
          ).rejects.toMatchObject({ code: 'KEYS_MISSING', table: users })
        }
        expect(await store().list(users, 'index')).toEqual([])
        // init refuses too: the table holds ciphertext.
        const { encryption, db } = open()
        await expect(encryption.init(db)).rejects.toMatchObject({ code: 'KEYS_MISSING', table: users })
        expect(await store().list(users, 'index')).toEqual([])
        // And kfe: init --dry-run refuses as init does; status says the keys are missing.
        expect(await opsVerdictOverLostKeys()).toMatch(/KEYS_MISSING/)
      } finally {
        // Put the deleted rows back (a restore), so the next test starts from a sound key table.
        for (const k of before) {
          await raw
            .insertInto(keyTable)
            .values({
              logical_table: k.logicalTable,
              purpose: k.purpose,
              version: k.version,
              state: k.state,
              wrappings: JSON.stringify(
                k.wrappings.map((w) => ({
                  kekId: w.kekId,
                  wrapped: Buffer.from(w.wrapped).toString('base64'),
                })),
              ),
              created_at: k.createdAt,
            })
            .execute()
        }
      }
      const { db } = open()
      expect(await db.selectFrom(users).select('email').where('email', '=', 'b@x.io').execute()).toEqual([
        { email: 'b@x.io' },
      ])
    })

    it('the key table is dropped (or restored from another environment): KEYS_MISSING everywhere, init refuses, nothing created', async () => {
      await dropKeyTable()
      const { encryption, db } = open()
      await expect(db.selectFrom(users).select('email').execute()).rejects.toMatchObject({
        code: 'KEYS_MISSING',
        table: users,
      })
      await expect(db.insertInto(users).values({ email: 'c@x.io' }).execute()).rejects.toMatchObject({
        code: 'KEYS_MISSING',
      })
      const error = await encryption.init(db).catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'KEYS_MISSING' })
      expect((error as Error).message).toMatch(/restored from another environment/)
      expect(await store().listAll()).toEqual([])
      // kfe init --dry-run refuses as init does (it promised keys init would not make), and
      // kfe status says the keys are missing (it said "run kfe init").
      expect(await opsVerdictOverLostKeys()).toMatch(/KEYS_MISSING.*restore it from its backup/)
      expect(await store().listAll()).toEqual([])
    })
  })
})

describe('one instance, two wrapped dialects (PostgreSQL and MariaDB)', () => {
  const [pgBackend, , mysqlBackend] = backends()
  const both = pgBackend?.available === true && mysqlBackend?.available === true
  it.runIf(both)(
    'each dialect reaches its own key store with its own SQL, and reads back its own rows',
    async () => {
      const table = uniqueName('twodb')
      const keyTable = uniqueName('twodbkeys')
      const schema = encryptedSchema({
        [table]: { email: encrypted.text({ index: { name: 'email_bidx' } }) },
      })
      const encryption = fieldEncryption({
        schema,
        keyProvider: localKeyProvider({ key: randomBytes(32) }),
        keyTable,
        verifySchema: onlyTables(),
      })
      const dbs = [pgBackend, mysqlBackend].map((b) => {
        const dialect = (b as Backend).createDialect()
        return {
          family: (b as Backend).family,
          // biome-ignore lint/suspicious/noExplicitAny: generated table names
          db: new Kysely<any>({ dialect: encryption.wrap(dialect), plugins: [encryption.plugin] }),
        }
      })
      try {
        for (const { family, db } of dbs) {
          await db.schema
            .createTable(table)
            .addColumn('id', 'integer', (c) => c.primaryKey())
            .$call(addEncryptedColumns(schema, table, family))
            .execute()
          await createBlindIndexes(db, schema, table)
          const { created } = await encryption.init(db)
          expect(created.length).toBe(2)
          await db
            .insertInto(table)
            .values({ id: 1, email: `${family}@x.io` })
            .execute()
        }
        for (const { family, db } of dbs) {
          expect(
            await db.selectFrom(table).select('email').where('email', '=', `${family}@x.io`).execute(),
          ).toEqual([{ email: `${family}@x.io` }])
          // A transaction loads keys through the dialect's own key store (MariaDB got PostgreSQL DDL before).
          await db.transaction().execute(async (trx) => {
            await trx
              .insertInto(table)
              .values({ id: 2, email: `${family}-2@x.io` })
              .execute()
          })
          expect((await new KeyStore(db.withoutPlugins(), { tableName: keyTable }).listAll()).length).toBe(2)
        }
      } finally {
        for (const { db } of dbs) {
          await sql`drop table if exists ${sql.table(table)}`.execute(db)
          await sql`drop table if exists ${sql.table(keyTable)}`.execute(db)
          await db.destroy()
        }
        await encryption.close()
      }
    },
  )
})
