import { inspect } from 'node:util'
import { type Dialect, Kysely, type KyselyPlugin } from 'kysely'
import { ConfigError, KeyError } from './errors.js'
import { type ExplicitHelpers, explicitHelpers } from './explicit-helpers.js'
import type { KeyCacheOptions } from './keys/key-cache.js'
import type { AuditSink, KeyProvider } from './keys/key-provider.js'
import { type InitKeysResult, type KeyEvent, KeyRing, type KeyRingStats } from './keys/key-ring.js'
import { KeyStore } from './keys/key-store.js'
import { withoutClose } from './keys/provider-call.js'
import { optionKeys } from './option-keys.js'
import { checkSharedOptions } from './options-check.js'
import { BorrowingDriver } from './plugin/borrowing-driver.js'
import type { DecryptStats } from './plugin/decrypt-rows.js'
import { type EncryptingDriver, insideTransaction, wrapDialect } from './plugin/dialect-wrapper.js'
import { EncryptionPlugin } from './plugin/encryption-plugin.js'
import { MigratedColumns } from './plugin/migrated-columns.js'
import { PendingPlans } from './plugin/plan.js'
import type { SchemaGate } from './plugin/schema-gate.js'
import { startupGate } from './plugin/startup-gate.js'
import { UnwrappedReads } from './plugin/unwrapped-reads.js'
import { tenantKeyNameOf } from './schema/key-scope.js'
import { pluginView } from './schema/plugin-view.js'
import { holdsCiphertext } from './schema/sample-ciphertext.js'
import type { EncryptedSchema } from './schema/schema.js'
import { type VerifySchemaOptions, verifySchema } from './schema/verify-schema.js'

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
  /**
   * Most key names (tables, and tenants of `keyScope` tables) whose key versions are held at once;
   * the least recently used is read again from the key table when next needed (one query, no
   * provider call). Set it at least to the number of tenants a process serves at once. See
   * `KeyRingOptions.metadataMax`. @default 1000
   */
  readonly metadataMax?: number
  /** One event per key-provider call; never key bytes. */
  readonly audit?: AuditSink
  /**
   * Development mode: create version 1 of a table's keys on its first use. Off (the default),
   * keys are created only by {@link FieldEncryption.init} (`kfe init`), and a query on a table
   * without keys fails with `KEY_NOT_FOUND`. Even on, keys are never created for a table that
   * holds ciphertext or whose other keys are in the key store (`KEYS_MISSING`): that is a lost
   * key table, and fresh keys would hide it.
   * @default false
   */
  readonly autoCreateKeys?: boolean
  /**
   * Tables with per-tenant keys (`keyScope`): a tenant without keys gets them on its first write
   * (INSERT or UPDATE of an encrypted column, `encryption.encrypt`), after a check that none of
   * its rows holds ciphertext (`KEYS_MISSING` otherwise: its keys were lost, and fresh ones would
   * hide it), and outside a transaction only (inside one, `KEY_NOT_FOUND`: a rollback would
   * remove keys that already encrypted data). Reads and searches never create keys: a search for a tenant without keys fails
   * with `KEY_NOT_FOUND`. A tenant whose keys were destroyed (`kfe shred`) never gets new ones.
   * Costs, once per new tenant: one sampling query per encrypted column, two key generations
   * (one provider call each) and one insert into the key table. Off, tenants get keys from
   * `kfe init --tenant` or {@link FieldEncryption.initTenant} only.
   * @default false
   */
  readonly createTenantKeys?: boolean
  /**
   * Allows writing with an active key version lower than the highest this process has seen (a
   * deliberate rollback of a rotation). Off, writes are refused with `KEY_ROLLBACK`.
   * @default false
   */
  readonly allowKeyRollback?: boolean
  /** One event per change of a table's active key version seen by this process (rotation, rollback). */
  readonly onKeyEvent?: (event: KeyEvent) => void
  /**
   * Verify the schema against the live database (as {@link FieldEncryption.verifySchema}) once
   * per wrapped dialect, before the first query that writes (INSERT, UPDATE, DELETE, MERGE) or
   * needs keys; nothing is sent until it passes. A failure throws `SCHEMA_MISMATCH` listing every
   * problem and is not remembered: the next such query checks again. DDL, plain reads and raw
   * `sql` do not wait for it (migrations that create the tables run first).
   *
   * Costs, once per process and dialect: three catalog queries, plus one query of up to 8 rows per
   * table the schema does not annotate that has binary columns (`unannotatedTables: false` or a
   * filter skips those); nothing afterwards. `false` turns it off (then a misspelt table name in
   * the schema is not noticed: its plaintext is stored as it is).
   *
   * A schema with a column under migration from plaintext (`migration` option) also has the
   * database state checked at the same moment, whatever this option says (`checkMigrationState`:
   * `MIGRATION_PHASE_CONFLICT` when the database contradicts the deploy's phase); it costs three
   * catalog lookups and up to two `select … limit 1` per such column, which may scan the table.
   * @default true
   */
  readonly verifySchema?: boolean | VerifySchemaOptions
}

/** Counters, for dashboards and tests. No key material, no plaintext. */
export interface FieldEncryptionStats extends DecryptStats {
  readonly keys: KeyRingStats | undefined
}

/** What {@link fieldEncryption} returns: the plugin, the dialect wrapper, and explicit helpers for raw SQL. */
export interface FieldEncryption extends ExplicitHelpers {
  /** Add to `plugins` of `new Kysely(...)`. */
  readonly plugin: KyselyPlugin
  /** Wrap the dialect: `dialect: encryption.wrap(new PostgresDialect({ pool }))`. */
  wrap(dialect: Dialect): Dialect
  /**
   * Creates version 1 of the data and index keys of one tenant of a table with per-tenant keys
   * (`keyScope`), if it has none: what `kfe init --tenant` does. Idempotent. Refuses
   * (`KEYS_MISSING`) when the tenant's rows hold ciphertext (its keys were lost), and never
   * re-creates keys that were destroyed (`KEY_DESTROYED` on use).
   * @param db - a Kysely on the database (the application's wrapped one, or a plain one).
   * @param table - the table (physical or logical name).
   * @param tenant - the tenant: its key-scope column's value (string or integer).
   * @throws ConfigError `CONFIG_INVALID` when the table has no key scope; QueryRefusedError
   *   `TENANT_INVALID` for a tenant that cannot name keys; KeyError `KEYS_MISSING`, `KEY_STORE_ERROR`;
   *   KeyProviderError when a KEK fails, `UNWRAP_FAILED` when a new key's wrapping under a KEK does
   *   not unwrap to it (nothing is stored).
   * @example
   * ```ts
   * await encryption.initTenant(db, 'orders', 'acme')
   * // insert into "kfe_keys" … ('orders#tenant_id=acme', 'data', 1, …), ('orders#tenant_id=acme', 'index', 1, …)
   * ```
   */
  // biome-ignore lint/suspicious/noExplicitAny: any Kysely, whatever its DB type.
  initTenant(db: Kysely<any>, table: string, tenant: string | number | bigint): Promise<InitKeysResult>
  /**
   * Creates the key table if needed, and version 1 of the data and index keys of every table of
   * the schema that has none: the explicit step that creates keys (`kfe init` calls it).
   * Idempotent. Refuses (`KEYS_MISSING`), creating nothing for that table, when a table's keys
   * are missing but it holds ciphertext or the key store shows it was initialised.
   * @param db - a Kysely on the database (the application's wrapped one, or a plain one).
   * @returns the key versions created, and those that already existed.
   * @throws KeyError `KEYS_MISSING`, `KEY_STORE_ERROR`; KeyProviderError when a KEK fails,
   *   also `UNWRAP_FAILED` when a new key's wrapping under a KEK does not unwrap to it (nothing is
   *   stored for that table), or when an active key that was there already does not unwrap under
   *   the configured KEKs (another environment's key table, a KEK missing from the configuration)
   * @example
   * ```ts
   * const { created } = await encryption.init(db)
   * // create table if not exists "kfe_keys" (…); insert into "kfe_keys" … (users/data/v1, users/index/v1)
   * ```
   */
  // biome-ignore lint/suspicious/noExplicitAny: any Kysely, whatever its DB type.
  init(db: Kysely<any>): Promise<InitKeysResult>
  /**
   * Checks the live database against the schema: every annotated table exists, every encrypted
   * and blind-index column exists with a binary type (`bytea`; `varbinary`/`blob` on MySQL),
   * every unique blind index has a single-column UNIQUE index; no table outside the schema has
   * columns named like its blind-index columns or binary columns holding its ciphertext. The
   * wrapper runs it by itself (option `verifySchema`); call it from a deployment check.
   * @param db - a Kysely on the database (the application's wrapped one, or a plain one).
   * @throws SchemaMismatchError `SCHEMA_MISMATCH` listing every problem with the DDL that fixes it.
   * @example
   * ```ts
   * await encryption.verifySchema(db)
   * // SchemaMismatchError: … 1. Table user of the encrypted schema does not exist. Fix: create table "user" (…)
   * ```
   */
  // biome-ignore lint/suspicious/noExplicitAny: any Kysely, whatever its DB type.
  verifySchema(db: Kysely<any>): Promise<void>
  /** The key ring of the first wrapped dialect (available once a Kysely was created with `wrap`). */
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
 * @throws ConfigError `CONFIG_INVALID` when no key provider is given, or an option has the wrong shape
 */
export function fieldEncryption(options: FieldEncryptionOptions): FieldEncryption {
  checkSharedOptions(
    options,
    'fieldEncryption',
    optionKeys<FieldEncryptionOptions>()([
      'schema',
      'keyProvider',
      'keyTable',
      'cache',
      'metadataTtlMs',
      'metadataMax',
      'audit',
      'autoCreateKeys',
      'createTenantKeys',
      'allowKeyRollback',
      'onKeyEvent',
      'verifySchema',
    ]),
  )
  const providers = Array.isArray(options.keyProvider)
    ? [...options.keyProvider]
    : [options.keyProvider as KeyProvider]
  // Columns stored under another name (`storedAs`, a migration from plaintext): the plugin and
  // the wrapper see them under the column that holds the ciphertext (docs/migrating.md).
  const view = pluginView(options.schema)
  const migrated = new MigratedColumns(view)
  const plans = new PendingPlans()
  const stats: DecryptStats = { decrypted: 0, falsePositives: 0, plaintextReads: 0 }
  // The rings share the providers; the instance closes them once, in close().
  const shared = providers.map(withoutClose)
  // Tables with per-tenant keys have no table-wide keys: their tenants' keys are named per tenant.
  const logicalTables = [
    ...new Set(
      [...options.schema.tables.values()].filter((t) => t.keyScope === undefined).map((t) => t.logical),
    ),
  ]
  const keyTable = options.keyTable === undefined ? {} : { tableName: options.keyTable }
  /** One key ring per wrapped dialect: each reaches its own database with its own SQL. */
  const rings: KeyRing[] = []
  /** The schema check of each wrapped dialect, beside its ring. */
  const gates: SchemaGate[] = []

  const getRing = (): KeyRing => {
    const ring = rings[0]
    if (ring === undefined) {
      throw new ConfigError(
        'CONFIG_INVALID',
        'No key ring yet: create a Kysely with encryption.wrap(dialect) first.',
      )
    }
    return ring
  }
  const reads = new UnwrappedReads()
  const keyTableName = options.keyTable ?? 'kfe_keys'
  const verifyOptions: VerifySchemaOptions | undefined =
    options.verifySchema === false
      ? undefined
      : { ...(options.verifySchema === true ? {} : options.verifySchema), keyTable: keyTableName }
  const plugin = new EncryptionPlugin(
    view,
    plans,
    reads,
    verifyOptions === undefined ? undefined : 'pending',
    migrated,
  )

  const wrap = (dialect: Dialect): Dialect => {
    let driver: EncryptingDriver | undefined
    const storeDb = new Kysely<unknown>({
      dialect: {
        createAdapter: () => dialect.createAdapter(),
        createDriver: () => new BorrowingDriver(() => driver),
        createQueryCompiler: () => dialect.createQueryCompiler(),
        createIntrospector: (db) => dialect.createIntrospector(db),
      },
    })
    const store = new KeyStore(storeDb, keyTable)
    const autoCreate = options.autoCreateKeys ?? false
    let schemaReady: Promise<void> | undefined
    const ensureSchema = () => {
      schemaReady ??= store.ensureSchema().catch((error: unknown) => {
        schemaReady = undefined
        throw error
      })
      return schemaReady
    }
    // Development mode creates the key table too; otherwise only init() does.
    const storeWithSchema = !autoCreate
      ? store
      : new Proxy(store, {
          get(target, prop, receiver) {
            const value = Reflect.get(target, prop, receiver)
            if (typeof value !== 'function' || prop === 'ensureSchema') return value
            return async (...args: unknown[]) => {
              if (!insideTransaction()) await ensureSchema()
              // Not inside a transaction: MySQL would commit it at the DDL. Nor a read of a key
              // table that is not there, which would abort a PostgreSQL transaction.
              else if (schemaReady === undefined && !(await target.exists()))
                throw new KeyError(
                  'KEY_NOT_FOUND',
                  `The key table ${target.tableName} does not exist yet, and development mode (autoCreateKeys) creates it outside transactions only: run a first query outside a transaction, or \`kfe init\`.`,
                )
              return (value as (...a: unknown[]) => unknown).apply(target, args)
            }
          },
        })
    const ring = new KeyRing({
      store: storeWithSchema,
      providers: shared,
      ...(options.cache === undefined ? {} : { cache: options.cache }),
      ...(options.metadataTtlMs === undefined ? {} : { metadataTtlMs: options.metadataTtlMs }),
      ...(options.metadataMax === undefined ? {} : { metadataMax: options.metadataMax }),
      ...(options.audit === undefined ? {} : { audit: options.audit }),
      autoCreate,
      // Never inside a transaction: its rollback would remove keys that already encrypted data.
      createTenantKeys: options.createTenantKeys === true ? () => !insideTransaction() : false,
      // A transaction's snapshot may be older than the metadata TTL: used, never cached.
      readsInTransaction: insideTransaction,
      holdsCiphertext: (table) => holdsCiphertext(storeDb, options.schema, table),
      ...(options.allowKeyRollback === undefined ? {} : { allowRollback: options.allowKeyRollback }),
      ...(options.onKeyEvent === undefined ? {} : { onKeyEvent: options.onKeyEvent }),
    })
    rings.push(ring)
    const schemaGate = startupGate(storeDb, options.schema, verifyOptions, keyTableName)
    gates.push(schemaGate)
    return wrapDialect(dialect, {
      schema: view,
      migrated,
      plans,
      reads,
      ring: () => ring,
      stats,
      prepare: async () => {
        // One table after another: this runs on the transaction's connection, one query at a time.
        for (const table of logicalTables) {
          try {
            await ring.activeKey(table, 'data')
            await ring.activeKey(table, 'index')
          } catch {
            // Best effort: a transaction that touches only plain tables must not fail for a table
            // without keys, or a key provider that is down; the query that needs the keys loads
            // them again and fails, naming the cause.
          }
        }
      },
      onDriver: (d) => {
        driver = d
      },
      schemaGate,
    })
  }

  const init = async (
    // biome-ignore lint/suspicious/noExplicitAny: any Kysely, whatever its DB type.
    db: Kysely<any>,
    names: readonly string[] = logicalTables,
  ): Promise<InitKeysResult> => {
    refuseTransaction(db, 'init')
    const plain = db.withoutPlugins()
    const store = new KeyStore(plain, keyTable)
    await store.ensureSchema()
    const ring = new KeyRing({
      store,
      providers: shared,
      ...(options.audit === undefined ? {} : { audit: options.audit }),
      holdsCiphertext: (table) => holdsCiphertext(plain, options.schema, table),
    })
    try {
      return await ring.init(names)
    } finally {
      await ring.close()
      for (const r of rings) r.refresh()
    }
  }

  const encryption: FieldEncryption = {
    plugin,
    wrap,
    ...explicitHelpers(options.schema, getRing, () => gates[0]),
    init: (db) => init(db),
    initTenant: (db, table, tenant) => init(db, [tenantKeyNameOf(options.schema, table, tenant)]),
    async verifySchema(db) {
      await verifySchema(db, options.schema, { ...verifyOptions, keyTable: keyTableName })
    },
    keyRing: getRing,
    stats: () => ({ ...stats, keys: rings[0]?.stats() }),
    async close() {
      await Promise.all(rings.map((r) => r.close()))
      await Promise.allSettled(providers.map(async (p) => p.close?.()))
    },
  }
  Object.defineProperty(encryption, inspect.custom, { value: () => '[FieldEncryption]' })
  return Object.freeze(encryption)
}

/**
 * `init` and `initTenant` create keys and, the first time, the key table: refused on a Kysely
 * inside a transaction, whose rollback would remove keys that rows may already be written under
 * (the instance caches them), and which MySQL would commit at the table's DDL.
 * @throws ConfigError `CONFIG_INVALID`
 */
// biome-ignore lint/suspicious/noExplicitAny: any Kysely, whatever its DB type.
function refuseTransaction(db: Kysely<any>, what: string): void {
  if (db.isTransaction)
    throw new ConfigError(
      'CONFIG_INVALID',
      `encryption.${what} was given a transaction: keys must be created outside one (a rollback would remove keys that rows may already be encrypted under, and MySQL commits a transaction at the key table's DDL). Call it with the Kysely itself, before or after the transaction.`,
    )
}
