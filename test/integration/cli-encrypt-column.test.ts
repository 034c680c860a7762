import { execFile, spawn } from 'node:child_process'
import { readdirSync, readFileSync, rmSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type MigrationDb, migrationDb, writeMigrationConfig } from '../support/migration-db.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const urls = { postgres: inject('pgUrl'), mysql: inject('mysqlUrl') }

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly json: unknown
}

// The CLI runs as a child process: PGlite's in-memory database cannot be shared with it.
describe.each(backends().filter((b) => b.name !== 'pglite'))(
  'kfe migration, encrypt-column, verify, status [$name]',
  { timeout: 600_000 },
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      let t: MigrationDb
      let config: { path: string; env: NodeJS.ProcessEnv }
      const env = () => ({
        ...process.env,
        ...config.env,
        KFE_TEST_URL: (backend.family === 'postgres' ? urls.postgres : urls.mysql) ?? '',
      })
      const argv = (args: string[]) => [
        '--import',
        'tsx',
        join(ROOT, 'src/cli/bin.ts'),
        ...args,
        '--config',
        config.path,
      ]
      const kfe = (...args: string[]) =>
        new Promise<Run>((done) => {
          execFile(
            process.execPath,
            argv(args),
            { env: env(), cwd: ROOT, maxBuffer: 1 << 26 },
            (error, stdout) => {
              const e = error as (Error & { code?: unknown }) | null
              let json: unknown
              try {
                json = JSON.parse(stdout.trim().split('\n').at(-1) ?? '')
              } catch {
                json = undefined
              }
              done({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, stdout, json })
            },
          )
        })
      beforeAll(async () => {
        t = await migrationDb(backend, 600)
        config = writeMigrationConfig(t, 'dual-writing')
      })
      afterAll(async () => {
        await t?.destroy()
        rmSync(dirname(config.path), { recursive: true, force: true })
      })

      it('kfe migration --phase add writes a kysely-ctl migration file into the folder', async () => {
        const folder = join(dirname(config.path), 'migrations')
        const run = await kfe('migration', t.table, 'email', '--phase', 'add', '--folder', folder, '--json')
        expect(run.code).toBe(0)
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
        await t.migrate('add', 'added')
        expect((await kfe('init')).code).toBe(0)
      })

      it('kill -9 during encrypt-column, then a second run resumes: verify passes, status shows every row done', async () => {
        const before = await kfe('status', t.table, '--json')
        expect(before.code).toBe(2)
        expect(before.json).toMatchObject({
          tables: [
            {
              migrations: [{ column: 'email', phase: 'dual-writing', encryptedRows: 0, plaintextRows: 600 }],
            },
          ],
        })
        const child = spawn(
          process.execPath,
          argv(['encrypt-column', t.table, 'email', '--batch-size', '10']),
          {
            env: env(),
            cwd: ROOT,
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        )
        const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_c, signal) => r(signal)))
        const killAt = 3 + Math.floor(Math.random() * 20)
        const batches = t.raw.selectFrom(`${t.jobsTable}_batches`)
        for (;;) {
          const done = await batches
            .select((eb) => eb.fn.countAll().as('n'))
            .where('done', '=', 1)
            .executeTakeFirst()
            .catch(() => undefined)
          if (Number(done?.n ?? 0) >= killAt) break
          await new Promise((r) => setTimeout(r, 5))
        }
        child.kill('SIGKILL')
        expect(await exited).toBe('SIGKILL')
        const left = await batches
          .select((eb) => eb.fn.countAll().as('n'))
          .where('done', '=', 0)
          .executeTakeFirstOrThrow()
        expect(Number(left.n)).toBeGreaterThan(0)
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
          '--json',
        )
        expect(second.code).toBe(0)
        expect(second.json).toMatchObject({ planned: false, remainingBatches: 0, failed: 0 })
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
