import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { keyText } from '../../src/cli/output.js'
import {
  applyMigrationStep,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  localKeyProvider,
  type MigrationPhase,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps, type JobResult } from '../../src/ops.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'

/**
 * A table keyed by bytes (`bytea`, `binary(16)`: a UUID stored as bytes). The jobs keep each
 * batch's bounds in their job table as text and read them back for every batch they claim: bytes
 * must come back as bytes, or the batch's `key > lo and key <= hi` compares other bytes and skips
 * rows. Keys hold 0x00 and 0xff and differ in their first byte, where a text form would sort them
 * otherwise.
 */
describe.each(backends())('ops: a table keyed by bytes [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('ops_binkey')
    const keyTable = `${table}_keys`
    const jobsTable = `${table}_jobs`
    const schema = (phase: MigrationPhase): EncryptedSchema =>
      encryptedSchema(
        { [table]: { email: encrypted.text({ storedAs: 'email_encrypted', migration: phase }) } },
        { tables: { [table]: { primaryKey: 'id' } } },
      )
    const kek = randomBytes(32)
    const keys = Array.from({ length: 7 }, (_, i) =>
      Buffer.from([
        (i * 37 + 200) % 256,
        0,
        255,
        i,
        ...Array.from({ length: 12 }, (_, j) => (i * 11 + j) % 256),
      ]),
    )
    const opsWith = (primaryKeys?: Record<string, string>): FieldEncryptionOps =>
      fieldEncryptionOps({
        db: raw,
        schema: schema('dual-writing'),
        keyProvider: localKeyProvider({ id: 'local:binkey', key: Buffer.from(kek) }),
        keyTable,
        jobsTable,
        metadataTtlMs: 50,
        ...(primaryKeys === undefined ? {} : { primaryKeys }),
      })
    let raw: Kysely<TestDB>
    let ops: FieldEncryptionOps
    beforeAll(async () => {
      raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
      const type = backend.family === 'mysql' ? 'binary(16)' : 'bytea'
      await sql`create table ${sql.table(table)} (id ${sql.raw(type)} primary key, email varchar(100))`.execute(
        raw,
      )
      for (const [i, id] of keys.entries())
        await sql`insert into ${sql.table(table)} (id, email) values (${id}, ${`u${i}@x.io`})`.execute(raw)
      await applyMigrationStep(raw, schema('added'), table, 'email', 'add')
      ops = opsWith()
      await ops.init()
    }, 120_000)
    afterAll(async () => {
      await ops?.close()
      if (raw !== undefined) await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
      await raw?.destroy()
    })

    it('the backfill and a re-encryption in batches of two reach every row; verify names a failed row by its bytes', async () => {
      const backfill = (await ops.encryptColumn(table, 'email', { batchSize: 2 })) as JobResult
      expect(backfill).toMatchObject({ rows: 7, rewritten: 7, deleted: 0, conflicts: 0, failed: 0 })
      expect(await ops.verifyColumn(table, 'email')).toMatchObject({ ok: true, equal: 7, missing: 0 })

      const rotated = await ops.rotate(table, { purpose: 'data', batchSize: 2 })
      expect(rotated.reencrypt).toMatchObject({ rows: 7, rewritten: 7, failed: 0, remainingBatches: 0 })
      expect(await ops.verify(table)).toMatchObject({ ok: true, rows: 7, dataVersions: { 2: 7 } })
      // Each batch held at most its two rows: bounds read back as other bytes made the first and
      // last batches take every row (one transaction over the whole table), or skipped rows.
      const batches = await sql<{
        most: number | string
        seen: number | string
      }>`select max(rows_seen) as most, sum(rows_seen) as seen from ${sql.table(`${jobsTable}_batches`)}`.execute(
        raw,
      )
      expect(Number(batches.rows[0]?.most)).toBe(2)
      expect(Number(batches.rows[0]?.seen)).toBe(14)

      const spoilt = keys[4] as Buffer
      await sql`update ${sql.table(table)} set email_encrypted = ${Buffer.from('not a ciphertext')} where id = ${spoilt}`.execute(
        raw,
      )
      const verify = await ops.verify(table)
      expect(verify.failures).toHaveLength(1)
      const key = verify.failures[0]?.key
      expect(key).toBeInstanceOf(Uint8Array)
      expect(Buffer.from(key as Uint8Array).equals(spoilt)).toBe(true)
      // The CLI prints it as hex, never as raw bytes.
      expect(keyText(key)).toBe(`0x${spoilt.toString('hex')}`)
    }, 30_000)

    it('primaryKeys naming an encrypted column, its stored column or its plaintext is CONFIG_INVALID before any row is read', async () => {
      for (const column of ['email', 'email_encrypted']) {
        const byColumn = opsWith({ [table]: column })
        try {
          const refused = await byColumn.verify(table).catch((e: unknown) => e)
          expect(refused).toMatchObject({ name: 'ConfigError', code: 'CONFIG_INVALID' })
          expect(String((refused as Error).message)).toContain(`primaryKeys.${table} names ${column}`)
          // A job with such a key would have stored its values as batch bounds: no job row exists.
          const jobs = await sql<{
            n: number | string
          }>`select count(*) as n from ${sql.table(`${jobsTable}_batches`)}
            where lo like ${'%@x.io%'} or hi like ${'%@x.io%'}`.execute(raw)
          expect(Number(jobs.rows[0]?.n)).toBe(0)
        } finally {
          await byColumn.close()
        }
      }
    })
  })
})
