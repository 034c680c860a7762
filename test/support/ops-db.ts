import { randomBytes } from 'node:crypto'
import { Kysely } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type EncryptedSchema,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  type KeyCacheOptions,
  type KeyProvider,
  localKeyProvider,
  OperationError,
} from '../../src/index.js'
import {
  type FieldEncryptionOps,
  fieldEncryptionOps,
  type OpsOptions,
  type RetireResult,
} from '../../src/ops.js'
import { type Backend, dropTables, onlyTables, uniqueName } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { opsSchema } from './ops-schema.js'
import { useSuiteFixture } from './suite-fixture.js'

/** What an ops instance opened beside a fixture's own takes over the fixture's options. */
export interface MoreOpsOptions {
  /** Its own key cache options (else the fixture's). */
  readonly cache?: KeyCacheOptions
  readonly provider?: KeyProvider
  /** A Kysely of the test's own (e.g. on a hooked dialect; the caller destroys it), else the fixture's plain one. */
  readonly db?: Kysely<TestDB>
  /**
   * Its own metadata TTL (else the fixture's): a long one makes "too early" certain however slow
   * the machine is.
   */
  readonly metadataTtlMs?: number
}

/** The tables of an ops fixture ({@link OpsTestDb}, tenant-fixture.ts) and what reaches them. */
export type OpsTables = Pick<
  OpsTestDb,
  'backend' | 'table' | 'keyTable' | 'jobsTable' | 'schema' | 'provider' | 'raw' | 'ttlMs'
>

/**
 * Ops instances on a fixture's tables (`raw`, its key provider and metadata TTL, `options` over
 * them), each another "machine" with its own key cache: `open` makes one with its own options over
 * those, `close` closes every one opened.
 */
export function opsOpener(
  tables: OpsTables,
  options: Partial<OpsOptions>,
): {
  open(options?: MoreOpsOptions): FieldEncryptionOps
  close(): Promise<void>
} {
  const base: OpsOptions = {
    db: tables.raw,
    schema: tables.schema,
    keyProvider: tables.provider,
    keyTable: tables.keyTable,
    jobsTable: tables.jobsTable,
    metadataTtlMs: tables.ttlMs,
    ...options,
  }
  const opened: FieldEncryptionOps[] = []
  return {
    open({ cache, provider, db, metadataTtlMs } = {}) {
      const ops = fieldEncryptionOps({
        ...base,
        db: db ?? base.db,
        keyProvider: provider ?? base.keyProvider,
        ...(cache === undefined ? {} : { cache }),
        ...(metadataTtlMs === undefined ? {} : { metadataTtlMs }),
      })
      opened.push(ops)
      return ops
    },
    async close() {
      for (const o of opened) await o.close()
    },
  }
}

/** A table with two encrypted, indexed columns, the application's Kysely on it, and the ops. */
export interface OpsTestDb {
  readonly backend: Backend
  readonly table: string
  readonly keyTable: string
  readonly jobsTable: string
  readonly schema: EncryptedSchema
  readonly provider: KeyProvider
  readonly encryption: FieldEncryption
  /** The application: wrapped dialect + plugin. */
  readonly app: Kysely<TestDB>
  /** A plain Kysely on the same database (what the ops use). */
  readonly raw: Kysely<TestDB>
  readonly ops: FieldEncryptionOps
  /** Metadata TTL of both the application and the ops. */
  readonly ttlMs: number
  /** Another ops instance on the same tables (another "machine"), with its own key cache. */
  moreOps(options?: MoreOpsOptions): FieldEncryptionOps
  /** Inserts `n` rows through the application; returns their ids. */
  insert(n: number, prefix?: string): Promise<number[]>
  destroy(): Promise<void>
}

/** Builds an {@link OpsTestDb}: `users` (id, name, email unique index, ssn 16-bit search index). */
export async function opsTestDb(
  backend: Backend,
  options: {
    provider?: KeyProvider
    ttlMs?: number
    ttlMarginMs?: number
    opsCache?: KeyCacheOptions
    /** A `bigint` primary key without a default: the test inserts its own ids. */
    bigintIds?: boolean
    /** Gives `email_bidx` a rotation slot column (`email_bidx_next`). */
    rotationSlot?: boolean
  } = {},
): Promise<OpsTestDb> {
  const table = uniqueName('ops_users')
  const keyTable = uniqueName('kfe_keys')
  const jobsTable = uniqueName('kfe_jobs')
  const ttlMs = options.ttlMs ?? 50
  const provider = options.provider ?? localKeyProvider({ id: 'local:test', key: randomBytes(32) })
  const schema = opsSchema(
    table,
    { encrypted, encryptedSchema },
    { rotationSlot: options.rotationSlot === true },
  )
  const encryption = fieldEncryption({
    schema,
    keyProvider: provider,
    keyTable,
    metadataTtlMs: ttlMs,
    autoCreateKeys: false,
    verifySchema: onlyTables(),
  })
  const [appDialect, rawDialect] = backend.createDialectPair()
  const app = new Kysely<TestDB>({ dialect: encryption.wrap(appDialect), plugins: [encryption.plugin] })
  const raw = new Kysely<TestDB>({ dialect: rawDialect })
  const family = backend.family
  await raw.schema
    .createTable(table)
    .addColumn(
      'id',
      options.bigintIds === true ? 'bigint' : family === 'postgres' ? 'serial' : 'integer',
      (c) =>
        family === 'postgres' || options.bigintIds === true ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('name', 'varchar(100)', (c) => c.notNull())
    .$call(addEncryptedColumns(schema, table, family))
    .execute()
  await createBlindIndexes(raw, schema, table)
  const tables: OpsTables = { backend, table, keyTable, jobsTable, schema, provider, raw, ttlMs }
  // Small in tests: the waits are exercised with their own values where they are the subject.
  const opened = opsOpener(tables, { ttlMarginMs: options.ttlMarginMs ?? 20 })
  let serial = 0
  return {
    ...tables,
    encryption,
    app,
    ops: opened.open({ cache: options.opsCache }),
    moreOps: opened.open,
    async insert(n, prefix = 'u') {
      const ids: number[] = []
      for (let i = 0; i < n; i += 100) {
        const values = Array.from({ length: Math.min(100, n - i) }, () => {
          serial++
          return {
            name: `${prefix}${serial}`,
            email: `${prefix}${serial}@x.io`,
            ssn: `123-45-${String(serial).padStart(4, '0')}`,
          }
        })
        await app.insertInto(table).values(values).execute()
      }
      const rows = await raw.selectFrom(table).select('id').orderBy('id').execute()
      ids.push(...rows.map((r) => Number(r.id)))
      return ids
    },
    async destroy() {
      await dropTables(raw, [table, keyTable, jobsTable, `${jobsTable}_batches`])
      await opened.close()
      await encryption.close()
      await app.destroy()
      if (backend.name !== 'pglite') await raw.destroy()
    },
  }
}

/**
 * The usual preamble of an ops suite: an {@link OpsTestDb} made before the suite's tests (keys
 * created by `init` and `rows` rows inserted through the application, unless told otherwise) and
 * destroyed after them. Read its fields inside tests and hooks only.
 */
export function useOpsTestDb(
  backend: Backend,
  options: Parameters<typeof opsTestDb>[1] & {
    /** Run `ops.init()` first. @default true */
    readonly init?: boolean
    /** Rows inserted after `init`. @default 0 */
    readonly rows?: number
  } = {},
): OpsTestDb {
  return useSuiteFixture(
    'useOpsTestDb',
    async () => {
      const t = await opsTestDb(backend, options)
      try {
        if (options.init !== false) await t.ops.init()
        if ((options.rows ?? 0) > 0) await t.insert(options.rows!)
      } catch (error) {
        await t.destroy()
        throw error
      }
      return t
    },
    (t) => t.destroy(),
  )
}

/**
 * `ops.retire`, once more after the wait it asks for when the active version is younger than the
 * metadata TTL plus margin (`RETIRE_TOO_EARLY`, as an operator retries): whether a test reaches the
 * retire before that moment depends on how fast the engine ran what came before.
 */
export async function retireWhenDue(
  ops: FieldEncryptionOps,
  table: string,
  options: Parameters<FieldEncryptionOps['retire']>[1],
): Promise<RetireResult> {
  try {
    return await ops.retire(table, options)
  } catch (error) {
    if (!(error instanceof OperationError) || error.code !== 'RETIRE_TOO_EARLY') throw error
    await new Promise((resolve) => setTimeout(resolve, (error.waitMs ?? 0) + 10))
    return ops.retire(table, options)
  }
}
