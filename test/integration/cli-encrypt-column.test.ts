import { readdirSync, readFileSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type KfeRunner, kfeRunner } from '../support/cli-runner.js'
import { gateRowId, killAfterBatches } from '../support/kill-gate.js'
import { type MigrationDb, migrationDb, writeMigrationConfig } from '../support/migration-db.js'

const urls = { postgres: inject('pgUrl'), mysql: inject('mysqlUrl') }

// The CLI runs as a child process (the bin built once per run, see cliBuild): PGlite's in-memory
// database cannot be shared with it.
describe.each(backends().filter((b) => b.name !== 'pglite'))(
  'kfe migration, encrypt-column, verify, status [$name]',
  { timeout: 600_000 },
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      let t: MigrationDb
      let configPath: string
      let kfe: KfeRunner['kfe']
      let spawnKfe: KfeRunner['spawnKfe']
      beforeAll(async () => {
        t = await migrationDb(backend, 600)
        const config = await writeMigrationConfig(t, 'dual-writing')
        configPath = config.path
        ;({ kfe, spawnKfe } = await kfeRunner(config.path, {
          ...config.env,
          KFE_TEST_URL: (backend.family === 'postgres' ? urls.postgres : urls.mysql) ?? '',
        }))
      }, 600_000)
      afterAll(async () => {
        await t?.destroy()
        if (configPath !== undefined) rmSync(dirname(configPath), { recursive: true, force: true })
      })

      it('kfe migration --phase add writes a kysely-ctl migration file into the folder', async () => {
        const folder = join(dirname(configPath), 'migrations')
        // --dry-run prints the file and writes nothing.
        const dry = await kfe(
          'migration',
          t.table,
          'email',
          '--phase',
          'add',
          '--folder',
          folder,
          '--dry-run',
          '--json',
        )
        expect(dry.code).toBe(0)
        expect(dry.json).toMatchObject({ dryRun: true, step: 'add' })
        expect((dry.json as { source: string }).source).toContain('export async function up(')
        expect(() => readdirSync(folder)).toThrow(/ENOENT/)
        const run = await kfe('migration', t.table, 'email', '--phase', 'add', '--folder', folder, '--json')
        expect(run.code).toBe(0)
        expect(run.json).toMatchObject({ dryRun: false, path: expect.stringContaining(folder) })
        const files = readdirSync(folder)
        expect(files).toEqual([expect.stringMatching(new RegExp(`^\\d{13}_${t.table}_email_add\\.ts$`))])
        const source = readFileSync(join(folder, files[0]!), 'utf8')
        expect(source).toContain('export async function up(db: Kysely<any>): Promise<void>')
        expect(source).toContain('export async function down(db: Kysely<any>): Promise<void>')
        expect(source).toContain(
          backend.family === 'postgres' ? 'create unique index concurrently' : 'algorithm=inplace lock=none',
        )
        const bad = await kfe('migration', t.table, 'email', '--phase', 'sideways', '--folder', folder)
        expect(bad.code).toBe(1)
        // A folder that cannot be written (a file is there): a typed error naming the path, not a database's.
        const notFolder = join(folder, files[0]!)
        const unwritable = await kfe(
          'migration',
          t.table,
          'email',
          '--phase',
          'add',
          '--folder',
          notFolder,
          '--json',
        )
        expect(unwritable.code).toBe(1)
        expect(unwritable.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
        expect((unwritable.json as { error: { message: string } }).error.message).toContain(notFolder)
        expect(readdirSync(folder)).toEqual(files)
        await t.migrate('add', 'added')
        expect((await kfe('init')).code).toBe(0)
      })

      it('kill -9 during encrypt-column, then a second run (two processes) resumes: verify passes, status shows every row done', async () => {
        const before = await kfe('status', t.table, '--json')
        expect(before.code).toBe(2)
        expect(before.json).toMatchObject({
          tables: [
            {
              migrations: [{ column: 'email', phase: 'dual-writing', encryptedRows: 0, plaintextRows: 600 }],
            },
          ],
        })
        // --dry-run counts the rows the backfill would write, and writes none.
        const dry = await kfe('encrypt-column', t.table, 'email', '--dry-run', '--json')
        expect(dry.code).toBe(0)
        expect(dry.json).toMatchObject({ dryRun: true, rows: 600, wouldRewrite: 600, failed: 0 })
        expect((await kfe('status', t.table, '--json')).json).toMatchObject({
          tables: [{ migrations: [{ encryptedRows: 0 }] }],
        })
        const gate = {
          family: backend.family,
          table: t.table,
          batchSize: 10,
          batch: 3 + Math.floor(Math.random() * 20),
        }
        const gateId = await gateRowId(t.raw, gate)
        const args = ['encrypt-column', t.table, 'email', '--batch-size', '10']
        const left = await killAfterBatches({ spawnKfe }, t.raw, t.jobsTable, { ...gate, gateId }, args)
        expect(left).toBeGreaterThan(0)
        const partial = await kfe('verify', t.table, '--json')
        expect(partial.code).toBe(1)
        expect(partial.json).toMatchObject({ ok: false, migrating: [{ missing: expect.any(Number) }] })
        expect(
          (partial.json as { migrating: Array<{ missing: number }> }).migrating[0]!.missing,
        ).toBeGreaterThan(0)
        const second = await kfe(
          'encrypt-column',
          t.table,
          'email',
          '--batch-size',
          '20',
          '--workers',
          '2',
          '--processes',
          '2',
          // 50 rows/s each: slow enough for the worker process (its start takes seconds on a loaded
          // machine) to take part.
          '--max-rows-per-second',
          '100',
          '--json',
        )
        expect(second.code).toBe(0)
        // Resumed here, and shared with a worker process started once this one had joined the job.
        expect(second.json).toMatchObject({
          planned: false,
          remainingBatches: 0,
          failed: 0,
          processes: 2,
          processFailures: [],
        })
        // Batches were done by three processes (`<host>:<pid>`, `#n` per worker): the killed
        // run's, and both of this run's.
        const workers = await t.raw
          .selectFrom(`${t.jobsTable}_batches`)
          .select('worker')
          .distinct()
          .where('job_id', '=', `encrypt-column:${t.table}.email`)
          .where('done', '=', 1)
          .where('worker', 'is not', null)
          .execute()
        const pids = new Set(workers.map((w) => String(w.worker).split(':').at(-1)!.split('#')[0]))
        expect(pids.size).toBe(3)
        const verify = await kfe('verify', t.table, '--json')
        expect(verify.code).toBe(0)
        expect(verify.json).toMatchObject({
          ok: true,
          migrating: [{ ok: true, equal: 600, missing: 0, failed: 0 }],
        })
        const text = await kfe('status', t.table)
        expect(text.stdout).toMatch(
          /column email → email_encrypted: phase dual-writing, 600\/600 rows encrypted \(100\.0%\), job done (\d+)\/\1 batches/,
        )
      })
    })
  },
)
