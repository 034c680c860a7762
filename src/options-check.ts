import { ConfigError } from './errors.js'
import { isKekId, KEK_ID_RULE } from './keys/kek-id.js'
import { KEY_CACHE_OPTION_KEYS } from './keys/key-cache-options.js'
import { refuseUnknownKeys } from './option-keys.js'

/**
 * The options `fieldEncryption` and `fieldEncryptionOps` share, checked for their shape before
 * anything uses them: a `kfe.config.js` (or an application without TypeScript) reaches them
 * unchecked by a compiler, and a wrong shape would otherwise fail later, at the first query or
 * key call, as an untyped `TypeError`. The values' own rules (names, bounds) are checked where
 * they are used, as before.
 *
 * @param options - The options as given.
 * @param what - Who is configured, for the message (`fieldEncryption`, `the operations`).
 * @param known - The option keys the caller takes: any other is refused (a misspelt one would be
 *   dropped, its default taken).
 * @throws ConfigError `CONFIG_INVALID` naming the option and what it must be
 */
export function checkSharedOptions(options: unknown, what: string, known: readonly string[]): void {
  if (!isObject(options)) invalid(what, 'options', 'an object')
  const o = options as Record<string, unknown>
  const schema = o.schema as { table?: unknown; tables?: { get?: unknown } } | undefined
  if (!isObject(schema) || typeof schema.table !== 'function' || typeof schema.tables?.get !== 'function')
    invalid(what, 'schema', 'the result of encryptedSchema(…)')
  const providers = Array.isArray(o.keyProvider) ? o.keyProvider : [o.keyProvider]
  if (providers.length === 0) invalid(what, 'keyProvider', 'at least one key provider')
  providers.forEach((p, i) => {
    const name = Array.isArray(o.keyProvider) ? `keyProvider[${i}]` : 'keyProvider'
    if (!isKeyProvider(p))
      invalid(
        what,
        name,
        'a key provider (localKeyProvider, awsKmsKeyProvider, pkcs11KeyProvider, or an object with a string id and generateDataKey, unwrap and rewrap functions)',
      )
    // Its id is stored beside each wrapping and named in errors (not echoed here).
    if (!isKekId((p as { id: unknown }).id)) invalid(what, `${name}.id`, KEK_ID_RULE)
  })
  for (const key of ['keyTable', 'jobsTable'])
    if (o[key] !== undefined && typeof o[key] !== 'string') invalid(what, key, 'a table name')
  if (o.primaryKeys !== undefined && !isObject(o.primaryKeys))
    invalid(what, 'primaryKeys', "an object of table: column ({ users: 'user_id' })")
  if (o.cache !== undefined) {
    if (!isObject(o.cache))
      invalid(what, 'cache', 'an object ({ max, ttlMs, graceMs, outageRetryMs, unwrapTimeoutMs })')
    refuseUnknownKeys(o.cache, KEY_CACHE_OPTION_KEYS, `${what}: cache`)
    const cache = o.cache as Record<string, unknown>
    for (const key of ['max', 'ttlMs', 'graceMs', 'outageRetryMs', 'unwrapTimeoutMs'])
      if (cache[key] !== undefined && typeof cache[key] !== 'number')
        invalid(what, `cache.${key}`, 'a number')
    if (cache.now !== undefined && typeof cache.now !== 'function') invalid(what, 'cache.now', 'a function')
  }
  for (const key of ['metadataTtlMs', 'metadataMax'])
    if (o[key] !== undefined && typeof o[key] !== 'number') invalid(what, key, 'a number')
  for (const key of ['autoCreateKeys', 'createTenantKeys', 'allowKeyRollback'])
    if (o[key] !== undefined && typeof o[key] !== 'boolean') invalid(what, key, 'true or false')
  for (const key of ['audit', 'onKeyEvent'])
    if (o[key] !== undefined && typeof o[key] !== 'function') invalid(what, key, 'a function')
  if (o.verifySchema !== undefined && typeof o.verifySchema !== 'boolean' && !isObject(o.verifySchema))
    invalid(what, 'verifySchema', 'true, false or an object')
  refuseUnknownKeys(o.verifySchema, ['unannotatedTables', 'keyTable'], `${what}: verifySchema`)
  // After the shapes: a known option of the wrong shape is named as such.
  refuseUnknownKeys(options, known, what)
}

/** An object, not an array (a list where one options object is meant is a mistake too). */
function isObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isKeyProvider(p: unknown): boolean {
  if (!isObject(p) && typeof p !== 'function') return false
  const k = p as Record<string, unknown>
  return (
    typeof k.id === 'string' &&
    typeof k.generateDataKey === 'function' &&
    typeof k.unwrap === 'function' &&
    typeof k.rewrap === 'function'
  )
}

function invalid(what: string, option: string, must: string): never {
  throw new ConfigError('CONFIG_INVALID', `${what}: option ${option} must be ${must}.`)
}
