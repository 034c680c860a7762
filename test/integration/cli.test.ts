import { afterAll, beforeAll, describe, it } from 'vitest'
import { emailsById, startAppWriter } from '../support/app-writer.js'
import { type Backend, backends } from '../support/backends.js'
import { type CliTestDb, cliTestDb, insertRows } from '../support/cli-runner.js'
import { gateRowId, killAfterBatches } from '../support/kill-gate.js'

/**
 * `kfe` as a child process (the bin built once per run, see cliBuild), on every backend: PGlite in
 * a directory that each child opens in turn (one process at a time), so only the end-to-end flow;
 * PostgreSQL and MariaDB also run the refusals, kill -9, SIGTERM and workers cases.
 *
 * The backends run at once (each its own tables, or its own PGlite directory); the cases of one
 * backend run in order, on one table whose key versions each case moves on. Steps a case does not
 * test (activating the next data version) run in this process through the same operations.
 */
describe.concurrent.each(backends())(
  'kfe CLI end to end [$name]',
  { timeout: 600_000 },
  (backend: Backend) => {
    const server = backend.name !== 'pglite'
    describe.runIf(backend.available).sequential('', () => {
      let t: CliTestDb
      // The build and (PGlite) a new database directory, beside the other backends' setups: slow on a loaded machine.
      beforeAll(async () => {
        t = await cliTestDb(backend)
      }, 600_000)
      afterAll(async () => {
        await t?.destroy()
      })

      it('a command that fails before its first query prints its error and exits 1 (PGlite: it does not hang)', async ({
        expect,
      }) => {
        // A child that never exits fails this test by its timeout.
        const run = await t.kfe('verify', 'no_such_table', '--json')
        expect(run.code).toBe(1)
        expect(run.json).toMatchObject({ ok: false, error: { code: 'CONFIG_INVALID' } })
      }, 120_000)

      // The bin refuses these before it loads the config, so the backend plays no part: one
      // backend (PGlite, always here) runs them; the others would start ~17 more children each.
      it.runIf(backend.name === 'pglite')(
        'an option the command does not know, or a required argument left out, is refused before anything runs: a mistyped --dry-run writes nothing',
        async ({ expect }) => {
          const typo = await t.kfe('init', '--dryrun', '--json')
          expect(typo.code).toBe(1)
          expect(typo.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
          expect((typo.json as { error: { message: string } }).error.message).toContain('--dryrun')
          // An option before the command's name: citty would drop it and run the command without it.
          const before = await t.kfe('--dry-run', 'init', '--json')
          expect(before.code).toBe(1)
          expect(before.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
          // A word the command takes no place for (citty ignores it).
          const extra = await t.kfe('init', t.table, 'extra-word', '--json')
          expect(extra.code).toBe(1)
          expect(extra.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
          expect((extra.json as { error: { message: string } }).error.message).toContain('extra-word')
          // --data without its version.
          const noVersion = await t.kfe('retire', t.table, '--json', '--data=')
          expect(noVersion.code).toBe(1)
          expect(noVersion.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
          // With --json, an unknown or missing command is a JSON error, not the usage text.
          for (const args of [['frobnicate', '--json'], ['--json']]) {
            const none = await t.kfe(...args)
            expect(none.code).toBe(1)
            expect(none.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
          }
          // Without --json, an unknown command is a typed error too (\`kfe\` alone prints the usage).
          const unknown = await t.kfe('frobnicate')
          expect(unknown.code).toBe(1)
          expect(unknown.stderr).toContain('[OPS_INVALID] Unknown command frobnicate')
          // A required argument left out: a typed error (JSON with --json), not citty's usage text.
          for (const args of [
            ['verify', '--json'],
            ['rewrap', '--from', 'x', '--json'],
            ['migration', t.table, 'email', '--json'],
            ['shred', t.table, '--json'],
          ]) {
            const run = await t.kfe(...args)
            expect(run.code).toBe(1)
            expect(run.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
          }
          const noTable = await t.kfe('verify')
          expect(noTable.code).toBe(1)
          expect(noTable.stderr).toContain('[OPS_INVALID]')
          expect(noTable.stderr).toContain('<table>')
          // Nothing ran: init would have created the key table and two keys.
          const status = await t.kfe('status', t.table, '--json')
          expect(JSON.stringify(status.json)).not.toMatch(/"state":"active"/)
        },
      )

      it('init → insert → rotate --data → reencrypt → verify → status → retire', async ({ expect }) => {
        const init = await t.kfe('init', '--json')
        expect(init.code).toBe(0)
        expect(init.json).toMatchObject({ created: 2 })
        expect((await t.kfe('init')).stdout).toContain('0 keys created.')
        await t.session(({ app }) => insertRows(app, t.table, 250, 'a'))
        const dry = await t.kfe('rotate', t.table, '--data', '--dry-run', '--json')
        expect(dry.json).toMatchObject({ version: 2, dryRun: true })
        const rotate = await t.kfe('rotate', t.table, '--data', '--batch-size', '40', '--json')
        expect(rotate.code).toBe(0)
        expect(rotate.json).toMatchObject({
          version: 2,
          state: 'active',
          reencrypt: { rows: 250, rewritten: 250, failed: 0 },
        })
        // Not a TTY: one JSON line per progress step on stderr.
        const steps = rotate.stderr
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { type: string; phase: string })
        expect(steps.filter((s) => s.phase === 'batch')).toHaveLength(7)
        // A second pass finds every row on the active version.
        const again = await t.kfe('reencrypt', t.table, '--json')
        expect(again.code).toBe(0)
        expect(again.json).toMatchObject({ rows: 250, rewritten: 0, failed: 0, remainingBatches: 0 })
        const verify = await t.kfe('verify', t.table, '--json')
        expect(verify.code).toBe(0)
        expect(verify.json).toMatchObject({ ok: true, rows: 250, dataVersions: { 2: 500 } })
        const status = await t.kfe('status', t.table, '--exact', '--json')
        expect(status.code).toBe(2) // data version 1 can be retired
        expect(status.json).toMatchObject({
          needsAttention: true,
          tables: [{ rows: 250, rowsByDataVersion: { 2: 250 } }],
        })
        const retire = await t.kfe('retire', t.table, '--data', '1', '--json')
        expect(retire.code).toBe(0)
        expect(retire.json).toMatchObject({ retired: true, rows: 0 })
        const after = await t.kfe('status', t.table, '--exact')
        expect(after.code).toBe(0)
        expect(after.stdout).toContain('verdict: ok')
        // The application reads every row under the new version.
        const read = await t.session(({ app }) => app.selectFrom(t.table).select(['email']).execute())
        expect(read.map((r) => r.email).sort()).toEqual(
          Array.from({ length: 250 }, (_, i) => `a${i}@x.io`).sort(),
        )
      })

      it.runIf(server)(
        'refusals exit 1 with a typed code: retire with rows left, retire of the active version, a bad option',
        async ({ expect }) => {
          const rotate = await t.kfe('rotate', t.table, '--index', '--no-reencrypt', '--json')
          expect(rotate.json).toMatchObject({ version: 2, state: 'active' })
          expect((rotate.json as { reencrypt?: unknown }).reencrypt).toBeUndefined()
          const refused = await t.kfe('retire', t.table, '--index', '1', '--json')
          expect(refused.code).toBe(1)
          // The error's own fields too (docs/errors.md): the rows still on the version.
          expect(refused.json).toMatchObject({ ok: false, error: { code: 'RETIRE_REFUSED', rows: 250 } })
          const active = await t.kfe('retire', t.table, '--index', '2', '--json')
          expect(active.code).toBe(1)
          expect(active.json).toMatchObject({ error: { code: 'KEY_STATE_INVALID' } })
          const both = await t.kfe('rotate', t.table, '--data', '--index')
          expect(both.code).toBe(1)
          const dry = await t.kfe('reencrypt', t.table, '--dry-run', '--json')
          expect(dry.json).toMatchObject({ dryRun: true, wouldRewrite: 250 })
          expect((await t.kfe('reencrypt', t.table, '--json')).json).toMatchObject({ rewritten: 250 })
          expect((await t.kfe('retire', t.table, '--index', '1')).code).toBe(0)
        },
      )

      it.runIf(server)(
        'kill -9 of a reencrypt at a random batch, then a second run: verify passes and a concurrent writer lost nothing',
        async ({ expect }) => {
          const { app, raw } = t.db
          await insertRows(app, t.table, 550, 'b')
          await t.nextDataVersion()
          const model = await emailsById(app, t.table)
          const gate = {
            family: t.backend.family,
            table: t.table,
            batchSize: 10,
            batch: 2 + Math.floor(Math.random() * 20),
          }
          const gateId = await gateRowId(raw, gate)
          const writer = startAppWriter(app, t.table, model, {
            pauseMs: 5,
            prefix: 'w',
            avoid: new Set([gateId]),
          })
          let writes = 0
          try {
            const args = ['reencrypt', t.table, '--batch-size', '10']
            const left = await killAfterBatches(t, raw, t.jobsTable, { ...gate, gateId }, args, 'reencrypt:')
            expect(left).toBeGreaterThan(0)
            const second = await t.kfe('reencrypt', t.table, '--batch-size', '10', '--json')
            expect(second.code).toBe(0)
            expect(second.json).toMatchObject({ planned: false, remainingBatches: 0, failed: 0 })
          } finally {
            writes = await writer.stop()
          }
          expect(writes).toBeGreaterThan(10)
          const verify = await t.kfe('verify', t.table, '--json')
          expect(verify.code).toBe(0)
          const status = await t.kfe('status', t.table, '--exact', '--json')
          const rows = (
            status.json as { tables: Array<{ rows: number; rowsByDataVersion: Record<string, number> }> }
          ).tables[0]!
          expect(rows.rowsByDataVersion).toEqual({ 3: rows.rows })
          expect(await emailsById(app, t.table)).toEqual(model)
        },
      )

      it.runIf(server)(
        'SIGTERM stops a throttled reencrypt after its batch (exit 2, checkpoint saved); the next run finishes',
        async ({ expect }) => {
          await t.nextDataVersion()
          const child = t.spawnKfe('reencrypt', t.table, '--batch-size', '5', '--max-rows-per-second', '50')
          const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)))
          const jobId = `reencrypt:${t.table}`
          // The child's own progress (JSON lines on stderr, not a TTY): stop it after its second batch.
          await new Promise<void>((resolve) => {
            let seen = 0
            let buffered = ''
            child.stderr?.on('data', (chunk: Buffer) => {
              buffered += chunk.toString()
              const lines = buffered.split('\n')
              buffered = lines.pop() ?? ''
              for (const line of lines) if (line.includes('"phase":"batch"') && ++seen === 2) resolve()
            })
          })
          child.kill('SIGTERM')
          expect(await exited).toBe(2)
          const left = await t.db.raw
            .selectFrom(`${t.jobsTable}_batches`)
            .select((eb) => eb.fn.countAll().as('n'))
            .where('job_id', '=', jobId)
            .where('done', '=', 0)
            .executeTakeFirstOrThrow()
          expect(Number(left.n)).toBeGreaterThan(0)
          const status = await t.kfe('status', t.table, '--json')
          expect(status.code).toBe(2)
          expect(status.json).toMatchObject({ tables: [{ jobs: [{ id: jobId, state: 'running' }] }] })
          const rest = await t.kfe('reencrypt', t.table, '--batch-size', '50', '--json')
          expect(rest.code).toBe(0)
          expect(rest.json).toMatchObject({ planned: false, remainingBatches: 0 })
        },
      )

      it.runIf(server)(
        '--workers 4 in one process, and two processes at once, process every row once',
        async ({ expect }) => {
          await t.nextDataVersion()
          const [a, b] = await Promise.all([
            t.kfe('reencrypt', t.table, '--batch-size', '7', '--workers', '4', '--json'),
            t.kfe('reencrypt', t.table, '--batch-size', '7', '--json'),
          ])
          expect([a.code, b.code]).toEqual([0, 0])
          const ra = a.json as { rows: number; rewritten: number }
          const rb = b.json as { rows: number; rewritten: number }
          const total = (
            await t.db.raw
              .selectFrom(t.table)
              .select((eb) => eb.fn.countAll().as('n'))
              .executeTakeFirstOrThrow()
          ).n
          // Every row rewritten exactly once between the two processes. Rows *seen* may add up to
          // more: a process that starts after the other has finished (child start-up takes seconds
          // on a loaded machine) scans the table again and finds nothing left to rewrite.
          expect(ra.rewritten + rb.rewritten).toBe(Number(total))
          expect(ra.rows).toBeLessThanOrEqual(Number(total))
          expect(rb.rows).toBeLessThanOrEqual(Number(total))
          const verify = await t.kfe('verify', t.table, '--json')
          expect(verify.json).toMatchObject({ ok: true, dataVersions: { 5: Number(total) * 2 } })
        },
      )
    })
  },
)
