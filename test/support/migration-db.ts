import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  Kysely,
  type Migration,
  Migrator,
  sql,
} from 'kysely'
import {
  encrypted,
  encryptedSchema,
  type FieldEncryption,
  fieldEncryption,
  type KeyProvider,
  localKeyProvider,
  type MigrationPhase,
  type MigrationStep,
} from '../../src/index.js'
import { type FieldEncryptionOps, fieldEncryptionOps } from '../../src/ops.js'
import { type Backend, onlyTables, uniqueName } from './backends.js'
import { writeKfeConfig } from './cli-runner.js'
import { type ScanningDialect, scanningDialect } from './leak-scanner.js'
import { migrationSchema } from './migration-schema.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

/** A plaintext `users` table (unique email), the application on it in each phase, and the ops for a given phase. */
export interface MigrationDb {
  readonly backend: Backend
  readonly table: string
  readonly keyTable: string
  readonly jobsTable: string
  readonly provider: KeyProvider
  readonly kek: Buffer
  // biome-ignore lint/suspicious/noExplicitAny: the table changes shape through the phases.
  readonly raw: Kysely<any>
  /**
   * The application deployed in `phase`: the plugin over {@link migrationSchema} in that phase,
   * on the wrapped dialect (scanned for leaks). One per phase, made on first use, as a deploy.
   */
  // biome-ignore lint/suspicious/noExplicitAny: as above.
  app(phase: MigrationPhase): Kysely<any>
  /**
   * A new process of the application in `phase` (its startup check not yet run), as a rolling
   * deploy starts one beside the others.
   */
  // biome-ignore lint/suspicious/noExplicitAny: as above.
  newProcess(phase: MigrationPhase): Kysely<any>
  /** The application's `fieldEncryption` of `phase` (made with {@link MigrationDb.app}). */
  encryption(phase: MigrationPhase): FieldEncryption
  readonly scanner: ScanningDialect
  /** Emails that must not reach the database in plaintext from now on (checked by `scanner.hits()`). */
  readonly secrets: string[]
  /** The ops with the annotation in `phase` (on `db`, by default the raw view). */
  // biome-ignore lint/suspicious/noExplicitAny: as above.
  ops(phase: MigrationPhase, db?: Kysely<any>): FieldEncryptionOps
  /** Writes the migration file of `step` with the ops and runs it with Kysely's Migrator. */
  migrate(step: MigrationStep, phase: MigrationPhase): Promise<void>
  destroy(): Promise<void>
}

/** Options of {@link migrationDb}. */
export interface MigrationDbOptions {
  /**
   * The table's row context (`context` table option), e.g. `['org_id', 'id']`: the table then has
   * an `org_id` column too (`org<i % 3>`), and the ids are given explicitly.
   */
  readonly context?: readonly string[]
  /** Per-tenant keys (`keyScope` table option), e.g. `'org_id'`; with `context` only. */
  readonly keyScope?: string
}

/** Builds a {@link MigrationDb} with `rows` rows (`email` = `user<i>@x.io`, `id` = i + 1). */
export async function migrationDb(
  backend: Backend,
  rows: number,
  options: MigrationDbOptions = {},
): Promise<MigrationDb> {
  const context = options.context
  const tableOptions =
    context === undefined
      ? undefined
      : { context, ...(options.keyScope === undefined ? {} : { keyScope: options.keyScope }) }
  const table = uniqueName('mig_users')
  const keyTable = uniqueName('kfe_keys')
  const jobsTable = uniqueName('kfe_jobs')
  const kek = randomBytes(32)
  const provider = localKeyProvider({ id: 'local:mig', key: kek })
  const [appDialect, rawDialect] = backend.createDialectPair()
  // biome-ignore lint/suspicious/noExplicitAny: the table changes shape through the phases.
  const raw = new Kysely<any>({ dialect: ownMigrationLock(backend, rawDialect, table) })
  const secrets: string[] = []
  const scanner = scanningDialect(appDialect, () => secrets)
  // biome-ignore lint/suspicious/noExplicitAny: as above.
  const apps = new Map<MigrationPhase | number, { app: Kysely<any>; encryption: FieldEncryption }>()
  const deploy = (phase: MigrationPhase, fresh = false) => {
    let made = fresh ? undefined : apps.get(phase)
    if (made === undefined) {
      const encryption = fieldEncryption({
        schema: migrationSchema(table, phase, { encrypted, encryptedSchema }, tableOptions),
        keyProvider: provider,
        keyTable,
        metadataTtlMs: 50,
        autoCreateKeys: false,
        // The shared database holds other files' tables.
        verifySchema: onlyTables(table),
      })
      // Every deploy shares the scanned dialect (and so its pool): one record of what was sent.
      // biome-ignore lint/suspicious/noExplicitAny: as above.
      const app = new Kysely<any>({ dialect: encryption.wrap(scanner), plugins: [encryption.plugin] })
      made = { app, encryption }
      apps.set(fresh ? apps.size : phase, made)
    }
    return made
  }
  await raw.schema
    .createTable(table)
    .addColumn('id', backend.family === 'postgres' ? 'serial' : 'integer', (c) =>
      backend.family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('name', 'varchar(100)', (c) => c.notNull())
    .addColumn('email', 'varchar(200)', (c) => c.notNull().unique())
    .$call((b) => (context === undefined ? b : b.addColumn('org_id', 'varchar(20)', (c) => c.notNull())))
    .execute()
  for (let i = 0; i < rows; i += 1000) {
    await raw
      .insertInto(table)
      .values(
        Array.from({ length: Math.min(1000, rows - i) }, (_, j) =>
          context === undefined
            ? { name: `n${i + j}`, email: `user${i + j}@x.io` }
            : { id: i + j + 1, org_id: `org${(i + j) % 3}`, name: `n${i + j}`, email: `user${i + j}@x.io` },
        ),
      )
      .execute()
  }
  const opened: FieldEncryptionOps[] = []
  const dir = join(ROOT, 'test/.tmp-migrations', table)
  mkdirSync(dir, { recursive: true })
  // biome-ignore lint/suspicious/noExplicitAny: as above.
  const ops = (phase: MigrationPhase, db: Kysely<any> = raw) => {
    const o = fieldEncryptionOps({
      db,
      schema: migrationSchema(table, phase, { encrypted, encryptedSchema }, tableOptions),
      keyProvider: provider,
      keyTable,
      jobsTable,
      metadataTtlMs: 50,
    })
    opened.push(o)
    return o
  }
  let seq = 0
  return {
    backend,
    table,
    keyTable,
    jobsTable,
    provider,
    kek,
    raw,
    app: (phase) => deploy(phase).app,
    newProcess: (phase) => deploy(phase, true).app,
    encryption: (phase) => deploy(phase).encryption,
    scanner,
    secrets,
    ops,
    async migrate(step, phase) {
      const file = await ops(phase).migration(table, 'email', step)
      // Distinct, ordered names even within one millisecond.
      writeFileSync(join(dir, `${String(seq++).padStart(4, '0')}_${file.fileName}`), file.source)
      const migrator = new Migrator({
        db: raw,
        // Kysely's FileMigrationProvider imports with Node's own import(), which does not load .ts;
        // the same layout (every file of the folder, by name, exporting up and down) through vitest's.
        provider: {
          async getMigrations() {
            const out: Record<string, Migration> = {}
            for (const name of readdirSync(dir).sort())
              out[name.replace(/\.ts$/, '')] = (await import(join(dir, name))) as Migration
            return out
          },
        },
        migrationTableName: `${table}_migrations`,
        migrationLockTableName: `${table}_migrations_lock`,
        disableTransactions: file.ddl.outsideTransaction,
      })
      const { error, results } = await migrator.migrateToLatest()
      if (error !== undefined) throw error
      if (results?.some((r) => r.status !== 'Success')) throw new Error(JSON.stringify(results))
    },
    async destroy() {
      for (const o of opened) await o.close()
      for (const t of [
        table,
        keyTable,
        jobsTable,
        `${jobsTable}_batches`,
        `${table}_migrations`,
        `${table}_migrations_lock`,
      ])
        await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      // The deploys share one pool (or PGlite instance): the first destroy closes it.
      let first = true
      for (const { app, encryption } of apps.values()) {
        await encryption.close()
        await app.destroy().catch((e: unknown) => {
          if (first) throw e
        })
        first = false
      }
      // PGlite: both dialects share one instance, closed by the first.
      await raw.destroy().catch((e: unknown) => {
        if (backend.name !== 'pglite') throw e
      })
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** A `kfe.config.ts` for the CLI on a {@link MigrationDb} (PostgreSQL or MariaDB), in `phase`. */
export async function writeMigrationConfig(
  t: MigrationDb,
  phase: MigrationPhase,
): Promise<{ path: string; env: NodeJS.ProcessEnv }> {
  const path = join(ROOT, 'test/.tmp-migrations', `${t.table}_cli`, 'kfe.config.ts')
  await writeKfeConfig(path, {
    backend: t.backend,
    schemaModule: 'migration-schema.ts',
    schema: `migrationSchema(${JSON.stringify(t.table)}, ${JSON.stringify(phase)}, lib)`,
    keyProviders: ["lib.localKeyProvider({ id: 'local:mig', env: 'KFE_TEST_KEK' })"],
    keyTable: t.keyTable,
    jobsTable: t.jobsTable,
  })
  return { path, env: { KFE_TEST_KEK: t.kek.toString('hex') } }
}

/**
 * `dialect` whose Migrator lock is this table's own on PostgreSQL. Kysely takes one advisory lock
 * id for every migrator of a database: two test files migrating at once (one waiting for that lock
 * in a transaction, the other holding it while `create index concurrently` waits for every open
 * transaction) deadlock.
 *
 * Its introspector runs `getTables` again when it fails on a relation that does not exist: the
 * Migrator lists every table of the schema to find its own, and another test file may drop one of
 * them between the listing and the read of its columns (seen once in a CI run).
 */
function ownMigrationLock(backend: Backend, dialect: Dialect, table: string): Dialect {
  if (backend.name !== 'postgres') return dialect
  return {
    createDriver: () => dialect.createDriver(),
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createIntrospector: (db) => {
      const introspector = dialect.createIntrospector(db)
      return Object.assign(Object.create(introspector) as DatabaseIntrospector, {
        async getTables(options?: Parameters<DatabaseIntrospector['getTables']>[0]) {
          for (let attempt = 0; ; attempt++) {
            try {
              return await introspector.getTables(options)
            } catch (error) {
              if ((error as { code?: unknown }).code !== '42P01' || attempt >= 4) throw error
            }
          }
        },
      })
    },
    createAdapter: () => {
      const adapter = dialect.createAdapter()
      return Object.assign(Object.create(adapter) as DialectAdapter, {
        // biome-ignore lint/suspicious/noExplicitAny: the Migrator's own Kysely.
        async acquireMigrationLock(db: Kysely<any>) {
          await sql`select pg_advisory_lock(hashtext(${table}))`.execute(db)
        },
        // biome-ignore lint/suspicious/noExplicitAny: as above.
        async releaseMigrationLock(db: Kysely<any>) {
          await sql`select pg_advisory_unlock(hashtext(${table}))`.execute(db)
        },
      })
    },
  }
}
