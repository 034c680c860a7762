import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, encrypted, encryptedSchema, localKeyProvider } from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'

/**
 * `storedAs` naming the column under migration itself (`email` stored as `email`): the schema was
 * accepted and `kfe encrypt-column` wrote each row's ciphertext over its plaintext. The schema is
 * refused (CONFIG_INVALID); the backfill and the row-by-row check refuse such a column too, before
 * reading a row, when handed a schema built without `encryptedSchema`.
 */
describe.each(backends())(
  'a column under migration stored as its own plaintext column [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const table = uniqueName('ops_same')
      const keyTable = `${table}_keys`
      const jobsTable = `${table}_jobs`
      const annotation = (storedAs: string) =>
        encrypted.text({ storedAs, migration: 'dual-writing', index: { name: 'email_bidx' } })
      let raw: Kysely<TestDB>
      let ops: FieldEncryptionOps
      beforeAll(async () => {
        raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
        const bin = backend.family === 'mysql' ? sql`varbinary(300)` : sql`bytea`
        await sql`create table ${sql.table(table)} (id integer primary key, email varchar(100),
        email_encrypted ${bin}, email_bidx ${bin})`.execute(raw)
        await sql`insert into ${sql.table(table)} (id, email) values (1, 'a@x.io')`.execute(raw)
        // The schema as it was accepted: the real one, its column's stored name replaced.
        const real = encryptedSchema({ [table]: { email: annotation('email_encrypted') } })
        const info = real.table(table)!
        const column = info.column('email')!
        const forged = {
          ...real,
          tableNamed: (name: string) =>
            name === table
              ? { ...info, column: () => ({ ...column, stored: 'email' }) }
              : real.tableNamed(name),
        } as unknown as typeof real
        ops = fieldEncryptionOps({
          db: raw,
          schema: forged,
          keyProvider: localKeyProvider({ id: 'local:same', key: randomBytes(32) }),
          keyTable,
          jobsTable,
        })
        await ops.init()
      }, 120_000)
      afterAll(async () => {
        await ops?.close()
        if (raw !== undefined) await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
        await raw?.destroy()
      })

      it('encryptedSchema refuses it with CONFIG_INVALID', () => {
        expect(() => encryptedSchema({ [table]: { email: annotation('email') } })).toThrow(ConfigError)
        expect(() => encryptedSchema({ [table]: { email: annotation('email') } })).toThrow(
          /is stored as email, which names its own plaintext column/,
        )
      })

      it('encryptColumn (dry run too) and verifyColumn refuse it, and the plaintext is left as it is', async () => {
        for (const run of [
          () => ops.encryptColumn(table, 'email'),
          () => ops.encryptColumn(table, 'email', { dryRun: true }),
          () => ops.verifyColumn(table, 'email'),
        ]) {
          const error = await run().then(
            () => undefined,
            (e: unknown) => e,
          )
          expect(error).toBeInstanceOf(ConfigError)
          expect(error).toMatchObject({ code: 'CONFIG_INVALID', table, column: 'email' })
        }
        expect(await raw.selectFrom(table).select(['id', 'email', 'email_encrypted']).execute()).toEqual([
          { id: 1, email: 'a@x.io', email_encrypted: null },
        ])
      })
    })
  },
)
