import type { Kysely } from 'kysely'
import { ConfigError } from '../errors.js'
import type { KeyCacheOptions } from '../keys/key-cache.js'
import type { AuditSink, KeyProvider } from '../keys/key-provider.js'
import { KeyRing } from '../keys/key-ring.js'
import { KeyStore } from '../keys/key-store.js'
import { optionKeys } from '../option-keys.js'
import { checkSharedOptions } from '../options-check.js'
import { refuseAnnotatedKey } from '../schema/name-rules.js'
import { holdsCiphertext } from '../schema/sample-ciphertext.js'
import type { EncryptedSchema, TableInfo } from '../schema/schema.js'

/** Options of {@link createOpsContext} and `fieldEncryptionOps`. */
export interface OpsOptions {
  /**
   * A Kysely on the application's database through the PLAIN dialect (not `encryption.wrap(…)`,
   * whose fail-closed check refuses the ciphertext writes a job makes). Its pool needs one
   * connection per worker plus one.
   */
  // biome-ignore lint/suspicious/noExplicitAny: jobs name tables and columns at run time.
  readonly db: Kysely<any>
  /** The application's encrypted schema. */
  readonly schema: EncryptedSchema
  /** The KEK(s), in the same order as the application's `fieldEncryption({ keyProvider })`. */
  readonly keyProvider: KeyProvider | readonly KeyProvider[]
  /** The key table. @default 'kfe_keys' */
  readonly keyTable?: string
  /** The job table; its batches live in `<jobsTable>_batches`. @default 'kfe_jobs' */
  readonly jobsTable?: string
  /**
   * The application's key-metadata TTL (`fieldEncryption({ metadataTtlMs })`): `rotate` waits this
   * long between staging and activating, and again before re-encrypting. @default 30_000
   */
  readonly metadataTtlMs?: number
  /**
   * Added to every metadata-TTL wait (`rotate` before activating, `retire` after the successor's
   * activation): covers a write the application encrypted just before its metadata expired and
   * committed a little later. Both waits are measured by the database's clock, so no clock skew
   * between machines needs covering. @default 1000
   */
  readonly ttlMarginMs?: number
  /** Unwrapped-key cache of the jobs (same meaning as the application's). */
  readonly cache?: KeyCacheOptions
  /** One event per provider call. */
  readonly audit?: AuditSink
  /**
   * Primary-key column per physical table (a single column of integer or string type whose
   * values are unique and never NULL: checked before a job reads anything, by the catalog or a
   * scan of its values). Jobs page through a table by it. @default the schema's `primaryKey` table
   * option (itself `'id'` by default)
   */
  readonly primaryKeys?: Readonly<Record<string, string>>
}

/** What every op shares: the plain database, the key store and ring, the schema. @internal */
export interface OpsContext {
  // biome-ignore lint/suspicious/noExplicitAny: see OpsOptions.db
  readonly db: Kysely<any>
  readonly schema: EncryptedSchema
  readonly providers: readonly KeyProvider[]
  readonly store: KeyStore
  readonly ring: KeyRing
  readonly family: 'postgres' | 'mysql'
  readonly jobsTable: string
  readonly metadataTtlMs: number
  /** The unwrapped-key cache's TTL (`cache.ttlMs`): how long a job keeps its own copy of a key. */
  readonly cacheTtlMs: number
  /** See {@link OpsOptions.ttlMarginMs}. */
  readonly ttlMarginMs: number
  readonly audit: AuditSink | undefined
  /** The annotated table named `table` (physical or logical name). */
  table(table: string): TableInfo
  /** Its primary-key column. */
  primaryKey(table: TableInfo): string
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

/**
 * Builds the shared context: a key store and a key ring of their own on `db` (creation of keys
 * is explicit here: `init` and `rotate` make them, never a first read).
 * @throws ConfigError `CONFIG_INVALID` on no provider or a bad table or column name.
 */
export function createOpsContext(options: OpsOptions): OpsContext {
  checkSharedOptions(options, 'the operations', [
    ...optionKeys<OpsOptions>()([
      'db',
      'schema',
      'keyProvider',
      'keyTable',
      'jobsTable',
      'metadataTtlMs',
      'ttlMarginMs',
      'cache',
      'audit',
      'primaryKeys',
    ]),
    // A kfe.config's own keys, beside the operations' (the CLI hands the whole config over).
    'dialect',
    'kysely',
  ])
  // Not `instanceof`: the application's Kysely may be another copy of the module (ESM and CJS).
  if (typeof (options.db as { withoutPlugins?: unknown } | undefined)?.withoutPlugins !== 'function')
    throw new ConfigError('CONFIG_INVALID', 'the operations: option db must be a Kysely instance.')
  const providers = Array.isArray(options.keyProvider)
    ? [...(options.keyProvider as readonly KeyProvider[])]
    : [options.keyProvider as KeyProvider]
  const jobsTable = options.jobsTable ?? 'kfe_jobs'
  if (!IDENT.test(jobsTable))
    throw new ConfigError('CONFIG_INVALID', `Job table name '${jobsTable}' is not a plain SQL identifier.`)
  for (const [table, column] of Object.entries(options.primaryKeys ?? {})) {
    if (!IDENT.test(column))
      throw new ConfigError(
        'CONFIG_INVALID',
        `Primary key '${column}' of ${table} is not a plain identifier.`,
      )
  }
  // The jobs read and write raw column names: another plugin of the application's Kysely
  // (CamelCasePlugin renames `tax_id` to `taxId` in results) would make a column look NULL and be
  // skipped, and verify pass without reading it.
  const db = options.db.withoutPlugins()
  const store = new KeyStore(db, options.keyTable === undefined ? {} : { tableName: options.keyTable })
  const metadataTtlMs = options.metadataTtlMs ?? 30_000
  const ttlMarginMs = options.ttlMarginMs ?? 1000
  if (!Number.isFinite(ttlMarginMs) || ttlMarginMs < 0)
    throw new ConfigError('CONFIG_INVALID', `ttlMarginMs must be a number >= 0, got ${ttlMarginMs}.`)
  const ring = new KeyRing({
    store,
    providers,
    autoCreate: false,
    holdsCiphertext: (table) => holdsCiphertext(db, options.schema, table),
    metadataTtlMs,
    ...(options.cache === undefined ? {} : { cache: options.cache }),
    ...(options.audit === undefined ? {} : { audit: options.audit }),
  })
  return Object.freeze({
    db,
    schema: options.schema,
    providers: Object.freeze(providers),
    store,
    ring,
    family: store.family,
    jobsTable,
    metadataTtlMs,
    cacheTtlMs: options.cache?.ttlMs ?? 300_000,
    ttlMarginMs,
    audit: options.audit,
    table(name: string): TableInfo {
      const info = options.schema.tableNamed(name)
      if (info === undefined && options.schema.ambiguousTable(name)) {
        throw new ConfigError(
          'CONFIG_INVALID',
          `Table ${name} is annotated in several schemas: name it with its schema (e.g. app.${name}).`,
          { table: name },
        )
      }
      if (info === undefined) {
        throw new ConfigError('CONFIG_INVALID', `Table ${name} has no encrypted columns in the schema.`, {
          table: name,
        })
      }
      return info
    },
    primaryKey(table: TableInfo): string {
      const override = options.primaryKeys?.[table.physical]
      // encryptedSchema checked the table's own primary key; an override is checked here.
      if (override !== undefined) refuseAnnotatedKey(table, [override], `primaryKeys.${table.physical}`)
      const declared = override ?? table.primaryKey[0] ?? 'id'
      if (options.primaryKeys?.[table.physical] === undefined && table.primaryKey.length > 1) {
        throw new ConfigError(
          'CONFIG_INVALID',
          `${table.physical} has a composite primary key; the jobs page through one column: set primaryKeys.${table.physical} to a column whose values are unique and never NULL.`,
          { table: table.logical },
        )
      }
      return declared
    },
  })
}
