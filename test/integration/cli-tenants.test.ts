import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type CliTestDb, cliTestDb } from '../support/cli-runner.js'

/**
 * `kfe` over a table with per-tenant keys, as a child process on PostgreSQL and MariaDB: init
 * --tenant, rotate --tenant (and its re-encryption), verify / status / retire --tenant, rotate
 * --all-tenants, shred (confirmation, --json, exit codes). Not on PGlite: there each child starts
 * its own PGlite on the directory (seconds of CPU per command), which made this file the longest
 * of `npm test`. The CLI on PGlite is run end to end by cli.test.ts, and the same per-tenant
 * operations on PGlite by tenant-rotation, tenant-jobs and tenant-shred.
 */
describe.concurrent.each(backends().filter((b) => b.name !== 'pglite'))(
  'kfe over per-tenant keys [$name]',
  { timeout: 600_000 },
  (backend: Backend) => {
    describe.runIf(backend.available).sequential('', () => {
      let t: CliTestDb
      beforeAll(async () => {
        t = await cliTestDb(backend, { tenants: true })
      }, 600_000)
      afterAll(async () => {
        await t?.destroy()
      })

      /** `n` rows of `tenant`, emails numbered from `from`. */
      const insert = (tenant: string, n: number, from = 0) =>
        t.session(async ({ app }) => {
          for (let i = 0; i < n; i++)
            await app
              .insertInto(t.table)
              .values({
                id: randomUUID(),
                tenant_id: tenant,
                name: 'o',
                email: `${tenant}${from + i}@x.io`,
                ssn: '123-45-6789',
              })
              .execute()
        })

      it('init --tenant, rotate --tenant (re-encrypting only its rows), verify / status / retire --tenant, rotate --all-tenants', async ({
        expect,
      }) => {
        const init = await t.kfe('init', '--tenant', 'acme,globex', '--json')
        expect(init.code).toBe(0)
        expect(init.json).toMatchObject({ created: 4 })
        await insert('acme', 3)
        await insert('globex', 2)
        const rotate = await t.kfe(
          'rotate',
          t.table,
          '--data',
          '--tenant',
          'acme',
          '--batch-size',
          '2',
          '--json',
        )
        expect(rotate.code).toBe(0)
        expect(rotate.json).toMatchObject({
          version: 2,
          state: 'active',
          reencrypt: { rows: 3, rewritten: 3, failed: 0, shredded: 0, remainingBatches: 0 },
        })
        const verify = await t.kfe('verify', t.table, '--tenant', 'acme', '--json')
        expect(verify.code).toBe(0)
        expect(verify.json).toMatchObject({ ok: true, rows: 3, dataVersions: { 2: 6 } })
        // Status of the tenant: every row on v2; v1 unused, to be retired (exit 2: needs attention).
        const status = await t.kfe('status', t.table, '--tenant', 'acme', '--exact', '--json')
        expect(status.code).toBe(2)
        expect(status.json).toMatchObject({ tables: [{ rows: 3, rowsByDataVersion: { 2: 3 } }] })
        const text = await t.kfe('status', t.table, '--tenant', 'acme', '--exact')
        expect(text.stderr + text.stdout).toContain(`kfe retire ${t.table} --tenant acme --data 1`)
        // globex's rows were not touched.
        expect((await t.kfe('verify', t.table, '--tenant', 'globex', '--json')).json).toMatchObject({
          ok: true,
          dataVersions: { 1: 4 },
        })
        const noTenant = await t.kfe('retire', t.table, '--data', '1')
        expect(noTenant.code).toBe(1)
        expect(noTenant.stderr).toContain('--tenant')
        const retire = await t.kfe('retire', t.table, '--tenant', 'acme', '--data', '1', '--json')
        expect(retire.code).toBe(0)
        expect(retire.json).toMatchObject({ retired: true, rows: 0 })
        // Every tenant's index key, then ONE re-encryption over the table.
        const all = await t.kfe('rotate', t.table, '--index', '--all-tenants', '--json')
        expect(all.code).toBe(0)
        const result = all.json as { tenants: { tenant: string; version: number }[]; reencrypt: unknown }
        expect(result.tenants.map((x) => [x.tenant, x.version]).sort()).toEqual([
          ['acme', 2],
          ['globex', 2],
        ])
        expect(result.reencrypt).toMatchObject({ rows: 5, rewritten: 5, failed: 0, remainingBatches: 0 })
        const after = await t.kfe('status', t.table, '--exact', '--json')
        expect(after.json).toMatchObject({
          tables: [{ rows: 5, tenants: { live: 2, destroyed: 0, rowsNotOnActive: 0, shreddedRows: 0 } }],
        })
        const both = await t.kfe('rotate', t.table, '--data', '--all-tenants', '--tenant', 'acme')
        expect(both.code).toBe(1)
      })

      it('shred --tenant asks for confirmation (refused without a terminal or with --json), --dry-run destroys nothing, --yes shreds; the jobs then count its rows apart', async ({
        expect,
      }) => {
        const refused = await t.kfe('shred', t.table, '--tenant', 'globex')
        expect(refused.code).toBe(1)
        expect(refused.stderr).toContain('--yes')
        expect(refused.stderr).toContain('[OPS_INVALID]')
        expect(refused.stderr).toContain('nothing was destroyed')
        const refusedJson = await t.kfe('shred', t.table, '--tenant', 'globex', '--json')
        expect(refusedJson.code).toBe(1)
        expect(refusedJson.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
        const dry = await t.kfe('shred', t.table, '--tenant', 'globex', '--dry-run', '--json')
        expect(dry.code).toBe(0)
        // data v1, index v1 and v2
        expect(dry.json).toMatchObject({ dryRun: true, destroyed: 3, alreadyDestroyed: 0 })
        expect((await t.kfe('verify', t.table, '--tenant', 'globex', '--json')).code).toBe(0)
        const shred = await t.kfe('shred', t.table, '--tenant', 'globex', '--yes', '--json')
        expect(shred.code).toBe(0)
        expect(shred.json).toMatchObject({
          dryRun: false,
          destroyed: 3,
          keyName: `${t.table}#tenant_id=globex`,
        })
        // Its rows: unreadable by design, counted apart; no job or verify fails for them.
        const verify = await t.kfe('verify', t.table, '--json')
        expect(verify.code).toBe(0)
        expect(verify.json).toMatchObject({ ok: true, failed: 0, shredded: 2 })
        const job = await t.kfe('reencrypt', t.table, '--all-tenants', '--json')
        expect(job.code).toBe(0)
        expect(job.json).toMatchObject({ failed: 0, shredded: 2, remainingBatches: 0 })
        const gone = await t.kfe('reencrypt', t.table, '--tenant', 'globex', '--json')
        expect(gone.code).toBe(1)
        expect(gone.stdout + gone.stderr).toContain('KEY_DESTROYED')
        const again = await t.kfe('shred', t.table, '--tenant', 'globex', '--yes', '--json')
        expect(again.json).toMatchObject({ destroyed: 0, alreadyDestroyed: 3 })
        const status = await t.kfe('status', t.table, '--exact', '--json')
        expect(status.json).toMatchObject({
          tables: [{ tenants: { live: 1, destroyed: 1, shreddedRows: 2 } }],
        })
      })

      it("reencrypt --tenant with --processes 2: the worker process joins that tenant's job, and no other", async ({
        expect,
      }) => {
        await insert('acme', 17, 3) // 20 rows of acme: 10 batches of 2
        const rotate = await t.kfe(
          'rotate',
          t.table,
          '--data',
          '--tenant',
          'acme',
          '--no-reencrypt',
          '--json',
        )
        expect(rotate.json).toMatchObject({ version: 3, state: 'active' })
        const run = await t.kfe(
          'reencrypt',
          t.table,
          '--tenant',
          'acme',
          '--batch-size',
          '2',
          '--processes',
          '2',
          // 3 rows/s each: this process alone would take 7 s, time for the worker process to start
          // (seconds on a loaded machine) and take part.
          '--max-rows-per-second',
          '6',
          '--json',
        )
        expect(run.code).toBe(0)
        expect(run.json).toMatchObject({
          processes: 2,
          processFailures: [],
          rows: 20,
          rewritten: 20,
          shredded: 0,
          remainingBatches: 0,
        })
        // Both processes did batches of acme's job.
        const workers = await t.db.raw
          .selectFrom(`${t.jobsTable}_batches`)
          .select('worker')
          .distinct()
          .where('job_id', '=', `reencrypt:${t.table}#tenant_id=acme`)
          .where('done', '=', 1)
          .execute()
        expect(workers).toHaveLength(2)
        const verify = await t.kfe('verify', t.table, '--tenant', 'acme', '--json')
        expect(verify.json).toMatchObject({ ok: true, rows: 20, dataVersions: { 3: 40 } })
      })
    })
  },
)
