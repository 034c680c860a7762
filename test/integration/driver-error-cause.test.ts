import { inspect } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type EmailMigrationTable, emailMigrationTable } from '../support/email-migration-table.js'

/**
 * A backfill of a column under migration whose unique blind index refuses a row (two plaintexts
 * equal once normalized): the typed error's `cause` is the driver's error, whose statement held
 * the plaintexts (matched by the compare-and-set), the ciphertexts and the blind indexes.
 */
describe.each(backends())('a job error wrapping a driver error [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let t: EmailMigrationTable
    beforeAll(async () => {
      t = await emailMigrationTable(backend, 'dupcause')
      await t.raw
        .insertInto(t.table)
        .values([
          { id: 1, email: 'alice.secret@example.com' },
          { id: 2, email: 'ALICE.SECRET@example.com' },
          { id: 3, email: 'bob.private@example.com' },
        ])
        .execute()
    })
    afterAll(async () => {
      await t?.destroy()
    })

    it('MIGRATION_REFUSED, and neither it nor its cause holds a plaintext, a ciphertext or a blind index', async () => {
      const error = await t.ops.encryptColumn(t.table, 'email').catch((e: unknown) => e)
      expect(error).toMatchObject({ code: 'MIGRATION_REFUSED' })
      const cause = (error as Error).cause as Record<string, unknown>
      expect(cause).toBeDefined()
      const shown = [
        inspect(error, { depth: 8, showHidden: true }),
        ...['message', 'sql', 'detail', 'sqlMessage', 'stack'].map((k) => String(cause[k] ?? '')),
      ].join('\n')
      expect(shown).not.toMatch(/alice\.secret|bob\.private/i)
      expect(shown).not.toMatch(/\\x[0-9a-f]{8}/i)
      expect(shown).not.toMatch(/X'[0-9a-f]{8}/i)
      // What names the failure stays.
      expect(shown).toContain('email_bidx')
    })
  })
})
