import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, inject, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { pgliteTemplate } from '../support/pglite.js'

const PROBE = fileURLToPath(new URL('../support/kysely-error-stack-probe.ts', import.meta.url))
const TSX = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url))

/**
 * Kysely's own test "error stack should contain the userland stack" (issue 12, item 8), with the
 * plugin installed and the table's `first_name` encrypted: the last line of every error's stack
 * is the application's line that ran the query, for the plugin's refusals as for the driver's
 * errors. It runs in a child process, outside the test runner, whose own async frames would
 * otherwise end every stack.
 */
describe.each(backends())('kysely error stack [$name]', (backend: Backend) => {
  describe.runIf(backend.available)('', () => {
    it("every error of kysely's error-stack queries ends at the line that ran the query", async () => {
      const url =
        backend.name === 'postgres'
          ? inject('pgUrl')
          : backend.name === 'mysql'
            ? inject('mysqlUrl')
            : await pgliteTemplate()
      const suffix = `${process.pid}_${Math.random().toString(36).slice(2, 7)}`
      // A child that compiles its probe with tsx: on a loaded machine that alone can take tens of seconds.
      const { stdout } = await promisify(execFile)(TSX, [PROBE, backend.name, url ?? '', suffix], {
        timeout: 150_000,
      })
      const results = stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { code: string | null; last: string | null })
      expect(results).toHaveLength(5)
      // Two queries write raw SQL into the encrypted column: refused by the plugin.
      expect(results.filter((r) => r.code === 'QUERY_REFUSED')).toHaveLength(2)
      for (const r of results) {
        expect(r.code).not.toBeNull()
        // PGlite's dialect does not extend its errors' stacks: the wrapper does it for it.
        expect(r.last).toContain('kysely-error-stack-probe.ts')
      }
    }, 180_000)
  })
})
