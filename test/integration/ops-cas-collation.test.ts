import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  localKeyProvider,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import { hooked } from '../support/hooked-dialect.js'

/**
 * MariaDB's default collations take 'org0', 'ORG0' and 'org0 ' for one value. A backfill's
 * compare-and-set matches the row context (and the plaintext) it read: a row a writer outside the
 * plugin moved to 'ORG0' (or 'org0 ') between the job's read and its write must not be written with
 * a ciphertext bound to 'org0', which the row would never decrypt.
 */
describe.each(backends().filter((b) => b.family === 'mysql'))(
  'compare-and-set under a case- and space-insensitive collation [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const table = uniqueName('cascoll')
      const keyTable = uniqueName('kfe_keys')
      const jobsTable = uniqueName('kfe_jobs')
      const schema = encryptedSchema(
        {
          [table]: {
            email: encrypted.text({
              index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
              storedAs: 'email_encrypted',
              migration: 'dual-writing',
              maxBytes: 200,
            }),
          },
        },
        { tables: { [table]: { context: ['org_id', 'id'] } } },
      )
      const kek = randomBytes(32)
      // One per ops: closing an ops closes its provider.
      const keyProvider = () => localKeyProvider({ id: 'local:cascoll', key: kek })
      // biome-ignore lint/suspicious/noExplicitAny: the table is named at run time.
      let raw: Kysely<any>
      let ops: FieldEncryptionOps
      beforeAll(async () => {
        raw = new Kysely({ dialect: backend.createDialect() })
        await raw.schema
          .createTable(table)
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .addColumn('org_id', 'varchar(20)', (c) => c.notNull())
          .addColumn('email', 'varchar(200)')
          .$call(addEncryptedColumns(schema, table, backend.family))
          .execute()
        await createBlindIndexes(raw, schema, table)
        ops = fieldEncryptionOps({
          db: raw,
          schema,
          keyProvider: keyProvider(),
          keyTable,
          jobsTable,
          metadataTtlMs: 50,
        })
        await ops.init()
      })
      afterAll(async () => {
        await ops?.close()
        if (raw !== undefined) await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
        await raw?.destroy()
      })

      for (const [what, change] of [
        ['moved to ORG0', { org_id: 'ORG0' }],
        ["moved to 'org0 '", { org_id: 'org0 ' }],
        ['its plaintext rewritten in capitals', { email: 'USER3@X.IO' }],
      ] as const) {
        it(`a row ${what} between the backfill's read and its write is read again, and decrypts`, async () => {
          await raw.deleteFrom(table).execute()
          await raw
            .insertInto(table)
            .values(
              Array.from({ length: 6 }, (_, i) => ({ id: i + 1, org_id: 'org0', email: `user${i}@x.io` })),
            )
            .execute()
          let fired = false
          // biome-ignore lint/suspicious/noExplicitAny: the table is named at run time.
          const db = new Kysely<any>({
            dialect: hooked(backend.createDialect(), async (query) => {
              if (!fired && /^update/i.test(query.sql) && query.sql.includes(table)) {
                fired = true
                await raw.updateTable(table).set(change).where('id', '=', 4).execute()
              }
            }),
          })
          const job = fieldEncryptionOps({
            db,
            schema,
            keyProvider: keyProvider(),
            keyTable,
            jobsTable,
            metadataTtlMs: 50,
          })
          try {
            const result = await job.encryptColumn(table, 'email')
            expect(fired).toBe(true)
            expect(result).toMatchObject({ rows: 6, conflicts: 1, failed: 0, remainingBatches: 0 })
            expect(await ops.verifyColumn(table, 'email')).toMatchObject({ ok: true, failed: 0 })
          } finally {
            await job.close()
            await db.destroy()
          }
        })
      }
    })
  },
)
