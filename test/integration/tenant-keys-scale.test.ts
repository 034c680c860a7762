import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, backends, onlyTables, uniqueName } from '../support/backends.js'
import type { TestDB } from '../support/encrypted-db.js'
import { dialectsOn } from '../support/tenant-dialects.js'

const TENANTS = 1000
const ROWS_PER_TENANT = 3
/** Rows per INSERT statement (100 tenants at a time). */
const BATCH = 300

/**
 * The key cache and the provider calls scale with the tenants a process touches, not with rows:
 * over 1,000 tenants, at most one provider call per tenant key per cache TTL.
 */
describe.each(backends())('per-tenant keys over 1,000 tenants [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    let table: string
    let keyTable: string
    let schema: EncryptedSchema
    let writer: FieldEncryption
    let reader: FieldEncryption
    let writerDb: Kysely<TestDB>
    let readerDb: Kysely<TestDB>
    let raw: Kysely<TestDB>
    let close: () => Promise<void>
    const kek = randomBytes(32)
    const tenant = (i: number) => `t${String(i).padStart(4, '0')}`

    beforeAll(async () => {
      table = uniqueName('tk_scale')
      keyTable = uniqueName('kfe_keys')
      schema = encryptedSchema(
        { [table]: { email: encrypted.text({ index: { name: 'email_bidx' } }) } },
        { tables: { [table]: { context: ['tenant_id', 'id'], keyScope: 'tenant_id' } } },
      )
      const options = (id: string) => ({
        schema,
        keyProvider: localKeyProvider({ id: 'local:scale', key: Buffer.from(kek) }),
        keyTable,
        // Two keys per tenant must fit, or evictions would cost provider calls again.
        cache: { max: 2 * TENANTS + 100, ttlMs: 10 * 60_000 },
        metadataTtlMs: 10 * 60_000,
        verifySchema: onlyTables(table),
        ...(id === 'writer' ? { createTenantKeys: true } : {}),
      })
      writer = fieldEncryption(options('writer'))
      reader = fieldEncryption(options('reader'))
      const made = dialectsOn(backend, 3)
      close = made.close
      writerDb = new Kysely<TestDB>({ dialect: writer.wrap(made.dialects[0]!), plugins: [writer.plugin] })
      readerDb = new Kysely<TestDB>({ dialect: reader.wrap(made.dialects[1]!), plugins: [reader.plugin] })
      raw = new Kysely<TestDB>({ dialect: made.dialects[2]! })
      await raw.schema
        .createTable(table)
        .addColumn('id', 'integer', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(16)', (c) => c.notNull())
        .$call(addEncryptedColumns(schema, table, backend.family))
        .execute()
      await createBlindIndexes(raw, schema, table)
      await writer.init(writerDb) // the key table
    }, 600_000)

    afterAll(async () => {
      for (const t of [table, keyTable]) await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      await writer?.close()
      await reader?.close()
      await writerDb?.destroy()
      if (backend.name !== 'pglite') await readerDb?.destroy()
      if (backend.name !== 'pglite') await raw?.destroy()
      await close?.()
    })

    it(`${TENANTS} tenants × ${ROWS_PER_TENANT} rows: one provider call per tenant key, not per row`, async () => {
      const rows = Array.from({ length: TENANTS * ROWS_PER_TENANT }, (_, n) => ({
        id: n + 1,
        tenant_id: tenant(n % TENANTS),
        email: `user${n}@${tenant(n % TENANTS)}.io`,
      }))
      for (let i = 0; i < rows.length; i += BATCH) {
        await writerDb
          .insertInto(table)
          .values(rows.slice(i, i + BATCH))
          .execute()
      }
      // The writer created each tenant's data and index keys on its first write: 2 generations per
      // tenant, and nothing more for its other rows.
      const created = writer.stats().keys!
      expect(created.providerCalls).toBe(2 * TENANTS)
      const keyNames = await raw
        .selectFrom(keyTable)
        .select((eb) => eb.fn.count('logical_table').distinct().as('n'))
        .executeTakeFirst()
      expect(Number(keyNames?.n)).toBe(TENANTS)

      // A process that never saw these keys reads every row of every tenant, twice.
      const all = await readerDb.selectFrom(table).select(['id', 'email']).orderBy('id').execute()
      expect(all).toHaveLength(TENANTS * ROWS_PER_TENANT)
      expect(all[5]).toEqual({ id: 6, email: `user5@${tenant(5)}.io` })
      const afterRead = reader.stats().keys!
      expect(afterRead.providerCalls).toBe(TENANTS) // one data key per tenant, for 3,000 rows
      expect(afterRead.metadataLoads).toBeLessThanOrEqual(TENANTS)
      await readerDb.selectFrom(table).select(['id', 'email']).execute()
      expect(reader.stats().keys!.providerCalls).toBe(TENANTS) // all cached

      // Searches of 100 tenants, 3 each: one index key per tenant searched.
      for (let t = 0; t < 100; t++) {
        for (let r = 0; r < ROWS_PER_TENANT; r++) {
          const n = t + r * TENANTS
          const found = await readerDb
            .selectFrom(table)
            .select('id')
            .where('tenant_id', '=', tenant(t))
            .where('email', '=', `user${n}@${tenant(t)}.io`)
            .execute()
          expect(found).toEqual([{ id: n + 1 }])
        }
      }
      expect(reader.stats().keys!.providerCalls).toBe(TENANTS + 100)
      // The writer's second wave of rows (new ids, known tenants): no provider call.
      await writerDb
        .insertInto(table)
        .values(
          Array.from({ length: BATCH }, (_, n) => ({
            id: 100_000 + n,
            tenant_id: tenant(n),
            email: `late${n}@x.io`,
          })),
        )
        .execute()
      expect(writer.stats().keys!.providerCalls).toBe(2 * TENANTS)
    }, 600_000)
  })
})
