import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  addEncryptedColumns,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { newPGlite } from '../support/pglite.js'
import { kmsFixture } from '../support/providers.js'

/**
 * AWS KMS that hangs (the real SDK against the loopback KMS endpoint, every answer held for a
 * minute): without a deadline, a query whose key must be unwrapped waits on the hung call, even
 * with the key cached within grace (the cache serves a stale key only once a reload fails) or a
 * second KEK that would answer. `cache.unwrapTimeoutMs` makes a KEK that does not answer in
 * time an outage of that KEK.
 */
describe('a KEK whose unwrap hangs', () => {
  const table = 'hung_unwrap' as const
  const schema = encryptedSchema({ [table]: { ssn: encrypted.text() } })
  const pglite = newPGlite()
  // A fresh provider per instance: an instance closes the providers it was given.
  const localKek = randomBytes(32)
  const local = () => localKeyProvider({ id: 'local:second', key: Buffer.from(localKek) })
  type DB = { hung_unwrap: { id: number; ssn: string } }
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
    // Keys wrapped under KMS first and a local KEK second.
    const writer = fieldEncryption({ schema, keyProvider: [kms.provider, local()], verifySchema: false })
    const db = new Kysely<DB>({ dialect: writer.wrap(new PGliteDialect(pglite)), plugins: [writer.plugin] })
    await writer.init(db)
    await db.insertInto(table).values({ id: 1, ssn: 'S-1' }).execute()
    await writer.close()
  }, 120_000)
  afterAll(async () => {
    kms?.kms.setLatency(0)
    await kms?.cleanup()
    await raw?.destroy()
  })

  /** A process of the application over the same database, with these KEKs and cache options. */
  const reader = (keyProvider: Parameters<typeof fieldEncryption>[0]['keyProvider'], now?: () => number) => {
    const encryption = fieldEncryption({
      schema,
      keyProvider,
      verifySchema: false,
      cache: { ttlMs: 1000, unwrapTimeoutMs: 300, ...(now === undefined ? {} : { now }) },
    })
    const db = new Kysely<DB>({
      dialect: encryption.wrap(new PGliteDialect(pglite)),
      plugins: [encryption.plugin],
    })
    return { encryption, read: () => db.selectFrom(table).select(['id', 'ssn']).execute() }
  }
  /** Milliseconds `run` took, and what it gave. */
  const timed = async <T>(run: () => Promise<T>) => {
    const start = performance.now()
    const value = await run().catch((e: unknown) => e)
    return { ms: performance.now() - start, value }
  }

  it('a cold key fails PROVIDER_UNAVAILABLE after the deadline; with a second KEK it loads through that one', async () => {
    kms.kms.setLatency(60_000)
    const only = reader(kms.provider)
    const both = reader([kms.provider, local()])
    try {
      const failed = await timed(only.read)
      expect(failed.value).toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
      const causes = ((failed.value as Error).cause as AggregateError).errors as Error[]
      expect(causes.map((e) => e.message).join()).toContain('did not answer the unwrap')
      expect(failed.ms).toBeLessThan(5_000)
      const loaded = await timed(both.read)
      expect(loaded.value).toEqual([{ id: 1, ssn: 'S-1' }])
      expect(loaded.ms).toBeLessThan(5_000)
    } finally {
      kms.kms.setLatency(0)
      await only.encryption.close()
      await both.encryption.close()
    }
  }, 30_000)

  it('a key cached within grace is served while its reload hangs', async () => {
    let clock = 0
    const cached = reader(kms.provider, () => clock)
    try {
      expect(await cached.read()).toEqual([{ id: 1, ssn: 'S-1' }])
      kms.kms.setLatency(60_000)
      clock += 1500 // past ttlMs: the next query reloads the key
      const served = await timed(cached.read)
      expect(served.value).toEqual([{ id: 1, ssn: 'S-1' }])
      expect(served.ms).toBeLessThan(5_000)
      expect(cached.encryption.stats().keys?.cache.staleServed).toBeGreaterThan(0)
    } finally {
      kms.kms.setLatency(0)
      await cached.encryption.close()
    }
  }, 30_000)
})
