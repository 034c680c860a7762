import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Kysely, sql } from 'kysely'
import {
  addEncryptedColumns,
  createBlindIndexes,
  type FieldEncryption,
  fieldEncryption,
  localKeyProvider,
} from '../../src/index.js'
import { type Backend, uniqueName } from './backends.js'
import { cliSchema } from './cli-schema.js'
import type { TestDB } from './encrypted-db.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

/** Result of one `kfe` run as a child process. */
export interface CliRun {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  /** The last stdout line parsed as JSON (the `--json` result). */
  readonly json: unknown
}

/** A table, a `kfe.config.ts` for it, the application's Kysely on it, and a way to run `kfe`. */
export interface CliTestDb {
  readonly table: string
  readonly jobsTable: string
  readonly app: Kysely<TestDB>
  readonly raw: Kysely<TestDB>
  readonly encryption: FieldEncryption
  readonly configPath: string
  /** Runs `kfe <args> --config <file>` to completion. */
  kfe(...args: string[]): Promise<CliRun>
  /** Starts `kfe <args> --config <file>` and returns the child. */
  spawnKfe(...args: string[]): ChildProcess
  destroy(): Promise<void>
}

/** Builds a {@link CliTestDb} on PostgreSQL or MariaDB (the CLI is another process: PGlite in memory cannot be shared). */
export async function cliTestDb(backend: Backend, url: string): Promise<CliTestDb> {
  const table = uniqueName('cli_users')
  const keyTable = uniqueName('kfe_keys')
  const jobsTable = uniqueName('kfe_jobs')
  const kek = randomBytes(32).toString('hex')
  const dir = join(ROOT, 'test/.tmp-cli', table)
  mkdirSync(dir, { recursive: true })
  const configPath = join(dir, 'kfe.config.ts')
  const dialect =
    backend.family === 'postgres'
      ? `import pg from 'pg'\nconst dialect = new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.KFE_TEST_URL, max: 8 }) })`
      : `import { createPool } from 'mysql2'\nconst dialect = new MysqlDialect({ pool: createPool({ uri: process.env.KFE_TEST_URL, connectionLimit: 8 }) })`
  writeFileSync(
    configPath,
    `import { MysqlDialect, PostgresDialect } from 'kysely'
${dialect}
import { localKeyProvider } from '../../../src/index.ts'
import { defineConfig } from '../../../src/ops.ts'
import { cliSchema } from '../../support/cli-schema.ts'

export default defineConfig({
  dialect,
  schema: cliSchema(${JSON.stringify(table)}),
  keyProvider: localKeyProvider({ id: 'local:cli', env: 'KFE_TEST_KEK' }),
  keyTable: ${JSON.stringify(keyTable)},
  jobsTable: ${JSON.stringify(jobsTable)},
  metadataTtlMs: 50,
})
`,
  )
  const schema = cliSchema(table)
  const encryption = fieldEncryption({
    schema,
    keyProvider: localKeyProvider({ id: 'local:cli', key: Buffer.from(kek, 'hex') }),
    keyTable,
    metadataTtlMs: 50,
    autoCreateKeys: false,
    // Other files' tables share the database: only the annotated tables are checked.
    verifySchema: { unannotatedTables: false },
  })
  const app = new Kysely<TestDB>({
    dialect: encryption.wrap(backend.createDialect()),
    plugins: [encryption.plugin],
  })
  const raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
  await raw.schema
    .createTable(table)
    .addColumn('id', backend.family === 'postgres' ? 'serial' : 'integer', (c) =>
      backend.family === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
    )
    .addColumn('name', 'varchar(100)', (c) => c.notNull())
    .$call(addEncryptedColumns(schema, table, backend.family))
    .execute()
  await createBlindIndexes(raw, schema, table)
  const env = { ...process.env, KFE_TEST_URL: url, KFE_TEST_KEK: kek, NO_COLOR: '1' }
  const argv = (args: string[]) => [
    '--import',
    'tsx',
    join(ROOT, 'src/cli/bin.ts'),
    ...args,
    '--config',
    configPath,
  ]
  return {
    table,
    jobsTable,
    app,
    raw,
    encryption,
    configPath,
    kfe: (...args) =>
      new Promise((done) => {
        execFile(
          process.execPath,
          argv(args),
          { env, cwd: ROOT, maxBuffer: 64 * 1024 * 1024 },
          (error, stdout, stderr) => {
            const e = error as (Error & { code?: unknown; signal?: NodeJS.Signals }) | null
            const lines = stdout.trim().split('\n')
            let json: unknown
            try {
              json = JSON.parse(lines.at(-1) ?? '')
            } catch {
              json = undefined
            }
            done({
              code: e === null ? 0 : typeof e.code === 'number' ? e.code : null,
              signal: e?.signal ?? null,
              stdout,
              stderr,
              json,
            })
          },
        )
      }),
    spawnKfe: (...args) =>
      spawn(process.execPath, argv(args), { env, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }),
    async destroy() {
      for (const t of [table, keyTable, jobsTable, `${jobsTable}_batches`]) {
        await sql`drop table if exists ${sql.table(t)}`.execute(raw)
      }
      await encryption.close()
      await app.destroy()
      await raw.destroy()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
