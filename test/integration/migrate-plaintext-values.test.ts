import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type EncryptedSchema, encrypted, encryptedSchema, type MigrationPhase } from '../../src/index.js'
import type { JobResult } from '../../src/ops.js'
import { type Backend, backends, defaultMysqlDialect, uniqueName } from '../support/backends.js'
import { usePlaintextColumns } from '../support/plaintext-columns.js'

/**
 * The backfill of a plaintext column moves each value exactly as the database holds it, whatever
 * the driver makes of the column's type: a json/jsonb column comes back parsed from pg (and from
 * mysql2 on MySQL 8), a text one as its JSON text; a numeric/DECIMAL comes back as a decimal
 * string, which a JavaScript number may not hold exactly.
 */
describe.each(backends())('encrypt-column: plaintext values moved exactly [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('mig_values')
    const schema = (phase: MigrationPhase): EncryptedSchema =>
      encryptedSchema({
        [table]: {
          data: encrypted.json({ storedAs: 'data_encrypted', migration: phase }),
          amount: encrypted.number({ storedAs: 'amount_encrypted', migration: phase }),
          email: encrypted.text({ storedAs: 'email_encrypted', migration: phase }),
          big: encrypted.bigint({ storedAs: 'big_encrypted', migration: phase }),
        },
      })
    const t = usePlaintextColumns(backend, {
      table,
      columns: ['data', 'amount', 'email', 'big'],
      schema,
      // The jobs on MySQL/MariaDB through mysql2's defaults: a BIGINT past 2^53 read rounded.
      rawDialect: () => (backend.family === 'mysql' ? defaultMysqlDialect() : undefined),
      async create(raw) {
        const [json, decimal] =
          backend.family === 'mysql' ? ['json', 'decimal(30,2)'] : ['jsonb', 'numeric(30,2)']
        // email in latin1 on MySQL/MariaDB: its 'é' is other bytes than the job's utf8mb4 parameter.
        const text = backend.family === 'mysql' ? 'varchar(200) character set latin1' : 'varchar(200)'
        await sql`create table ${sql.table(table)} (id integer primary key, data ${sql.raw(json)}, amount ${sql.raw(decimal)}, email ${sql.raw(text)}, big bigint)`.execute(
          raw,
        )
        // data: strings that read as other JSON values once parsed again, an object, the JSON value
        // null (not SQL NULL), and SQL NULL. amount: decimals a double holds exactly, and two it
        // does not (2^53 + 1; 19 significant digits).
        await sql`insert into ${sql.table(table)} (id, data, amount) values
            (1, '"123"', 1.50), (2, '"1.50"', 9007199254740993.00), (3, '{"a":1,"b":[true,null,"x"]}', 12345678901234567.89),
            (4, '"true"', -12.34), (5, 'null', null), (6, null, 0)`.execute(raw)
        await sql`update ${sql.table(table)} set email = concat('é', id, '@x.io'), big = 9007199254740993 + id`.execute(
          raw,
        )
      },
    })

    /** `[id, value]` of each row whose encrypted column of `column` holds a value, decrypted by another instance. */
    const decryptedAtRest = async (column: string): Promise<Array<[number, unknown]>> => {
      const stored = await t.raw
        .selectFrom(table)
        .select(['id', `${column}_encrypted as c`])
        .orderBy('id')
        .execute()
      const out: Array<[number, unknown]> = []
      for (const row of stored)
        if (row.c !== null) out.push([Number(row.id), await t.reader.decrypt(table, column, row.c)])
      return out
    }

    it('a JSON string stays that string (never parsed a second time); the JSON value null is counted failed', async () => {
      const job = (await t.ops.encryptColumn(table, 'data')) as JobResult
      expect(job).toMatchObject({ rewritten: 4, failed: 1 })
      const verify = await t.ops.verifyColumn(table, 'data')
      expect(verify).toMatchObject({ ok: false, equal: 4, failed: 1, plaintextNull: 1, missing: 0 })
      expect(verify.failures).toEqual([{ key: 5, problems: ['data: CODEC_INVALID_VALUE'] }])
      expect(await decryptedAtRest('data')).toEqual([
        [1, '123'],
        [2, '1.50'],
        [3, { a: 1, b: [true, null, 'x'] }],
        [4, 'true'],
      ])
    })

    it('a decimal a JavaScript number cannot hold exactly is counted failed, never stored rounded', async () => {
      const job = (await t.ops.encryptColumn(table, 'amount')) as JobResult
      expect(job).toMatchObject({ rewritten: 3, failed: 2 })
      const verify = await t.ops.verifyColumn(table, 'amount')
      expect(verify).toMatchObject({ ok: false, equal: 3, failed: 2, plaintextNull: 1, missing: 0 })
      expect(verify.failures).toEqual([
        { key: 2, problems: ['amount: CODEC_INVALID_VALUE'] },
        { key: 3, problems: ['amount: CODEC_INVALID_VALUE'] },
      ])
      expect(await decryptedAtRest('amount')).toEqual([
        [1, 1.5],
        [4, -12.34],
        [6, 0],
      ])
    })

    it('restart: a backfill stopped before a rollback to added is planned anew, so a plaintext changed in a batch it had done is moved too', async () => {
      const stop = new AbortController()
      const first = (await t.ops.encryptColumn(table, 'email', {
        batchSize: 2,
        signal: stop.signal,
        onProgress: (p) => {
          if (p.phase === 'batch') stop.abort()
        },
      })) as JobResult
      expect(first).toMatchObject({ stopped: true, rewritten: 2 })
      // An `added` process (rolled back to) updates the plaintext alone, in the batch already done.
      await t.raw.updateTable(table).set({ email: 'changed@x.io' }).where('id', '=', 1).execute()
      const again = (await t.ops.encryptColumn(table, 'email', { batchSize: 2, restart: true })) as JobResult
      expect(again).toMatchObject({ planned: true, failed: 0, remainingBatches: 0 })
      expect(again.replaced).toMatchObject({ doneBatches: 1 })
      const verify = await t.ops.verifyColumn(table, 'email')
      expect(verify).toMatchObject({ ok: true, equal: 6, failed: 0, missing: 0 })
    })

    it('a BIGINT past 2^53 is moved exactly, also through a mysql2 pool without supportBigNumbers', async () => {
      const job = (await t.ops.encryptColumn(table, 'big')) as JobResult
      expect(job).toMatchObject({ rewritten: 6, failed: 0 })
      expect(await t.ops.verifyColumn(table, 'big')).toMatchObject({ ok: true, equal: 6 })
      expect(await decryptedAtRest('big')).toEqual(
        [1, 2, 3, 4, 5, 6].map((id) => [id, 9007199254740993n + BigInt(id)]),
      )
    })
  })
})
