import { readFileSync, writeFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type CliTestDb, cliTestDb } from '../support/cli-runner.js'

// The CLI runs as a child process: PGlite's in-memory database cannot be shared with it.
describe.each(backends().filter((b) => b.name !== 'pglite'))(
  'kfe rotate interrupted [$name]',
  { timeout: 120_000 },
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      let t: CliTestDb
      beforeAll(async () => {
        t = await cliTestDb(backend)
        // A metadata TTL long enough to interrupt the wait.
        const config = readFileSync(t.configPath, 'utf8')
        writeFileSync(t.configPath, config.replace('metadataTtlMs: 50,', 'metadataTtlMs: 60_000,'))
        expect((await t.kfe('init')).code).toBe(0)
      })
      afterAll(async () => {
        await t?.destroy()
      })

      it('SIGINT during the metadata-TTL wait exits 2 and says what is left; status exits 2', async () => {
        const child = t.spawnKfe('rotate', t.table, '--data', '--json')
        let stdout = ''
        let stderr = ''
        child.stdout?.on('data', (d: Buffer) => {
          stdout += d.toString()
        })
        const waiting = new Promise<void>((resolve) => {
          child.stderr?.on('data', (d: Buffer) => {
            stderr += d.toString()
            if (stderr.includes('"phase":"waiting for metadata TTL"')) resolve()
          })
        })
        const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
        await waiting
        child.kill('SIGINT')
        expect(await exited).toBe(2)
        const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>
        expect(result).toMatchObject({ version: 2, state: 'staged', interrupted: true })
        expect(result.left).toContain('version 2 is staged, not active')
        const status = await t.kfe('status', t.table, '--exact', '--json')
        expect(status.code).toBe(2)
        expect(JSON.stringify(status.json)).toContain('data version 2 is staged')
      })
    })
  },
)

/**
 * The CLI's switches that no other file runs end to end: `rotate --activate-later` and its resume,
 * `status` per rotation slot (text and `--json`), `retire --force` and `--dry-run`, `rewrap`.
 */
describe.each(backends().filter((b) => b.name !== 'pglite'))(
  'kfe rotate --activate-later, status per slot, retire --force, rewrap [$name]',
  { timeout: 300_000 },
  (backend: Backend) => {
    describe.runIf(backend.available)('', () => {
      let t: CliTestDb
      beforeAll(async () => {
        t = await cliTestDb(backend, { rotationSlot: true, secondKek: true })
        // init --dry-run says what it would create and creates nothing (the real init creates it).
        const dry = await t.kfe('init', '--dry-run', '--json')
        expect(dry.code).toBe(0)
        expect(dry.json).toMatchObject({ dryRun: true, created: 2 })
        const init = await t.kfe('init', '--json')
        expect(init.code).toBe(0)
        expect(init.json).toMatchObject({
          created: 2,
          keys: [{ keks: ['local:cli', 'local:cli2'] }, { keks: ['local:cli', 'local:cli2'] }],
        })
        await t.db.app
          .insertInto(t.table)
          .values(Array.from({ length: 20 }, (_, i) => ({ name: `n${i}`, email: `u${i}@x.io`, ssn: '1' })))
          .execute()
      }, 300_000)
      afterAll(async () => {
        await t?.destroy()
      })

      type Slots = { tables: Array<{ slots: Array<{ index: string; columns: unknown[] }> }> }
      const slotColumns = (json: unknown) => (json as Slots).tables[0]!.slots

      it('rotate --index --activate-later stages (exit 0); status shows each slot column; a second rotate activates the same version', async () => {
        const staged = await t.kfe('rotate', t.table, '--index', '--activate-later', '--json')
        expect(staged.code).toBe(0)
        expect(staged.json).toMatchObject({ version: 2, state: 'staged', interrupted: false })
        expect((staged.json as { left: string }).left).toContain(`kfe rotate ${t.table} --index\` again`)
        const status = await t.kfe('status', t.table, '--exact', '--json')
        expect(status.code).toBe(2)
        expect(slotColumns(status.json)).toEqual([
          {
            index: 'email_bidx',
            column: 'email',
            columns: [
              { column: 'email_bidx', slot: 0, version: 1, state: 'active', searched: true, rows: { 1: 20 } },
              {
                column: 'email_bidx_next',
                slot: 1,
                version: 2,
                state: 'staged',
                searched: false,
                rows: { missing: 20 },
              },
            ],
          },
        ])
        const resumed = await t.kfe('rotate', t.table, '--index', '--json')
        expect(resumed.code).toBe(0)
        expect(resumed.json).toMatchObject({
          version: 2,
          state: 'active',
          previous: 1,
          reencrypt: { rows: 20, failed: 0, remainingBatches: 0 },
        })
        const text = await t.kfe('status', t.table, '--exact')
        expect(text.code).toBe(2) // index version 1 can be retired
        expect(text.stdout).toContain('index email_bidx (email), per column:')
        expect(text.stdout).toContain('email_bidx: v1 decrypt-only; rows: v1: 20')
        expect(text.stdout).toContain('email_bidx_next: v2 active, searched; rows: v2: 20')
      })

      it('retire refuses while rows use the version (exit 1); --force --dry-run changes nothing; --force retires and prints the count', async () => {
        const rotate = await t.kfe('rotate', t.table, '--data', '--no-reencrypt', '--json')
        expect(rotate.json).toMatchObject({ version: 2, state: 'active' })
        const refused = await t.kfe('retire', t.table, '--data', '1', '--json')
        expect(refused.code).toBe(1)
        expect(refused.json).toMatchObject({ ok: false, error: { code: 'RETIRE_REFUSED' } })
        const dry = await t.kfe('retire', t.table, '--data', '1', '--force', '--dry-run', '--json')
        expect(dry.code).toBe(0)
        expect(dry.json).toMatchObject({ retired: false, dryRun: true, rows: 20 })
        const forced = await t.kfe('retire', t.table, '--data', '1', '--force')
        expect(forced.code).toBe(0)
        expect(forced.stdout).toContain(`${t.table} data v1: retired; 20 rows still use it`)
        expect(forced.stdout).toContain('(forced)')
        const keys = await t.ops.status({ table: t.table })
        expect(
          keys.tables[0]!.keys.filter((k) => k.purpose === 'data').map((k) => [k.version, k.state]),
        ).toEqual([
          [1, 'retired'],
          [2, 'active'],
        ])
      })

      it('rewrap --from --to: --dry-run counts, the run moves every key to the other KEK and touches no row', async () => {
        const rowsBefore = await t.db.raw.selectFrom(t.table).selectAll().orderBy('id').execute()
        const none = await t.kfe('rewrap', '--from', 'local:cli', '--to', 'local:cli2', '--dry-run', '--json')
        expect(none.json).toMatchObject({ dryRun: true, rewrapped: 0 }) // init wrapped under both
        const moved = await t.kfe('rewrap', '--from', 'local:cli', '--to', 'local:cli2', '--json')
        expect(moved.code).toBe(0)
        expect(moved.json).toMatchObject({ dryRun: false, from: 'local:cli', to: 'local:cli2', keys: 4 })
        const back = await t.kfe('rewrap', '--from', 'local:cli2', '--to', 'local:cli', '--dry-run')
        expect(back.code).toBe(0)
        expect(back.stdout).toContain('4 keys; 4 would get a wrapping under local:cli')
        const status = await t.kfe('status', t.table, '--json')
        const keks = (
          status.json as { tables: Array<{ keys: Array<{ keks: string[] }> }> }
        ).tables[0]!.keys.map((k) => k.keks)
        expect(keks).toEqual(Array(4).fill(['local:cli2']))
        expect(await t.db.raw.selectFrom(t.table).selectAll().orderBy('id').execute()).toEqual(rowsBefore)
      })
    })
  },
)
