import { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type EmailMigrationTable, emailMigrationTable } from '../support/email-migration-table.js'
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
      let t: EmailMigrationTable
      beforeAll(async () => {
        t = await emailMigrationTable(backend, 'cascoll', { context: true })
      })
      afterAll(async () => {
        await t?.destroy()
      })

      for (const [what, change] of [
        ['moved to ORG0', { org_id: 'ORG0' }],
        ["moved to 'org0 '", { org_id: 'org0 ' }],
        ['its plaintext rewritten in capitals', { email: 'USER3@X.IO' }],
      ] as const) {
        it(`a row ${what} between the backfill's read and its write is read again, and decrypts`, async () => {
          await t.raw.deleteFrom(t.table).execute()
          await t.raw
            .insertInto(t.table)
            .values(
              Array.from({ length: 6 }, (_, i) => ({ id: i + 1, org_id: 'org0', email: `user${i}@x.io` })),
            )
            .execute()
          let fired = false
          // biome-ignore lint/suspicious/noExplicitAny: the table is named at run time.
          const db = new Kysely<any>({
            dialect: hooked(backend.createDialect(), async (query) => {
              if (!fired && /^update/i.test(query.sql) && query.sql.includes(t.table)) {
                fired = true
                await t.raw.updateTable(t.table).set(change).where('id', '=', 4).execute()
              }
            }),
          })
          const job = t.opsOn(db)
          try {
            const result = await job.encryptColumn(t.table, 'email')
            expect(fired).toBe(true)
            expect(result).toMatchObject({ rows: 6, conflicts: 1, failed: 0, remainingBatches: 0 })
            expect(await t.ops.verifyColumn(t.table, 'email')).toMatchObject({ ok: true, failed: 0 })
          } finally {
            await db.destroy()
          }
        })
      }
    })
  },
)
