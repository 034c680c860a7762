import { randomBytes } from 'node:crypto'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { Kysely } from 'kysely'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { type Backend, backends, dropTables, uniqueName } from '../support/backends.js'
import { kfeRunner, writeKfeConfig } from '../support/cli-runner.js'
import type { TestDB } from '../support/encrypted-db.js'

const urls = { postgres: inject('pgUrl'), mysql: inject('mysqlUrl') }
const DIR = join(import.meta.dirname, '../.tmp-cli', uniqueName('cli_conn'))

/** `url` with its port, or its user, changed: a server that is not there, a role that does not exist. */
function broken(url: string, change: 'port' | 'user'): string {
  const u = new URL(url)
  if (change === 'port') u.port = '1'
  else u.username = 'kfe_no_such_user'
  return u.toString()
}

/**
 * A config whose database cannot be reached: `kfe` names it as a database error, keeps the
 * driver's own code apart (`code` holds only the codes of docs/errors.md), says to check the
 * connection, and exits 1. The config is never reached on PGlite (a directory, always there).
 */
describe.each(backends().filter((b) => b.name !== 'pglite'))(
  'kfe with an unreachable database [$name]',
  { timeout: 120_000 },
  (backend: Backend) => {
    const url = backend.family === 'postgres' ? urls.postgres : urls.mysql
    describe.runIf(backend.available && url !== undefined)('', () => {
      afterAll(() => rmSync(DIR, { recursive: true, force: true }))
      /** `kfe` run with a config in `dir` whose database is `databaseUrl`. */
      const kfeAt = async (dir: string, databaseUrl: string) => {
        const configPath = join(DIR, dir, 'kfe.config.ts')
        await writeKfeConfig(configPath, {
          backend,
          schemaModule: 'ops-schema.ts',
          schema: `opsSchema('cli_conn_users', lib)`,
          keyProviders: ["lib.localKeyProvider({ id: 'local:cli', env: 'KFE_TEST_KEK' })"],
          keyTable: 'kfe_conn_keys',
          jobsTable: 'kfe_conn_jobs',
        })
        const { kfe } = await kfeRunner(configPath, {
          KFE_TEST_URL: databaseUrl,
          KFE_TEST_KEK: randomBytes(32).toString('hex'),
        })
        return kfe
      }

      for (const change of ['port', 'user'] as const) {
        it(`a wrong ${change}: DATABASE_ERROR with the driver's code, exit 1`, async () => {
          const kfe = await kfeAt(`${backend.name}-${change}`, broken(url ?? '', change))
          const json = await kfe('status', '--json')
          expect(json.code).toBe(1)
          const error = (json.json as { ok: boolean; error: Record<string, unknown> }).error
          expect(json.json).toMatchObject({ ok: false, error: { code: 'DATABASE_ERROR' } })
          expect(error.driverCode).toEqual(expect.any(String))
          expect(error.driverCode).not.toBe('')
          const human = await kfe('status')
          expect(human.code).toBe(1)
          expect(human.stderr).toContain(`[DATABASE_ERROR ${String(error.driverCode)}]`)
          expect(human.stderr).toContain(
            'kfe could not connect: check the database connection its config gives',
          )
        })
      }

      // pg reports a server that refuses TLS without an error code.
      it.runIf(backend.family === 'postgres')(
        'TLS required of a server without it: DATABASE_ERROR (CONNECTION), exit 1, not ERROR',
        async () => {
          const kfe = await kfeAt(
            `${backend.name}-tls`,
            `${url}${(url ?? '').includes('?') ? '&' : '?'}sslmode=require`,
          )
          const json = await kfe('status', '--json')
          expect(json.code).toBe(1)
          expect(json.json).toMatchObject({
            ok: false,
            error: {
              code: 'DATABASE_ERROR',
              driverCode: 'CONNECTION',
              message: 'The server does not support SSL connections',
            },
          })
          const human = await kfe('status')
          expect(human.stderr).toContain('[DATABASE_ERROR CONNECTION]')
          expect(human.stderr).toContain('kfe could not connect')
        },
      )

      it.runIf(backend.name === 'postgres' && urls.mysql !== null)(
        "a PostgreSQL URL at MySQL's port (a server that does not speak PostgreSQL): DATABASE_ERROR (CONNECTION) with the hint, not ERROR",
        async () => {
          const mysqlAt = new URL(String(urls.mysql))
          const target = new URL(url ?? '')
          target.host = mysqlAt.host
          const kfe = await kfeAt(`${backend.name}-not-postgres`, target.toString())
          const json = await kfe('status', '--json')
          expect(json.code).toBe(1)
          expect(json.json).toMatchObject({
            ok: false,
            error: { code: 'DATABASE_ERROR', driverCode: 'CONNECTION' },
          })
          expect((await kfe('status')).stderr).toContain('kfe could not connect')
        },
      )

      it('kfe init of a schema table that is not in the database creates its keys and warns (text) or lists it (--json)', async () => {
        const table = uniqueName('cli_absent')
        const keyTable = uniqueName('kfe_absent_keys')
        const jobsTable = uniqueName('kfe_absent_jobs')
        const configPath = join(DIR, `${backend.name}-absent`, 'kfe.config.ts')
        await writeKfeConfig(configPath, {
          backend,
          schemaModule: 'ops-schema.ts',
          schema: `opsSchema(${JSON.stringify(table)}, lib)`,
          keyProviders: ["lib.localKeyProvider({ id: 'local:cli', env: 'KFE_TEST_KEK' })"],
          keyTable,
          jobsTable,
        })
        const { kfe } = await kfeRunner(configPath, {
          KFE_TEST_URL: url ?? '',
          KFE_TEST_KEK: randomBytes(32).toString('hex'),
        })
        const raw = new Kysely<TestDB>({ dialect: backend.createDialect() })
        try {
          // Before init too, verify and status name the missing table, with the problem's
          // fields in --json (they said "no active key: run kfe init", which made its keys).
          for (const args of [
            ['verify', table],
            ['status', table],
          ]) {
            const run = await kfe(...args, '--json')
            expect(run.code).toBe(1)
            expect(run.json).toMatchObject({
              ok: false,
              error: { code: 'SCHEMA_MISMATCH', problems: [{ kind: 'table-missing', table }] },
            })
          }
          // Over every table, status reports it among the others (exit 2: needs attention).
          const all = await kfe('status', '--json')
          expect(all.code).toBe(2)
          const tables = (all.json as { tables: { table: string; attention: string[] }[] }).tables
          expect(tables.find((x) => x.table === table)?.attention[0]).toContain(
            `table ${table} of the encrypted schema does not exist`,
          )
          const dry = await kfe('init', '--dry-run', '--json')
          expect(dry.code).toBe(0)
          expect(dry.json).toMatchObject({ created: 2, missingTables: [table] })
          const human = await kfe('init')
          expect(human.code).toBe(0)
          expect(human.stdout + human.stderr).toContain(
            `Table ${table} of the encrypted schema does not exist in this database`,
          )
          expect(human.stdout + human.stderr).toContain('2 keys created.')
        } finally {
          await dropTables(raw, [keyTable, jobsTable, `${jobsTable}_batches`])
          await raw.destroy()
        }
      })
    })
  },
)
