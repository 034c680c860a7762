import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KeyStore } from '../../src/index.js'
import { type Backend, backends } from '../support/backends.js'
import { type EmailMigrationTable, emailMigrationTable } from '../support/email-migration-table.js'
import { useOpsTestDb } from '../support/ops-db.js'

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

/**
 * A key-store write the database refuses (here a CHECK constraint on the key table; in production a
 * lock wait timeout, a full disk): the operations reach the key table through a plain Kysely, not
 * the wrapped dialect, so the typed error's `cause` is the driver's error as it was thrown, whose
 * statement (mysql2's `sql`, PGlite's `params`) or failing row (PostgreSQL's `detail`) held the
 * wrapped keys and check values.
 */
describe.each(backends())('a key-store error wrapping a driver error [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const t = useOpsTestDb(backend)
    const wrapped = (w: Uint8Array) => Buffer.from(w).toString('base64')
    const shown = (error: unknown) => {
      const cause = (error as Error).cause as Record<string, unknown>
      expect(cause).toBeDefined()
      return [
        inspect(error, { depth: 8, showHidden: true }),
        ...['message', 'sql', 'detail', 'sqlMessage', 'stack', 'params'].map((k) => String(cause[k] ?? '')),
      ].join('\n')
    }

    it('KEY_STORE_ERROR from rotate (stage) and from setWrappings: neither it nor its cause holds a wrapped key or check value', async () => {
      const store = new KeyStore(t.raw, { tableName: t.keyTable })
      const [v1] = await store.list(t.table, 'data')
      const refused = randomBytes(61)
      await sql`alter table ${sql.table(t.keyTable)} add constraint ${sql.id(`${t.keyTable}_x`)} check (version = 1 and wrappings not like '%kek-refused%')`.execute(
        t.raw,
      )
      // The fixture drops the key table, and the constraint with it.
      const staged = await t.ops
        .rotate(t.table, { purpose: 'data', reencrypt: false })
        .catch((e: unknown) => e)
      expect(staged).toMatchObject({ code: 'KEY_STORE_ERROR' })
      const stageText = shown(staged)
      // The new version's wrappings (JSON: kekId, wrapped) and check value (64 hex digits) are not
      // known here, having never been stored: look for their shape.
      expect(stageText).not.toMatch(/kekId|"wrapped/)
      expect(stageText).not.toMatch(/[0-9a-f]{32}/i)
      expect(stageText).toContain(`${t.keyTable}_x`)

      const ref = { logicalTable: t.table, purpose: 'data' as const, version: 1 }
      const next = [...v1!.wrappings, { kekId: 'kek-refused', wrapped: refused }]
      const rewrapped = await store.setWrappings(ref, next, v1!.wrappings).catch((e: unknown) => e)
      expect(rewrapped).toMatchObject({ code: 'KEY_STORE_ERROR' })
      const rewrapText = shown(rewrapped)
      expect(rewrapText).not.toContain(wrapped(v1!.wrappings[0]!.wrapped))
      expect(rewrapText).not.toContain(wrapped(refused))
      expect(rewrapText).toContain(`${t.keyTable}_x`)
    })
  })
})
