import { randomBytes } from 'node:crypto'
import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll } from 'vitest'
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
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, onlyTables, uniqueName } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { opsSchema } from './ops-schema.js'

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
  /**
   * Another ops instance on the same tables (another "machine"), with its own key cache; on `db`
   * (a Kysely of the test's own, e.g. a hooked dialect; the caller destroys it) or the plain one.
   */
  moreOps(options?: {
    cache?: KeyCacheOptions
    provider?: KeyProvider
    db?: Kysely<TestDB>
  }): FieldEncryptionOps
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
  const opened: FieldEncryptionOps[] = []
  const moreOps: OpsTestDb['moreOps'] = ({ cache, provider: p, db } = {}) => {
    const ops = fieldEncryptionOps({
      db: db ?? raw,
      schema,
      keyProvider: p ?? provider,
      keyTable,
      jobsTable,
      metadataTtlMs: ttlMs,
      // Small in tests: the waits are exercised with their own values where they are the subject.
      ttlMarginMs: options.ttlMarginMs ?? 20,
      ...(cache === undefined ? {} : { cache }),
    })
    opened.push(ops)
    return ops
  }
  const ops = moreOps({ cache: options.opsCache })
  let serial = 0
  return {
    backend,
    table,
    keyTable,
    jobsTable,
    schema,
    provider,
    encryption,
    app,
    raw,
    ops,
    ttlMs,
    moreOps,
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
      for (const t of [table, keyTable, jobsTable, `${jobsTable}_batches`]) {
        await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      }
      for (const o of opened) await o.close()
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
  let current: OpsTestDb | undefined
  beforeAll(async () => {
    current = await opsTestDb(backend, options)
    if (options.init !== false) await current.ops.init()
    if ((options.rows ?? 0) > 0) await current.insert(options.rows!)
  })
  afterAll(async () => {
    await current?.destroy()
  })
  return new Proxy({} as OpsTestDb, {
    get(_, prop) {
      if (current === undefined)
        throw new Error(`useOpsTestDb: ${String(prop)} read before the suite started`)
      return Reflect.get(current, prop)
    },
  })
}
