import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
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

/**
 * A backfill of a column under migration whose unique blind index refuses a row (two plaintexts
 * equal once normalized): the typed error's `cause` is the driver's error, whose statement held
 * the plaintexts (matched by the compare-and-set), the ciphertexts and the blind indexes.
 */
describe.each(backends())('a job error wrapping a driver error [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('dupcause')
    const keyTable = uniqueName('kfe_keys')
    const jobsTable = uniqueName('kfe_jobs')
    const schema = encryptedSchema({
      [table]: {
        email: encrypted.text({
          index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] },
          storedAs: 'email_encrypted',
          migration: 'dual-writing',
          maxBytes: 200,
        }),
      },
    })
    // biome-ignore lint/suspicious/noExplicitAny: the table is named at run time.
    let raw: Kysely<any>
    let ops: FieldEncryptionOps
    beforeAll(async () => {
      raw = new Kysely({ dialect: backend.createDialect() })
      await raw.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('email', 'varchar(200)')
        .$call(addEncryptedColumns(schema, table, backend.family))
        .execute()
      await createBlindIndexes(raw, schema, table)
      await raw
        .insertInto(table)
        .values([
          { id: 1, email: 'alice.secret@example.com' },
          { id: 2, email: 'ALICE.SECRET@example.com' },
          { id: 3, email: 'bob.private@example.com' },
        ])
        .execute()
      ops = fieldEncryptionOps({
        db: raw,
        schema,
        keyProvider: localKeyProvider({ id: 'local:dup', key: randomBytes(32) }),
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

    it('MIGRATION_REFUSED, and neither it nor its cause holds a plaintext, a ciphertext or a blind index', async () => {
      const error = await ops.encryptColumn(table, 'email').catch((e: unknown) => e)
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
