import type { Dialect, Kysely } from 'kysely'
import { OperationError } from '../errors.js'
import { optionKeys, refuseUnknownKeys } from '../option-keys.js'
import type { MigrationStep } from '../schema/migration-ddl.js'
import { createOpsContext, type OpsContext, type OpsOptions } from './context.js'
import { type EncryptColumnDryRun, type EncryptColumnOptions, encryptColumn } from './encrypt-column.js'
import { type InitOptions, type InitResult, init } from './init.js'
import type { JobResult } from './job-engine.js'
import { type MigrationFile, migration } from './migration.js'
import { type ReencryptDryRun, type ReencryptOptions, reencrypt } from './reencrypt.js'
import { type RetireOptions, type RetireResult, retire } from './retire.js'
import { type RewrapOptions, type RewrapResult, rewrap } from './rewrap.js'
import { type RotateOptions, type RotateResult, rotate } from './rotate.js'
import { type RotateTenantsResult, rotateTenants } from './rotate-tenants.js'
import { type ShredOptions, type ShredResult, shred } from './shred.js'
import { type StatusOptions, type StatusResult, status } from './status.js'
import { type VerifyOptions, type VerifyResult, verify } from './verify.js'
import { type VerifyColumnOptions, type VerifyColumnResult, verifyColumn } from './verify-column.js'

/**
 * The key and data operations of one database (DESIGN.md §5): what the `kfe` command line runs.
 * Every method takes an `AbortSignal` and an `onProgress` callback in its options.
 */
export interface FieldEncryptionOps {
  /** Creates the key and job tables and version 1 of every table's keys. See {@link init}. */
  init(options?: InitOptions): Promise<InitResult>
  /** Key versions, rows per version, jobs and a verdict per table. See {@link status}. */
  status(options?: StatusOptions): Promise<StatusResult>
  /** Stage, activate, then re-encrypt under a new data or index key. See {@link rotate}. */
  rotate(table: string, options: RotateOptions): Promise<RotateResult>
  /** Moves every row onto the active key versions (resumable, many workers). See {@link reencrypt}. */
  reencrypt(table: string, options?: ReencryptOptions): Promise<JobResult | ReencryptDryRun>
  /** Every row decrypts and every blind index matches. See {@link verify}. */
  verify(table: string, options?: VerifyOptions): Promise<VerifyResult>
  /**
   * Backfills a column under migration from plaintext: its encrypted value and blind indexes from
   * its plaintext column (resumable, many workers). See {@link encryptColumn}.
   */
  encryptColumn(
    table: string,
    column: string,
    options: EncryptColumnOptions & { readonly dryRun: true },
  ): Promise<EncryptColumnDryRun>
  encryptColumn(
    table: string,
    column: string,
    options?: EncryptColumnOptions & { readonly dryRun?: false },
  ): Promise<JobResult>
  encryptColumn(
    table: string,
    column: string,
    options?: EncryptColumnOptions,
  ): Promise<JobResult | EncryptColumnDryRun>
  /** A column under migration: every encrypted value equals its plaintext. See {@link verifyColumn}. */
  verifyColumn(table: string, column: string, options?: VerifyColumnOptions): Promise<VerifyColumnResult>
  /** The Kysely migration file of one step of a migration from plaintext. See {@link migration}. */
  migration(table: string, column: string, step: MigrationStep): Promise<MigrationFile>
  /** Retires a key version no row uses. See {@link retire}. */
  retire(table: string, options: RetireOptions): Promise<RetireResult>
  /** KEK rotation through `rewrapAll`. See {@link rewrap}. */
  rewrap(options: RewrapOptions): Promise<RewrapResult>
  /** Rotates the key of every tenant of a table with per-tenant keys. See {@link rotateTenants}. */
  rotateTenants(table: string, options: Omit<RotateOptions, 'tenant'>): Promise<RotateTenantsResult>
  /** Crypto-shredding: destroys every wrapping of one tenant's keys. See {@link shred}. */
  shred(table: string, options: ShredOptions): Promise<ShredResult>
  /** Zeroes the cached keys and closes the providers (not the database). */
  close(): Promise<void>
}

/**
 * The operations over the application's database and keys.
 *
 * @example
 * ```ts
 * import { fieldEncryptionOps } from 'kysely-field-encryption/ops'
 * const ops = fieldEncryptionOps({ db: plainDb, schema, keyProvider })
 * await ops.rotate('users', { purpose: 'data' })           // stage, wait TTL, activate, re-encrypt
 * await ops.reencrypt('users', { workers: 2, signal, onProgress: (p) => console.log(p) })
 * // per batch: select … from "kfe_jobs_batches" … for update skip locked;
 * //            update "users" set "email" = $1, … where "id" = $2 and "email" = $3  (compare-and-set)
 * ```
 */
export function fieldEncryptionOps(options: OpsOptions): FieldEncryptionOps {
  const ctx: OpsContext = createOpsContext(options)
  return Object.freeze({
    init: async (o?: InitOptions) => init(ctx, checked(o, 'init')),
    status: async (o?: StatusOptions) => status(ctx, checked(o, 'status')),
    rotate: async (table: string, o: RotateOptions) => rotate(ctx, table, checked(o, 'rotate')),
    reencrypt: async (table: string, o?: ReencryptOptions) => reencrypt(ctx, table, checked(o, 'reencrypt')),
    verify: async (table: string, o?: VerifyOptions) => verify(ctx, table, checked(o, 'verify')),
    // The overloads of FieldEncryptionOps type the result by `dryRun`.
    encryptColumn: (async (table: string, column: string, o?: EncryptColumnOptions) =>
      encryptColumn(ctx, table, column, checked(o, 'encryptColumn'))) as FieldEncryptionOps['encryptColumn'],
    verifyColumn: async (table: string, column: string, o?: VerifyColumnOptions) =>
      verifyColumn(ctx, table, column, checked(o, 'verifyColumn')),
    migration: (table: string, column: string, step: MigrationStep) => migration(ctx, table, column, step),
    retire: async (table: string, o: RetireOptions) => retire(ctx, table, checked(o, 'retire')),
    rewrap: async (o: RewrapOptions) => rewrap(ctx, checked(o, 'rewrap')),
    rotateTenants: async (table: string, o: Omit<RotateOptions, 'tenant'>) =>
      rotateTenants(ctx, table, checked(o, 'rotateTenants')),
    shred: async (table: string, o: ShredOptions) => shred(ctx, table, checked(o, 'shred')),
    close: () => ctx.ring.close(),
  })
}

const RUN = ['signal', 'onProgress'] as const
const JOB = [...RUN, 'batchSize', 'workers', 'maxRowsPerSecond', 'workerName', 'restart'] as const
/**
 * The option keys of each operation (a misspelt `dryRun` would run it for real), each list
 * checked by the compiler against the operation's options type.
 */
const OPTION_KEYS = {
  init: optionKeys<InitOptions>()([...RUN, 'tables', 'dryRun', 'tenants']),
  status: optionKeys<StatusOptions>()([...RUN, 'table', 'exact', 'sampleSize', 'staleJobMs', 'tenant']),
  rotate: optionKeys<RotateOptions>()([...JOB, 'purpose', 'activateLater', 'reencrypt', 'dryRun', 'tenant']),
  rotateTenants: optionKeys<Omit<RotateOptions, 'tenant'>>()([
    ...JOB,
    'purpose',
    'activateLater',
    'reencrypt',
    'dryRun',
  ]),
  reencrypt: optionKeys<ReencryptOptions>()([...JOB, 'joinOnly', 'dryRun', 'tenant']),
  verify: optionKeys<VerifyOptions>()([...RUN, 'pageSize', 'maxListed', 'tenant']),
  encryptColumn: optionKeys<EncryptColumnOptions>()([...JOB, 'joinOnly', 'dryRun', 'pageSize']),
  verifyColumn: optionKeys<VerifyColumnOptions>()([...RUN, 'pageSize', 'maxListed', 'tenant']),
  retire: optionKeys<RetireOptions>()([...RUN, 'purpose', 'version', 'force', 'dryRun', 'tenant']),
  rewrap: optionKeys<RewrapOptions>()([...RUN, 'from', 'to', 'keep', 'dryRun']),
  shred: optionKeys<ShredOptions>()([...RUN, 'tenant', 'dryRun']),
}

/**
 * An operation's options, checked before it runs: no key it does not know, and page sizes and
 * list lengths that are whole numbers (a `pageSize` of 0 made `verify` read no row and pass).
 * @throws OperationError `OPS_INVALID`
 */
function checked<O>(options: O, op: keyof typeof OPTION_KEYS): O {
  const refuse = (message: string) => new OperationError('OPS_INVALID', message)
  refuseUnknownKeys(options, OPTION_KEYS[op], `ops.${op}`, refuse)
  const o = (options ?? {}) as {
    pageSize?: unknown
    maxListed?: unknown
    sampleSize?: unknown
    purpose?: unknown
    version?: unknown
  }
  // A purpose or version misspelt looked like a key that does not exist ("run kfe init first").
  if (
    (op === 'rotate' || op === 'rotateTenants' || op === 'retire') &&
    o.purpose !== 'data' &&
    o.purpose !== 'index'
  )
    throw refuse(`ops.${op}: option purpose must be 'data' or 'index', got ${shown(o.purpose)}.`)
  if (
    op === 'retire' &&
    !(typeof o.version === 'number' && Number.isSafeInteger(o.version) && o.version >= 1)
  )
    throw refuse(
      `ops.retire: option version must be a key version (an integer of 1 or more), got ${shown(o.version)}.`,
    )
  for (const [key, min] of [
    ['pageSize', 1],
    ['maxListed', 0],
    ['sampleSize', 1],
  ] as const) {
    const value = o[key]
    if (value !== undefined && !(typeof value === 'number' && Number.isSafeInteger(value) && value >= min))
      throw refuse(`ops.${op}: option ${key} must be an integer of ${min} or more, got ${String(value)}.`)
  }
  return options
}

/** The `kfe` configuration file's default export (`kfe.config.ts`): see {@link defineConfig}. */
export interface KfeConfig extends Omit<OpsOptions, 'db'> {
  /** The application's dialect (not wrapped by `encryption.wrap`); `kfe` makes its own Kysely on it. */
  readonly dialect?: Dialect
  /** Or a Kysely instance on the plain dialect (the application's own, without the encryption wrapper). */
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  readonly kysely?: Kysely<any>
}

/**
 * Types a `kfe.config.ts` (the shape kysely-ctl's `kysely.config.ts` has, plus the schema and KEKs).
 *
 * @example
 * ```ts
 * // kfe.config.ts
 * import { defineConfig } from 'kysely-field-encryption/ops'
 * export default defineConfig({
 *   dialect: new PostgresDialect({ pool: new Pool({ connectionString: process.env.DATABASE_URL }) }),
 *   schema,                                   // the application's encryptedSchema(...)
 *   keyProvider: localKeyProvider({ env: 'KFE_KEK' }),
 * })
 * ```
 */
export function defineConfig(config: KfeConfig): KfeConfig {
  return config
}

/** A refused option value as the message shows it: a string quoted, anything else as written. */
function shown(value: unknown): string {
  return typeof value === 'string'
    ? JSON.stringify(value)
    : typeof value === 'bigint'
      ? `${value}n`
      : String(value)
}
