import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { describe, expect, it } from 'vitest'
import {
  ConfigError,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { fieldEncryptionOps } from '../../src/ops.js'
import { newPGlite } from '../support/pglite.js'

/**
 * Options of the wrong shape (a config in JavaScript, an application without TypeScript) are
 * refused with CONFIG_INVALID naming the option, by fieldEncryption and fieldEncryptionOps alike,
 * before anything uses them: before, several failed later as an untyped TypeError at the first
 * query, and some (a key provider given as a string) were accepted.
 */
describe('the shape of fieldEncryption and fieldEncryptionOps options', () => {
  const schema = encryptedSchema({ users: { email: encrypted.text() } })
  const keyProvider = localKeyProvider({ id: 'local:opts', key: randomBytes(32) })
  const cases: ReadonlyArray<readonly [string, Record<string, unknown>, string]> = [
    ['a table name as schema', { schema: 'users', keyProvider }, 'option schema'],
    ['a plain definition as schema', { schema: { users: { email: 5 } }, keyProvider }, 'option schema'],
    [
      'an object with a tables map as schema',
      { schema: { tables: new Map() }, keyProvider },
      'option schema',
    ],
    ['no key provider', { schema }, 'option keyProvider'],
    ['a key provider id instead of a provider', { schema, keyProvider: 'local:opts' }, 'option keyProvider'],
    ['an empty object as key provider', { schema, keyProvider: {} }, 'option keyProvider'],
    ['an empty list of key providers', { schema, keyProvider: [] }, 'option keyProvider'],
    ['a bad second key provider', { schema, keyProvider: [keyProvider, 5] }, 'option keyProvider[1]'],
    ['a number as key table', { schema, keyProvider, keyTable: 5 }, 'option keyTable'],
    ['a number as cache', { schema, keyProvider, cache: 1000 }, 'option cache'],
    ['a list as cache', { schema, keyProvider, cache: [] }, 'option cache'],
    ['a list as job table', { schema, keyProvider, jobsTable: ['kfe_jobs'] }, 'option jobsTable'],
    ['a column name as primaryKeys', { schema, keyProvider, primaryKeys: 'id' }, 'option primaryKeys'],
    ['a string in the cache', { schema, keyProvider, cache: { ttlMs: '5m' } }, 'option cache.ttlMs'],
    ['a string TTL', { schema, keyProvider, metadataTtlMs: '30s' }, 'option metadataTtlMs'],
    ['a string as a flag', { schema, keyProvider, autoCreateKeys: 'yes' }, 'option autoCreateKeys'],
    ['an object as audit sink', { schema, keyProvider, audit: {} }, 'option audit'],
    ['a string as verifySchema', { schema, keyProvider, verifySchema: 'on' }, 'option verifySchema'],
    ['a list as verifySchema', { schema, keyProvider, verifySchema: [] }, 'option verifySchema'],
  ]
  const refusal = (f: () => unknown): ConfigError => {
    try {
      f()
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError)
      return e as ConfigError
    }
    throw new Error('not refused')
  }

  it.each(cases)('%s: CONFIG_INVALID from both, naming the option', (_name, options, says) => {
    // biome-ignore lint/suspicious/noExplicitAny: wrong shapes on purpose.
    const bad = options as any
    const plugin = refusal(() => fieldEncryption(bad))
    expect(plugin.code).toBe('CONFIG_INVALID')
    expect(plugin.message).toContain(`fieldEncryption: ${says} must be`)
    const db = new Kysely({ dialect: new PGliteDialect(newPGlite()) })
    const ops = refusal(() => fieldEncryptionOps({ ...bad, db }))
    expect(ops.code).toBe('CONFIG_INVALID')
    expect(ops.message).toContain(`the operations: ${says} must be`)
  })

  it('a db that is not a Kysely instance is refused by the operations', () => {
    // biome-ignore lint/suspicious/noExplicitAny: wrong shape on purpose.
    const e = refusal(() => fieldEncryptionOps({ schema, keyProvider, db: {} as any }))
    expect(e.message).toContain('option db must be a Kysely instance')
  })

  it('a key provider that is a class instance, a proxy or a function object with the methods passes', () => {
    class Wrapped {
      readonly id = keyProvider.id
      generateDataKey(...a: Parameters<typeof keyProvider.generateDataKey>) {
        return keyProvider.generateDataKey(...a)
      }
      unwrap(...a: Parameters<typeof keyProvider.unwrap>) {
        return keyProvider.unwrap(...a)
      }
      rewrap(...a: Parameters<typeof keyProvider.rewrap>) {
        return keyProvider.rewrap(...a)
      }
    }
    const callable = Object.assign(() => undefined, {
      id: keyProvider.id,
      generateDataKey: keyProvider.generateDataKey.bind(keyProvider),
      unwrap: keyProvider.unwrap.bind(keyProvider),
      rewrap: keyProvider.rewrap.bind(keyProvider),
    })
    for (const p of [new Wrapped(), new Proxy(keyProvider, {}), callable])
      expect(fieldEncryption({ schema, keyProvider: p }).plugin).toBeDefined()
  })

  it('well-formed options pass', () => {
    expect(
      fieldEncryption({ schema, keyProvider: [keyProvider], cache: { ttlMs: 1000 } }).plugin,
    ).toBeDefined()
    const db = new Kysely({ dialect: new PGliteDialect(newPGlite()) })
    expect(typeof fieldEncryptionOps({ schema, keyProvider, db }).status).toBe('function')
  })
})
