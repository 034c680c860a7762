/**
 * rewrapAll never takes its source from a wrapping the caller did not name (issue 13): a database
 * writer who plants a wrapping under a foreign AWS KMS key must not have the application adopt
 * that key, and every new wrapping is proved against the key unwrapped through `from`.
 * Real @aws-sdk/client-kms against the in-repo KMS endpoint; the key store on PGlite.
 */
import { randomBytes } from 'node:crypto'
import { KMSClient } from '@aws-sdk/client-kms'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KeyProviderError } from '../../src/errors.js'
import type { KeyProvider } from '../../src/keys/key-provider.js'
import { KeyRing } from '../../src/keys/key-ring.js'
import { KeyStore } from '../../src/keys/key-store.js'
import { localKeyProvider } from '../../src/keys/local-provider.js'
import { awsKmsKeyProvider } from '../../src/keys/providers/aws-kms-provider.js'
import { rewrapAll } from '../../src/keys/rewrap.js'
import { type KmsEndpoint, startKmsEndpoint } from '../support/kms-endpoint.js'
import { newPGlite } from '../support/pglite.js'

describe('rewrapAll to AWS KMS: only wrappings of a `from` KEK, always proved', () => {
  let kms: KmsEndpoint
  let client: KMSClient
  let db: Kysely<unknown>
  let target: KeyProvider
  let foreign: KeyProvider
  const kek = randomBytes(32)
  // A new provider per use: a key ring closes its providers.
  const local = () => localKeyProvider({ id: 'local:a', key: Uint8Array.from(kek) })

  beforeAll(async () => {
    kms = await startKmsEndpoint()
    client = new KMSClient({
      endpoint: kms.url,
      region: 'local-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 1,
    })
    target = awsKmsKeyProvider({ keyId: kms.createKey(), client })
    // The writer's own KMS key, in the same account and region.
    foreign = awsKmsKeyProvider({ keyId: kms.createKey(), client })
    db = new Kysely<unknown>({ dialect: new PGliteDialect(newPGlite()) })
  })
  afterAll(async () => {
    await db.destroy()
    client.destroy()
    await kms.close()
  })

  it('a row wrapped only under a foreign KMS key: refused (CONFIG_INVALID), no ReEncrypt from it, the row unchanged', async () => {
    const store = new KeyStore(db, { tableName: 'keys_planted' })
    await store.ensureSchema()
    const ring = new KeyRing({ store, providers: [local()] })
    await ring.init(['planted'])
    await ring.close()
    // The writer replaces the data key's wrappings with one of their own key under their KMS key.
    const planted = await foreign.generateDataKey({ logicalTable: 'planted', purpose: 'data', version: 1 })
    planted.plaintext.fill(0)
    await store.setWrappings({ logicalTable: 'planted', purpose: 'data', version: 1 }, [planted.wrapped])
    const before = (await store.list('planted', 'data'))[0]?.wrappings.map((w) => w.kekId)
    const reEncrypts = () => kms.calls.ReEncrypt
    const calls = reEncrypts()
    await expect(rewrapAll({ store, from: [local()], to: target })).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      table: 'planted',
      message: expect.stringContaining("no wrapping under a 'from' KEK"),
    })
    expect(reEncrypts()).toBe(calls)
    expect((await store.list('planted', 'data'))[0]?.wrappings.map((w) => w.kekId)).toEqual(before)
  })

  it('a `to` whose new wrapping holds another key is refused even when no wrapping is removed', async () => {
    const store = new KeyStore(db, { tableName: 'keys_liar' })
    await store.ensureSchema()
    const ring = new KeyRing({ store, providers: [local()] })
    await ring.init(['liar'])
    await ring.close()
    const own = store
    // A `to` that wraps a key of its own choosing instead of the one it was given.
    const liar: KeyProvider = {
      id: target.id,
      generateDataKey: (ref) => target.generateDataKey(ref),
      unwrap: (w, ref) => target.unwrap(w, ref),
      rewrap: async (_source, ref) => {
        const other = await target.generateDataKey(ref)
        other.plaintext.fill(0)
        return other.wrapped
      },
    }
    const error = await rewrapAll({ store: own, from: [local()], to: liar }).catch((e: unknown) => e)
    // The class docs/errors.md gives UNWRAP_FAILED, naming the KEK whose wrapping failed.
    expect(error).toBeInstanceOf(KeyProviderError)
    expect(error).toMatchObject({ code: 'UNWRAP_FAILED', providerId: target.id })
    const rows = await store.list('liar')
    expect(rows.map((k) => k.wrappings.map((w) => w.kekId))).toEqual([['local:a'], ['local:a']])
  })
  it('a wrapping already under `to` that does not unwrap to the key (its KEK changed since an earlier run) is replaced, never trusted to prune the working one', async () => {
    const store = new KeyStore(db, { tableName: 'keys_stale_target' })
    await store.ensureSchema()
    const ring = new KeyRing({ store, providers: [local()] })
    await ring.init(['stale'])
    const before = await ring.activeKey('stale', 'data')
    const key = Buffer.from(before.bytes)
    await ring.close()
    // A first run (keeping local:a) wrapped every key under a local:b ...
    const firstB = localKeyProvider({ id: 'local:b', key: randomBytes(32) })
    expect(await rewrapAll({ store, from: [local()], to: firstB })).toMatchObject({ keys: 2, rewrapped: 2 })
    // ... whose KEK was then regenerated under the same id. The second run removes local:a.
    const secondKek = randomBytes(32)
    const secondB = () => localKeyProvider({ id: 'local:b', key: Uint8Array.from(secondKek) })
    const result = await rewrapAll({ store, from: [local()], to: secondB(), removeKekIds: ['local:a'] })
    expect(result).toMatchObject({ keys: 2, rewrapped: 2 })
    const rows = await store.list('stale')
    expect(rows.map((k) => k.wrappings.map((w) => w.kekId))).toEqual([['local:b'], ['local:b']])
    // Every key still opens, under the KEK local:b is now, to the same bytes.
    const after = new KeyRing({ store, providers: [secondB()] })
    try {
      expect(Buffer.from((await after.activeKey('stale', 'data')).bytes).equals(key)).toBe(true)
      await after.activeKey('stale', 'index')
    } finally {
      await after.close()
      key.fill(0)
    }
  })
})
