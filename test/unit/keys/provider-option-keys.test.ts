import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { afterAll, describe, expect, it } from 'vitest'
import { awsKmsKeyProvider } from '../../../src/aws-kms.js'
import {
  encrypted,
  encryptedSchema,
  KeyRing,
  KeyStore,
  localKeyProvider,
  migrationDdl,
  rewrapAll,
} from '../../../src/index.js'
import { KeyCache } from '../../../src/keys/key-cache.js'
import { generatePkcs11Kek, pkcs11KeyProvider } from '../../../src/pkcs11.js'
import { newPGlite } from '../../support/pglite.js'

/**
 * The key providers, the key classes and migrationDdl refuse an option key they do not know, as
 * fieldEncryption does (test/unit/option-keys.test.ts): a misspelt `pinEnv`, `grantTokens` or
 * `tableName` was dropped without a word and its default taken.
 */
describe('unknown option keys of the providers and the key classes', () => {
  const invalid = (message: RegExp) =>
    expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(message) })
  const pglite = newPGlite()
  // biome-ignore lint/suspicious/noExplicitAny: no table is read
  const db = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
  afterAll(() => db.destroy())

  it('localKeyProvider: a misspelt option, and two sources of the KEK', () => {
    expect(() => localKeyProvider({ id: 'local:a', kye: randomBytes(32) } as never)).toThrow(
      invalid(/localKeyProvider: unknown option kye \(did you mean key\?\)/),
    )
    process.env.KFE_TEST_OPTION_KEK = randomBytes(32).toString('hex')
    try {
      // Two sources: one would be left unread, and the KEK in use would not be the one meant.
      expect(() => localKeyProvider({ key: randomBytes(32), env: 'KFE_TEST_OPTION_KEK' } as never)).toThrow(
        invalid(/takes one of `key`, `env` or `file`, but was given key and env/),
      )
      // A source given as undefined is not given (an options object of a wider type).
      const provider = localKeyProvider({ key: undefined, env: 'KFE_TEST_OPTION_KEK' } as never)
      expect(provider.id).toBe('local:default')
      void provider.close()
    } finally {
      delete process.env.KFE_TEST_OPTION_KEK
    }
  })

  it('awsKmsKeyProvider', () => {
    expect(() => awsKmsKeyProvider({ keyId: 'alias/a', grantToken: ['t'] } as never)).toThrow(
      invalid(/awsKmsKeyProvider: unknown option grantToken \(did you mean grantTokens\?\)/),
    )
  })

  it('pkcs11KeyProvider and generatePkcs11Kek (refused before the module is loaded)', async () => {
    const base = { module: '/nonexistent/libpkcs11.so', tokenLabel: 't', keyLabel: 'k' }
    let thrown: unknown
    try {
      pkcs11KeyProvider({ ...base, pin_env: 'PIN' } as never)
    } catch (error) {
      thrown = error
    }
    expect(thrown).toMatchObject({
      name: 'KeyProviderError',
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/pkcs11KeyProvider: unknown option pin_env \(did you mean pinEnv\?\)/),
    })
    // The provider's own options are not the generator's: it makes a key, it does not use one.
    await expect(generatePkcs11Kek({ ...base, pin: '1', sessions: 2 } as never)).rejects.toMatchObject({
      name: 'KeyProviderError',
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/generatePkcs11Kek: unknown option sessions/),
    })
  })

  it('KeyStore, KeyCache, KeyRing and rewrapAll', async () => {
    expect(() => new KeyStore(db, { table: 'k' } as never)).toThrow(
      invalid(/KeyStore: unknown option table \(did you mean tableName\?\)/),
    )
    expect(() => new KeyCache({ ttl: 5 } as never)).toThrow(invalid(/KeyCache: unknown option ttl/))
    const store = new KeyStore(db, { tableName: 'option_keys' })
    const provider = localKeyProvider({ id: 'local:a', key: randomBytes(32) })
    expect(() => new KeyRing({ store, providers: [provider], autoCreateKeys: true } as never)).toThrow(
      invalid(/KeyRing: unknown option autoCreateKeys \(did you mean autoCreate\?\)/),
    )
    await expect(
      rewrapAll({ store, from: [provider], to: provider, removeKekId: ['local:a'] } as never),
    ).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
      message: expect.stringMatching(/rewrapAll: unknown option removeKekId \(did you mean removeKekIds\?\)/),
    })
    // Nothing was read or created: the refusal came first.
    const { rows } = await pglite.query<{ n: number }>(
      `select count(*)::int as n from pg_tables where tablename = 'option_keys'`,
    )
    expect(rows[0]?.n).toBe(0)
    await provider.close()
  })

  it('migrationDdl', () => {
    const schema = encryptedSchema({
      users: { email: encrypted.text({ storedAs: 'email_encrypted', migration: 'dual-writing' }) },
    })
    expect(() =>
      migrationDdl(schema, 'users', 'email', 'drop', 'postgres', { plaintexType: 'text' } as never),
    ).toThrow(invalid(/migrationDdl: unknown option plaintexType \(did you mean plaintextType\?\)/))
  })
})
