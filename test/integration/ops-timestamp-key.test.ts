import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema, localKeyProvider, SchemaMismatchError } from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { sessionProblems, sessionSettings } from '../../src/schema/session-settings.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'

/**
 * A job paging a MySQL/MariaDB table by a `TIMESTAMP` key keeps its batch bounds as the key's text
 * in the session's `time_zone`: a worker in another zone, or a zone with daylight saving in the
 * hour its clocks go back, would read a bound as another instant and skip rows. The jobs refuse
 * such a key unless the session's zone is UTC (a `DATETIME` key has no zone: any runs).
 */
describe.each(backends().filter((b) => b.name === 'mysql'))(
  'a job paging by a TIMESTAMP key [$name]',
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      const table = uniqueName('ops_tzkey')
      const keyTable = `${table}_keys`
      const jobsTable = `${table}_jobs`
      const schema = encryptedSchema(
        { [table]: { email: encrypted.text() } },
        { tables: { [table]: { primaryKey: 'created_at' } } },
      )
      const key = randomBytes(32)
      const opsOn = (db: Kysely<TestDB>) =>
        fieldEncryptionOps({
          db,
          schema,
          keyProvider: localKeyProvider({ id: 'local:tzkey', key: Buffer.from(key) }),
          keyTable,
          jobsTable,
        })
      let raw: Kysely<TestDB>
      beforeAll(async () => {
        raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
        await sql`create table ${sql.table(table)} (created_at timestamp(6) primary key, email varbinary(255))`.execute(
          raw,
        )
        await sql`insert into ${sql.table(table)} (created_at) values
          ('2024-10-27 00:30:00'), ('2024-10-27 01:30:00'), ('2024-10-27 02:30:00')`.execute(raw)
        const ops = opsOn(raw)
        await ops.init()
        await ops.close()
      }, 120_000)
      afterAll(async () => {
        if (raw !== undefined) await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
        await raw?.destroy()
      })

      /** `reencrypt` of the table on one connection whose session runs `set` first. */
      function reencryptUnder(set: string) {
        return raw.connection().execute(async (conn) => {
          const ops = opsOn(conn as unknown as Kysely<TestDB>)
          try {
            await sql.raw(set).execute(conn)
            return await ops.reencrypt(table)
          } finally {
            await sql`set time_zone = default`.execute(conn)
            await ops.close()
          }
        })
      }

      it("is refused under a time zone other than UTC; runs under '+00:00'", async () => {
        const refused = await reencryptUnder("set time_zone = '+01:00'").catch((e: unknown) => e)
        expect(refused).toBeInstanceOf(SchemaMismatchError)
        expect((refused as SchemaMismatchError).problems.map((p) => [p.kind, p.found])).toEqual([
          ['session-setting', 'time_zone=+01:00'],
        ])
        expect((refused as Error).message).toContain("SET time_zone = '+00:00'")
        await expect(reencryptUnder("set time_zone = '+00:00'")).resolves.toMatchObject({
          rows: 3,
          failed: 0,
          remainingBatches: 0,
        })
      })
    })
  },
)

describe('time_zone in the session check', () => {
  const mysql = (session: string, system: string) =>
    sessionSettings('mysql', {
      s: 'test',
      m: 'STRICT_TRANS_TABLES',
      sl: '18446744073709551615',
      tz: session,
      stz: system,
    })
  it('matters to a TIMESTAMP key only, and accepts UTC however it is spelt', () => {
    const found = (session: string, system: string, zoned = true) =>
      sessionProblems(mysql(session, system), true, zoned).map((p) => p.found)
    expect(found('+01:00', 'UTC')).toEqual(['time_zone=+01:00'])
    expect(found('SYSTEM', 'CET')).toEqual(['time_zone=SYSTEM (CET)'])
    expect(found('Europe/Paris', 'UTC')).toEqual(['time_zone=Europe/Paris'])
    for (const utc of ['+00:00', '-00:00', 'UTC', 'Etc/UTC']) expect(found(utc, 'CET')).toEqual([])
    expect(found('SYSTEM', 'UTC')).toEqual([])
    // A DATETIME key, or a job paging by an integer: no zone in its bounds.
    expect(found('+01:00', 'CET', false)).toEqual([])
  })
})
