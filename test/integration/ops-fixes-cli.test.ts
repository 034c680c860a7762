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
