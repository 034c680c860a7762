import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type EncryptedSchema, encrypted, encryptedSchema, type MigrationPhase } from '../../src/index.js'
import type { JobResult } from '../../src/ops.js'
import { type Backend, backends, uniqueName } from '../support/backends.js'
import { usePlaintextColumns } from '../support/plaintext-columns.js'

/**
 * A plaintext the driver cannot hold exactly: a timestamp with microseconds (`timestamptz`,
 * `DATETIME(6)`), read as a JS Date in milliseconds, or a MySQL `FLOAT` 0.3 (0.300000011920929…),
 * read as the double 0.3. Encrypting the value read would store another value, and the
 * compare-and-set on it never matched: the whole batch failed "kept changing", nothing written.
 * Such a row is counted failed (CODEC_INVALID_VALUE), never stored rounded; the rest are written.
 */
describe.each(backends())(
  'encrypt-column: plaintexts the driver reads rounded [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const table = uniqueName('mig_precision')
      const schema = (phase: MigrationPhase): EncryptedSchema =>
        encryptedSchema({
          [table]: {
            seen_at: encrypted.date({ storedAs: 'seen_at_encrypted', migration: phase }),
            score: encrypted.number({ storedAs: 'score_encrypted', migration: phase }),
          },
        })
      const t = usePlaintextColumns(backend, {
        table,
        columns: ['seen_at', 'score'],
        schema,
        async create(raw) {
          const [timestamp, float] =
            backend.family === 'mysql' ? ['datetime(6)', 'float'] : ['timestamptz', 'real']
          await sql`create table ${sql.table(table)} (id integer primary key, seen_at ${sql.raw(timestamp)}, score ${sql.raw(float)})`.execute(
            raw,
          )
          // Rows 1 and 3 hold microseconds; 2 and 4 milliseconds; 5 NULL. Score 0.3 in row 1: a MySQL
          // FLOAT holds 0.300000011920929…, a PostgreSQL real reads back as 0.3 exactly.
          await sql`insert into ${sql.table(table)} (id, seen_at, score) values
          (1, '2024-01-01 10:00:00.123456', 0.3), (2, '2024-01-01 10:00:00.123', 1.5),
          (3, '2024-01-01 10:00:00.000001', -2.25), (4, '2024-01-01 10:00:01', 0), (5, null, null)`.execute(
            raw,
          )
        },
      })

      /** The ids whose encrypted column of `column` holds a value. */
      const written = async (column: string): Promise<number[]> => {
        const rows = await t.raw
          .selectFrom(table)
          .select('id')
          .where(`${column}_encrypted`, 'is not', null)
          .orderBy('id')
          .execute()
        return rows.map((r) => Number(r.id))
      }

      it('a timestamp with microseconds is counted failed (CODEC_INVALID_VALUE), never stored rounded; the rest of the batch is written', async () => {
        expect(await t.ops.encryptColumn(table, 'seen_at', { dryRun: true })).toMatchObject({
          wouldRewrite: 2,
          failed: 2,
        })
        const job = (await t.ops.encryptColumn(table, 'seen_at')) as JobResult
        expect(job).toMatchObject({
          rows: 5,
          rewritten: 2,
          failed: 2,
          conflicts: 0,
          deleted: 0,
          failedKeys: [1, 3],
        })
        expect(await written('seen_at')).toEqual([2, 4])
        const stored = await t.raw
          .selectFrom(table)
          .select('seen_at_encrypted as c')
          .where('id', '=', 2)
          .executeTakeFirst()
        expect(await t.reader.decrypt(table, 'seen_at', stored?.c)).toEqual(
          new Date('2024-01-01T10:00:00.123Z'),
        )
        const verify = await t.ops.verifyColumn(table, 'seen_at')
        expect(verify).toMatchObject({ ok: false, equal: 2, failed: 2, plaintextNull: 1, missing: 0 })
        expect(verify.failures).toEqual([
          { key: 1, problems: ['seen_at: CODEC_INVALID_VALUE'] },
          { key: 3, problems: ['seen_at: CODEC_INVALID_VALUE'] },
        ])
        const status = await t.ops.status()
        expect(status.tables[0]?.migrations.find((m) => m.column === 'seen_at')?.job).toMatchObject({
          failed: 2,
        })
      })

      it('a MySQL FLOAT the double read does not hold is counted failed; a PostgreSQL real is moved as read', async () => {
        const job = (await t.ops.encryptColumn(table, 'score')) as JobResult
        const rounded = backend.family === 'mysql' ? [1] : []
        expect(job).toMatchObject({
          rows: 5,
          rewritten: 4 - rounded.length,
          failed: rounded.length,
          failedKeys: rounded,
        })
        expect(await written('score')).toEqual([1, 2, 3, 4].filter((id) => !rounded.includes(id)))
        const verify = await t.ops.verifyColumn(table, 'score')
        expect(verify.failures).toEqual(
          rounded.map((key) => ({ key, problems: ['score: CODEC_INVALID_VALUE'] })),
        )
      })
    })
  },
)
