import { randomBytes } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { type Dialect, Kysely, sql } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { inject } from 'vitest'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, uniqueName } from './backends.js'
import type { TestDB } from './encrypted-db.js'
import { cliBuild, type KfeRunner, kfeRunner, ROOT } from './kfe-runner.js'
import { opsSchema, tenantSchema } from './ops-schema.js'
import { newPGlite } from './pglite.js'

export { type CliRun, cliBuild, type KfeRunner, kfeRunner } from './kfe-runner.js'

const TMP = join(ROOT, 'test/.tmp-cli')

/** The application's Kysely (wrapped dialect + plugin) and a plain one, on the CLI's database. */
export interface CliDb {
  readonly app: Kysely<TestDB>
  readonly raw: Kysely<TestDB>
}

/** A table, a `kfe.config.ts` for it, the application's Kysely on it, and a way to run `kfe`. */
export interface CliTestDb extends KfeRunner {
  readonly backend: Backend
  readonly table: string
  readonly jobsTable: string
  readonly encryption: FieldEncryption
  readonly configPath: string
  /**
   * The database, open for the whole test: PostgreSQL and MariaDB only (a PGlite directory is
   * opened by one process at a time; use {@link CliTestDb.session}).
   */
  readonly db: CliDb
  /**
   * The same operations in this process, on {@link CliTestDb.db} (PostgreSQL and MariaDB only):
   * for a test's setup steps that are not what it tests (another machine's `kfe`, in effect).
   */
  readonly ops: FieldEncryptionOps
  /**
   * The next data version, activated through {@link CliTestDb.ops} (PostgreSQL and MariaDB only);
   * the application reads its key table again.
   */
  nextDataVersion(): Promise<void>
  /**
   * Runs `fn` with the database open. On PGlite it opens the directory and closes it after `fn`,
   * so that the next `kfe` child can open it; on a server it is {@link CliTestDb.db}.
   */
  session<T>(fn: (db: CliDb) => Promise<T>): Promise<T>
  destroy(): Promise<void>
}

/** The `dialect` of a generated `kfe.config.ts`, from `KFE_TEST_URL` (a URL, or PGlite's directory). */
const CONFIG_DIALECT: Record<Backend['name'], string> = {
  postgres: `import { PostgresDialect } from 'kysely'
import pg from 'pg'
const dialect = new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.KFE_TEST_URL, max: 8 }) })`,
  mysql: `import { MysqlDialect } from 'kysely'
import { createPool } from 'mysql2'
const dialect = new MysqlDialect({ pool: createPool({ uri: process.env.KFE_TEST_URL, connectionLimit: 8 }) })`,
  pglite: `import { PGlite } from '@electric-sql/pglite'
import { PGliteDialect } from 'kysely-pglite-dialect'
const dialect = new PGliteDialect(new PGlite(process.env.KFE_TEST_URL))`,
}

/** What a generated `kfe.config.ts` holds besides its dialect. */
export interface KfeConfigSpec {
  readonly backend: Backend
  /** A module of test/support exporting the schema function (it must import no value of `src/`). */
  readonly schemaModule: string
  /** The schema expression over `schemas` (that module) and `lib` (the CLI build's library). */
  readonly schema: string
  /** Expressions of the key providers, over `lib` (the KEK from an environment variable). */
  readonly keyProviders: readonly string[]
  readonly keyTable: string
  readonly jobsTable: string
  /** @default 50 */
  readonly metadataTtlMs?: number
}

/**
 * Writes a `kfe.config.ts` whose library is the CLI's build (see {@link cliBuild}): the bin and
 * the config then share one copy of the library, as in an application that installed the package.
 * The dialect reads `KFE_TEST_URL` (a URL, or PGlite's directory).
 */
export async function writeKfeConfig(path: string, spec: KfeConfigSpec): Promise<void> {
  const dist = await cliBuild()
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(
    path,
    `${CONFIG_DIALECT[spec.backend.name]}
import * as lib from ${JSON.stringify(join(dist, 'index.js'))}
import { defineConfig } from ${JSON.stringify(join(dist, 'ops.js'))}
import * as schemas from ${JSON.stringify(join(ROOT, 'test/support', spec.schemaModule))}

export default defineConfig({
  dialect,
  schema: schemas.${spec.schema},
  keyProvider: [${spec.keyProviders.join(', ')}],
  keyTable: ${JSON.stringify(spec.keyTable)},
  jobsTable: ${JSON.stringify(spec.jobsTable)},
  metadataTtlMs: ${spec.metadataTtlMs ?? 50},
})
`,
  )
}

/**
 * Builds a {@link CliTestDb} on `backend`: for PostgreSQL and MariaDB a table in the test database;
 * for PGlite a database in a directory of its own, which each `kfe` child opens in turn.
 */
export async function cliTestDb(
  backend: Backend,
  options: {
    /** Gives `email_bidx` a rotation slot column (`email_bidx_next`). */
    readonly rotationSlot?: boolean
    /** A second KEK in the config (`local:cli2`, its key in `KFE_TEST_KEK2`), after `local:cli`. */
    readonly secondKek?: boolean
    /**
     * A table with per-tenant keys ({@link tenantSchema}): id varchar(36) (client UUIDs), tenant_id,
     * name; the application creates a tenant's keys on its first write.
     */
    readonly tenants?: boolean
  } = {},
): Promise<CliTestDb> {
  const table = uniqueName('cli_users')
  const keyTable = uniqueName('kfe_keys')
  const jobsTable = uniqueName('kfe_jobs')
  const kek = randomBytes(32).toString('hex')
  const dir = join(TMP, table)
  mkdirSync(dir, { recursive: true })
  const pglite = backend.name === 'pglite'
  const url = pglite
    ? join(dir, 'pgdata')
    : ((backend.family === 'postgres' ? inject('pgUrl') : inject('mysqlUrl')) ?? '')
  const configPath = join(dir, 'kfe.config.ts')
  await writeKfeConfig(configPath, {
    backend,
    schemaModule: 'ops-schema.ts',
    schema:
      options.tenants === true
        ? `tenantSchema(${JSON.stringify(table)}, lib)`
        : `opsSchema(${JSON.stringify(table)}, lib${options.rotationSlot === true ? ', { rotationSlot: true }' : ''})`,
    keyProviders: [
      "lib.localKeyProvider({ id: 'local:cli', env: 'KFE_TEST_KEK' })",
      ...(options.secondKek === true
        ? ["lib.localKeyProvider({ id: 'local:cli2', env: 'KFE_TEST_KEK2' })"]
        : []),
    ],
    keyTable,
    jobsTable,
  })
  const schema =
    options.tenants === true
      ? tenantSchema(table, { encrypted, encryptedSchema })
      : opsSchema(table, { encrypted, encryptedSchema }, options)
  const encryption = fieldEncryption({
    schema,
    keyProvider: localKeyProvider({ id: 'local:cli', key: Buffer.from(kek, 'hex') }),
    keyTable,
    metadataTtlMs: 50,
    autoCreateKeys: false,
    createTenantKeys: options.tenants === true,
    // Other files' tables share the database: only the annotated tables are checked.
    verifySchema: { unannotatedTables: false },
  })
  const open = (): CliDb => {
    const [appDialect, rawDialect]: [Dialect, Dialect] = pglite
      ? (() => {
          const instance = newPGlite(url)
          return [new PGliteDialect(instance), new PGliteDialect(instance)]
        })()
      : [backend.createDialect(), backend.createDialect()]
    return {
      app: new Kysely<TestDB>({ dialect: encryption.wrap(appDialect), plugins: [encryption.plugin] }),
      raw: new Kysely<TestDB>({ dialect: rawDialect }),
    }
  }
  // One PGlite instance under both: destroying the application's Kysely closes it.
  const close = async (db: CliDb) => {
    await db.app.destroy()
    if (!pglite) await db.raw.destroy()
  }
  const shared = pglite ? undefined : open()
  const ops =
    shared === undefined
      ? undefined
      : fieldEncryptionOps({
          db: shared.raw,
          schema,
          keyProvider: localKeyProvider({ id: 'local:cli', key: Buffer.from(kek, 'hex') }),
          keyTable,
          jobsTable,
          metadataTtlMs: 50,
        })
  const session = async <T>(fn: (db: CliDb) => Promise<T>): Promise<T> => {
    if (shared !== undefined) return fn(shared)
    const db = open()
    try {
      return await fn(db)
    } finally {
      await close(db)
    }
  }
  await session(async ({ raw }) => {
    if (options.tenants === true) {
      await raw.schema
        .createTable(table)
        .addColumn('id', 'varchar(36)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('name', 'varchar(100)', (c) => c.notNull())
        .$call(addEncryptedColumns(schema, table, backend.family))
        .execute()
      await createBlindIndexes(raw, schema, table)
      return
    }
    await raw.schema
      .createTable(table)
      .addColumn('id', backend.family === 'postgres' ? 'serial' : 'integer', (c) =>
        backend.family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
      )
      .addColumn('name', 'varchar(100)', (c) => c.notNull())
      .$call(addEncryptedColumns(schema, table, backend.family))
      .execute()
    await createBlindIndexes(raw, schema, table)
  })
  const runner = await kfeRunner(configPath, {
    KFE_TEST_URL: url,
    KFE_TEST_KEK: kek,
    ...(options.secondKek === true ? { KFE_TEST_KEK2: randomBytes(32).toString('hex') } : {}),
  })
  return {
    backend,
    table,
    jobsTable,
    encryption,
    configPath,
    get db(): CliDb {
      if (shared === undefined) throw new Error('PGlite: open the database with session()')
      return shared
    },
    get ops(): FieldEncryptionOps {
      if (ops === undefined) throw new Error("PGlite: the directory is the kfe children's")
      return ops
    },
    async nextDataVersion() {
      if (ops === undefined) throw new Error("PGlite: the directory is the kfe children's")
      await ops.rotate(table, { purpose: 'data', reencrypt: false })
      encryption.keyRing().refresh()
    },
    session,
    kfe: runner.kfe,
    spawnKfe: runner.spawnKfe,
    kfeWorker: runner.kfeWorker,
    async destroy() {
      await ops?.close()
      if (shared !== undefined) {
        for (const t of [table, keyTable, jobsTable, `${jobsTable}_batches`]) {
          await sql`drop table if exists ${sql.table(t)}`.execute(shared.raw)
        }
        await close(shared)
      }
      await encryption.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Inserts `n` rows through the application (`name`, `email` and `ssn` from `prefix` and a counter), 100 per statement. */
export async function insertRows(
  app: Kysely<TestDB>,
  table: string,
  n: number,
  prefix: string,
): Promise<void> {
  for (let i = 0; i < n; i += 100) {
    const values = Array.from({ length: Math.min(100, n - i) }, (_, j) => ({
      name: `${prefix}${i + j}`,
      email: `${prefix}${i + j}@x.io`,
      ssn: `123-45-${String(i + j).padStart(4, '0')}`,
    }))
    await app.insertInto(table).values(values).execute()
  }
}
