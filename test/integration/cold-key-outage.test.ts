import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addEncryptedColumns, encrypted, encryptedSchema, fieldEncryption } from '../../src/index.js'
import { newPGlite } from '../support/pglite.js'
import { kmsFixture } from '../support/providers.js'

/**
 * A key not in a process's cache while AWS KMS hangs (the real SDK against the loopback KMS
 * endpoint): the first query waits for the keeper and fails `PROVIDER_UNAVAILABLE`; the queries
 * after it, within `outageRetryMs`, fail at once without another KMS request, instead of each
 * waiting out the SDK's timeouts again; once that has passed and KMS answers, the key loads.
 */
describe('a key not in the cache while KMS hangs', () => {
  const table = 'cold_outage' as const
  const schema = encryptedSchema({ [table]: { ssn: encrypted.text() } })
  const pglite = newPGlite()
  let kms: Awaited<ReturnType<typeof kmsFixture>>
  // biome-ignore lint/suspicious/noExplicitAny: one test table
  let raw: Kysely<any>
  beforeAll(async () => {
    kms = await kmsFixture()
    raw = new Kysely({ dialect: new PGliteDialect(pglite) })
    await raw.schema
      .createTable(table)
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .$call(addEncryptedColumns(schema, table, 'postgres'))
      .execute()
    const writer = fieldEncryption({ schema, keyProvider: kms.provider, verifySchema: false })
    const db = new Kysely<{ cold_outage: { id: number; ssn: string } }>({
      dialect: writer.wrap(new PGliteDialect(pglite)),
      plugins: [writer.plugin],
    })
    await writer.init(db)
    await db.insertInto(table).values({ id: 1, ssn: 'S-1' }).execute()
    await writer.close()
  }, 120_000)
  afterAll(async () => {
    // One in-memory database: closing it drops the table (every Kysely on it closes it alike).
    await kms?.cleanup()
    await raw?.destroy()
  })

  it('fails at once after the first slow failure, without another KMS request, and loads once KMS answers', async () => {
    // Another process of the application: nothing cached.
    const reader = fieldEncryption({
      schema,
      keyProvider: kms.provider,
      verifySchema: false,
      cache: { outageRetryMs: 1500 },
    })
    const db = new Kysely<{ cold_outage: { id: number; ssn: string } }>({
      dialect: reader.wrap(new PGliteDialect(pglite)),
      plugins: [reader.plugin],
    })
    try {
      kms.kms.setLatency(1100)
      kms.fault.down()
      const before = kms.calls()
      const read = () => db.selectFrom(table).select(['id', 'ssn']).execute()
      const first = await read().catch((e: unknown) => e)
      expect(first).toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
      expect(String((first as Error).message)).not.toMatch(/remembered/)
      expect(kms.calls()).toBe(before + 1)
      for (let i = 0; i < 3; i++) {
        const again = await read().catch((e: unknown) => e)
        expect(again).toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
        expect(String((again as Error).message)).toMatch(/remembered/)
      }
      expect(kms.calls()).toBe(before + 1)
      kms.kms.setLatency(0)
      kms.fault.up()
      await new Promise((r) => setTimeout(r, 1600))
      expect(await read()).toEqual([{ id: 1, ssn: 'S-1' }])
      expect(kms.calls()).toBe(before + 2)
    } finally {
      await reader.close()
    }
  })
})
