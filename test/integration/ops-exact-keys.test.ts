import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
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
 * A table keyed by a timestamp with microseconds (`timestamptz`, `DATETIME(6)`): the drivers
 * return it as a JS Date (milliseconds). The jobs read such a key as its text, so that pages and
 * compare-and-set writes address each row exactly: no row is skipped, none counted `deleted`
 * while it is there. Two keys one microsecond apart are the same Date.
 */
describe.each(backends())('ops: a key the driver reads inexactly [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('ops_tskey')
    const keyTable = `${table}_keys`
    const jobsTable = `${table}_jobs`
    const schema = (phase: MigrationPhase): EncryptedSchema =>
      encryptedSchema(
        { [table]: { email: encrypted.text({ storedAs: 'email_encrypted', migration: phase }) } },
        { tables: { [table]: { primaryKey: 'created_at' } } },
      )
    const kek = randomBytes(32)
    let raw: Kysely<TestDB>
    let ops: FieldEncryptionOps
    beforeAll(async () => {
      raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
      const type = backend.family === 'mysql' ? 'datetime(6)' : 'timestamptz'
      await sql`create table ${sql.table(table)} (created_at ${sql.raw(type)} primary key, email varchar(100), score double precision not null unique)`.execute(
        raw,
      )
      await sql`insert into ${sql.table(table)} (created_at, email, score) values
        ('2024-01-01 10:00:00.000100', 'a@x.io', 1.5), ('2024-01-01 10:00:01.123456', 'b@x.io', 2.5),
        ('2024-01-01 10:00:02', 'c@x.io', 3.5), ('2024-01-01 10:00:03.000100', 'd@x.io', 4.5),
        ('2024-01-01 10:00:03.000200', 'e@x.io', 5.5)`.execute(raw)
      await applyMigrationStep(raw, schema('added'), table, 'email', 'add')
      ops = fieldEncryptionOps({
        db: raw,
        schema: schema('dual-writing'),
        keyProvider: localKeyProvider({ id: 'local:tskey', key: Buffer.from(kek) }),
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

    it('the backfill in batches of three writes every row (none counted deleted); verify lists a failed row by its exact key', async () => {
      expect(await ops.encryptColumn(table, 'email', { dryRun: true })).toMatchObject({
        rows: 5,
        wouldRewrite: 5,
      })
      const job = (await ops.encryptColumn(table, 'email', { batchSize: 3 })) as JobResult
      expect(job).toMatchObject({ rows: 5, rewritten: 5, deleted: 0, conflicts: 0, failed: 0 })
      const left = await sql<{
        n: number | string
      }>`select count(*) as n from ${sql.table(table)} where email_encrypted is null`.execute(raw)
      expect(Number(left.rows[0]?.n)).toBe(0)
      expect(await ops.verifyColumn(table, 'email')).toMatchObject({ ok: true, equal: 5, missing: 0 })
      // One row's ciphertext spoilt: verify names that row, not its neighbour in the same millisecond.
      await sql`update ${sql.table(table)} set email_encrypted = ${Buffer.from('not a ciphertext')} where email = 'e@x.io'`.execute(
        raw,
      )
      const verify = await ops.verify(table)
      expect(verify.failures).toHaveLength(1)
      expect(String(verify.failures[0]?.key)).toMatch(
        /^2024-01-01[ T]10:00:03\.0002(00)?([+-]\d\d(:\d\d)?)?$/,
      )
      // Keys read as Dates, the dry run's pages never got past the last two (after 10:00:03.000).
    }, 20_000)

    it.runIf(backend.family === 'mysql')(
      'a DOUBLE column to page by is refused (CONFIG_INVALID naming primaryKeys): MySQL compares it unequal to its own text',
      async () => {
        const byScore = fieldEncryptionOps({
          db: raw,
          schema: schema('dual-writing'),
          keyProvider: localKeyProvider({ id: 'local:tskey', key: Buffer.from(kek) }),
          keyTable,
          jobsTable,
          primaryKeys: { [table]: 'score' },
        })
        try {
          const refused = await byScore.verify(table).catch((e: unknown) => e)
          expect(refused).toMatchObject({ name: 'ConfigError', code: 'CONFIG_INVALID' })
          expect(String((refused as Error).message)).toContain(`primaryKeys.${table}`)
        } finally {
          await byScore.close()
        }
      },
    )
  })
})
