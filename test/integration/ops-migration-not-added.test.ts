import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { applyMigrationStep, encrypted, encryptedSchema, localKeyProvider } from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'

/**
 * A column annotated `added` (a plaintext column moving to encrypted) before its add migration
 * ran: the encrypted and blind-index columns are not there yet. `status` says to run the add step
 * (it read every annotated column and failed with the database's "column does not exist");
 * `verify` and the jobs refuse with SCHEMA_MISMATCH naming the missing columns and that step.
 */
describe.each(backends())('ops before a column migration is added [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    const table = uniqueName('ops_notadded')
    const keyTable = `${table}_keys`
    const jobsTable = `${table}_jobs`
    const schema = encryptedSchema({
      [table]: {
        email: encrypted.text({
          storedAs: 'email_encrypted',
          migration: 'added',
          index: { name: 'email_bidx' },
        }),
      },
    })
    let raw: Kysely<TestDB>
    let ops: ReturnType<typeof fieldEncryptionOps>
    beforeAll(async () => {
      raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
      await sql`create table ${sql.table(table)} (id integer primary key, email varchar(100))`.execute(raw)
      await sql`insert into ${sql.table(table)} (id, email) values (1, 'a@x.io'), (2, 'b@x.io')`.execute(raw)
      ops = fieldEncryptionOps({
        db: raw,
        schema,
        keyProvider: localKeyProvider({ id: 'local:notadded', key: randomBytes(32) }),
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

    it('status names the add step and reads no row; verify and reencrypt (dry run too) refuse with the missing columns', async () => {
      const status = await ops.status({ table })
      expect(status.needsAttention).toBe(true)
      expect(status.tables[0]?.attention[0]).toContain(`run \`kfe migration ${table} email --phase add\``)
      expect(status.tables[0]?.migrations).toMatchObject([{ column: 'email', encryptedColumns: false }])
      for (const run of [
        () => ops.verify(table),
        () => ops.reencrypt(table),
        () => ops.reencrypt(table, { dryRun: true }),
      ]) {
        const error = await run().catch((e: unknown) => e)
        expect(error).toMatchObject({
          code: 'SCHEMA_MISMATCH',
          problems: [
            { kind: 'column-missing', columns: ['email_encrypted'] },
            { kind: 'index-column-missing', columns: ['email_bidx'] },
          ],
        })
        expect((error as { problems: { fix: string }[] }).problems[0]?.fix).toContain('--phase add')
      }
    })

    it('a table named in mixed case whose migration columns exist is read, not refused (PostgreSQL folded the name to lower case)', async () => {
      const physical = uniqueName('Ops_Mixed')
      const bare = physical.toLowerCase()
      const qualified = encryptedSchema({
        [physical]: {
          email: encrypted.text({
            storedAs: 'email_encrypted',
            migration: 'dual-writing',
            index: { name: 'email_bidx' },
          }),
        },
      })
      const bin = backend.family === 'mysql' ? sql`varbinary(300)` : sql`bytea`
      await raw.schema
        .createTable(physical)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('email', 'varchar(100)')
        .addColumn('email_encrypted', bin)
        .addColumn('email_bidx', bin)
        .execute()
      const qops = fieldEncryptionOps({
        db: raw,
        schema: qualified,
        keyProvider: localKeyProvider({ id: 'local:notadded-q', key: randomBytes(32) }),
        keyTable: `${bare}_keys`,
        jobsTable: `${bare}_jobs`,
      })
      try {
        await raw
          .insertInto(physical as never)
          .values({ id: 1, email: 'a@x.io' } as never)
          .execute()
        await qops.init()
        expect(await qops.verify(physical)).toMatchObject({ rows: 1, failed: 0 })
        const status = await qops.status({ table: physical })
        expect(status.tables[0]?.migrations).toMatchObject([{ column: 'email', encryptedColumns: true }])
      } finally {
        await qops.close()
        await dropTables(raw, [physical, `${bare}_keys`, `${bare}_jobs`, `${bare}_jobs_batches`])
      }
    })

    it('once the add step ran, verify and status read the table', async () => {
      await applyMigrationStep(raw, schema, table, 'email', 'add')
      expect(await ops.verify(table)).toMatchObject({ rows: 2, failed: 0 })
      const status = await ops.status({ table })
      expect(status.tables[0]?.migrations).toMatchObject([{ column: 'email', encryptedColumns: true }])
      expect(status.tables[0]?.rows).toBe(2)
    })
  })
})
