import { inspect } from 'node:util'
import { type Dialect, Kysely, type KyselyPlugin } from 'kysely'
import { ConfigError } from './errors.js'
import { decryptValue } from './fields/field-cipher.js'
import { readHeader } from './fields/format.js'
import type { KeyCacheOptions } from './keys/key-cache.js'
import type { AuditSink, KeyProvider } from './keys/key-provider.js'
import { KeyRing, type KeyRingStats } from './keys/key-ring.js'
import { KeyStore } from './keys/key-store.js'
import { BorrowingDriver } from './plugin/borrowing-driver.js'
import type { DecryptStats } from './plugin/decrypt-rows.js'
import { type EncryptingDriver, wrapDialect } from './plugin/dialect-wrapper.js'
import { EncryptionPlugin } from './plugin/encryption-plugin.js'
import { PendingPlans } from './plugin/plan.js'
import { encryptColumn, indexValue } from './plugin/resolve-values.js'
import { UnwrappedReads } from './plugin/unwrapped-reads.js'
import type { ColumnInfo, EncryptedSchema, IndexInfo } from './schema/schema.js'

/** Options of {@link fieldEncryption}. */
export interface FieldEncryptionOptions {
  /** Which columns are encrypted (`encryptedSchema`). */
  readonly schema: EncryptedSchema
  /**
   * The key-encrypting key(s). With several, the first generates new keys and every one wraps
   * them (availability, disaster recovery); unwrapping fails over in this order.
   */
  readonly keyProvider: KeyProvider | readonly KeyProvider[]
  /** Name of the key-store table, in the same database. @default 'kfe_keys' */
  readonly keyTable?: string
  /**
   * Unwrapped-key cache. Its `ttlMs` is also the revocation latency: a disabled KEK keeps
   * working in a running process until cached keys expire. @default 1000 keys, 5 min TTL, 15 min grace
   */
  readonly cache?: KeyCacheOptions
  /** How long key versions/states are cached (rotation must wait at least this). @default 30 s */
  readonly metadataTtlMs?: number
  /** One event per key-provider call; never key bytes. */
  readonly audit?: AuditSink
  /** Create version 1 of a table's keys on first use. @default true */
  readonly autoCreateKeys?: boolean
}

/** Counters, for dashboards and tests. No key material, no plaintext. */
export interface FieldEncryptionStats extends DecryptStats {
  readonly keys: KeyRingStats | undefined
}

/** What {@link fieldEncryption} returns: the plugin, the dialect wrapper, and explicit helpers for raw SQL. */
export interface FieldEncryption {
  /** Add to `plugins` of `new Kysely(...)`. */
  readonly plugin: KyselyPlugin
  /** Wrap the dialect: `dialect: encryption.wrap(new PostgresDialect({ pool }))`. */
  wrap(dialect: Dialect): Dialect
  /** The ciphertext of `value` for `table.column` (physical names), for raw `sql`. */
  encrypt(table: string, column: string, value: unknown): Promise<Buffer>
  /** Decrypts a ciphertext read with raw `sql` from `table.column`. */
  decrypt(table: string, column: string, ciphertext: Uint8Array): Promise<unknown>
  /**
   * Blind-index values of `value` for `table.column` (its first index, or `index`): one per live
   * index version, for `where email_bidx in (...)` in raw `sql`. The first is the active one, to write.
   */
  indexOf(table: string, column: string, value: unknown, index?: string): Promise<Buffer[]>
  /** The key ring (available once a Kysely was created with `wrap`). */
  keyRing(): KeyRing
  stats(): FieldEncryptionStats
  /** Wipes cached keys and closes providers. The application's Kysely is closed by `db.destroy()`. */
  close(): Promise<void>
}

/**
 * Creates the plugin and the dialect wrapper, which share one schema, one key ring and one cache.
 *
 * @example
 * ```ts
 * const encryption = fieldEncryption({ schema, keyProvider: localKeyProvider({ env: 'KFE_KEK' }) })
 * const db = new Kysely<DB>({ dialect: encryption.wrap(new PostgresDialect({ pool })), plugins: [encryption.plugin] })
 * await db.selectFrom('users').selectAll().where('email', '=', 'a@x.io').execute()
 * // select * from "users" where "email_bidx" in ($1)      -- $1 = HMAC of 'a@x.io'
 * ```
 * @throws ConfigError `CONFIG_INVALID` when no key provider is given
 */
export function fieldEncryption(options: FieldEncryptionOptions): FieldEncryption {
  const providers = Array.isArray(options.keyProvider)
    ? [...options.keyProvider]
    : [options.keyProvider as KeyProvider]
  if (providers.length === 0)
    throw new ConfigError('CONFIG_INVALID', 'fieldEncryption needs at least one keyProvider.')
  const plans = new PendingPlans()
  const stats: DecryptStats = { decrypted: 0, falsePositives: 0, plaintextReads: 0 }
  let driver: EncryptingDriver | undefined
  let ring: KeyRing | undefined
  let schemaReady: Promise<void> | undefined

  const getRing = (): KeyRing => {
    if (ring === undefined) {
      throw new ConfigError(
        'CONFIG_INVALID',
        'No key ring yet: create a Kysely with encryption.wrap(dialect) first.',
      )
    }
    return ring
  }
  const reads = new UnwrappedReads()
  const plugin = new EncryptionPlugin(options.schema, plans, reads)

  const wrap = (dialect: Dialect): Dialect => {
    if (ring === undefined) {
      const storeDb = new Kysely<unknown>({
        dialect: {
          createAdapter: () => dialect.createAdapter(),
          createDriver: () => new BorrowingDriver(() => driver),
          createQueryCompiler: () => dialect.createQueryCompiler(),
          createIntrospector: (db) => dialect.createIntrospector(db),
        },
      })
      const store = new KeyStore(
        storeDb,
        options.keyTable === undefined ? {} : { tableName: options.keyTable },
      )
      const ensureSchema = () => {
        schemaReady ??= store.ensureSchema().catch((error: unknown) => {
          schemaReady = undefined
          throw error
        })
        return schemaReady
      }
      const storeWithSchema = new Proxy(store, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver)
          if (typeof value !== 'function' || prop === 'ensureSchema') return value
          return async (...args: unknown[]) => {
            await ensureSchema()
            return (value as (...a: unknown[]) => unknown).apply(target, args)
          }
        },
      })
      ring = new KeyRing({
        store: storeWithSchema,
        providers,
        ...(options.cache === undefined ? {} : { cache: options.cache }),
        ...(options.metadataTtlMs === undefined ? {} : { metadataTtlMs: options.metadataTtlMs }),
        ...(options.audit === undefined ? {} : { audit: options.audit }),
        autoCreate: options.autoCreateKeys ?? true,
      })
    }
    return wrapDialect(dialect, {
      schema: options.schema,
      plans,
      reads,
      ring: getRing,
      stats,
      prepare: async () => {
        const r = getRing()
        await Promise.all(
          [...options.schema.tables.values()].map(async (t) => {
            await r.activeKey(t.logical, 'data')
            await r.activeKey(t.logical, 'index')
          }),
        )
      },
      onDriver: (d) => {
        driver = d
      },
    })
  }

  const column = (table: string, name: string): ColumnInfo => {
    const info = options.schema.table(table)?.column(name)
    if (info === undefined)
      throw new ConfigError('CONFIG_INVALID', `${table}.${name} is not an encrypted column of the schema.`)
    return info
  }

  const encryption: FieldEncryption = {
    plugin,
    wrap,
    async encrypt(table, name, value) {
      const info = column(table, name)
      return encryptColumn(await getRing().activeKey(info.table.logical, 'data'), info, value)
    },
    async decrypt(table, name, ciphertext) {
      const info = column(table, name)
      const where = { table: info.table.logical, column: info.logical }
      const { keyVersion } = readHeader(ciphertext, where)
      const key = await getRing().key({
        logicalTable: info.table.logical,
        purpose: 'data',
        version: keyVersion,
      })
      return decryptValue(info.spec.codec, ciphertext, key, where)
    },
    async indexOf(table, name, value, indexName) {
      const info = column(table, name)
      const spec = info.spec.indexes.find((s) => indexName === undefined || s.name === indexName)
      if (spec === undefined)
        throw new ConfigError(
          'CONFIG_INVALID',
          `${table}.${name} has no blind index${indexName === undefined ? '' : ` named ${indexName}`}.`,
        )
      const index: IndexInfo = info.table.indexColumn(spec.name)!
      const r = getRing()
      const active = await r.activeKey(info.table.logical, 'index')
      const all = await r.searchKeys(info.table.logical, 'index')
      const ordered = [active, ...all.filter((k) => k !== active)]
      return ordered.map((k) => indexValue(k, index, value))
    },
    keyRing: getRing,
    stats: () => ({ ...stats, keys: ring?.stats() }),
    async close() {
      await ring?.close()
    },
  }
  Object.defineProperty(encryption, inspect.custom, { value: () => '[FieldEncryption]' })
  return Object.freeze(encryption)
}
