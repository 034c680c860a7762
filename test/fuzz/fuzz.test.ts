import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { call, lit, nm, onDb } from './chain.js'
import { type FuzzBackendName, type FuzzDb, openFuzzDb } from './fuzz-db.js'
import { describeFinding, fuzz, refusalTable, totals } from './fuzz-run.js'
import type { FuzzCase } from './generate.js'
import { runCase } from './run-case.js'

/**
 * The differential fuzzer under `npm test`: a few hundred generated queries per backend, each
 * run on a plaintext copy through plain Kysely (the oracle) and on the encrypted copy through
 * the plugin. Any wrong result, leak, or refusal of a plaintext-only query fails with the seed
 * and the shrunk query as Kysely code. `FUZZ_SEED` / `FUZZ_RUNS` pin a run; long runs:
 * `npm run fuzz` (docs/fuzzing.md).
 */

const RUNS = Number(process.env.FUZZ_RUNS ?? 300)
// A fixed seed under `npm test` (the same cases every run: a red CI run is a regression, not
// luck); FUZZ_SEED=random explores, and `npm run fuzz` takes a random seed unless given one.
const SEED =
  process.env.FUZZ_SEED === 'random'
    ? Math.floor(Math.random() * 2 ** 31)
    : Number(process.env.FUZZ_SEED ?? 20_261_205)

const BACKENDS: { name: FuzzBackendName; url: string | null; available: boolean }[] = [
  { name: 'postgres', url: inject('pgUrl'), available: inject('pgUrl') !== null },
  { name: 'pglite', url: null, available: true },
  { name: 'mysql', url: inject('mysqlUrl'), available: inject('mysqlUrl') !== null },
]

describe.each(BACKENDS)('differential fuzzing [$name]', (backend) => {
  describe.runIf(backend.available)('', () => {
    let db: FuzzDb

    beforeAll(async () => {
      db = await openFuzzDb({ name: backend.name, url: backend.url })
    })
    afterAll(async () => {
      await db?.close()
    })

    it('the property can fail: ciphertext returned, and plaintext sent, are caught', async () => {
      const read: FuzzCase = {
        shape: 'select',
        touchesEncrypted: true,
        statements: [
          {
            chain: onDb(
              call('selectFrom', nm('{users}')),
              call('select', lit(['id', 'email'])),
              call('where', lit('id'), lit('='), lit(1)),
            ),
            ordered: false,
            writes: false,
          },
        ],
      }
      // Read without the wrapper (plain Kysely on the encrypted tables): ciphertext, a wrong result.
      const bypass: FuzzDb = { ...db, enc: db.plain }
      expect((await runCase(bypass, read)).kind).toBe('wrong')
      expect((await runCase(db, read)).kind).toBe('ok')
      // A secret in a plaintext column's search reaches the driver: a leak.
      const leak: FuzzCase = {
        shape: 'select',
        touchesEncrypted: false,
        statements: [
          {
            chain: onDb(
              call('selectFrom', nm('{tags}')),
              call('selectAll'),
              call('where', lit('label'), lit('='), lit('kq-ada@x.io')),
            ),
            ordered: false,
            writes: false,
          },
        ],
      }
      expect((await runCase(db, leak)).kind).toBe('leak')
    })

    it(`${RUNS} generated queries: refused before sending, or the oracle's rows and tables; no leaks`, async () => {
      const report = await fuzz(db, { runs: RUNS, seed: SEED, maxFindings: 3 })
      const t = totals(report)
      const findings = report.findings.map((f) => describeFinding(f, backend.name)).join('\n\n')
      expect(t.wrong, findings).toBe(0)
      expect(t.leak, findings).toBe(0)
      expect(t.plaintextRefused, findings).toBe(0)
      expect(t.total).toBe(RUNS)
      // The generator reaches both sides of the property: queries that run, and refusals.
      expect(t.ok, refusalTable(report)).toBeGreaterThan(RUNS / 10)
      expect(t.refused, refusalTable(report)).toBeGreaterThan(0)
    }, 120_000)
  })
})
