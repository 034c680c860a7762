/**
 * Long fuzz runs: `npm run fuzz -- --runs N --seed S [--backend postgres|mysql|pglite]`.
 * Databases from PG_URL and MYSQL_URL (a backend whose URL is missing is reported NOT RUN and
 * the exit code is 2). Prints the refusal-rate table by shape, the bug counts, and each
 * (shrunk) finding as Kysely code. Exits 1 when it found a wrong result, a leak, or a refusal
 * of a plaintext-only query.
 */
import { parseArgs } from 'node:util'
import { verifyShapeCache } from '../../src/plugin/shape-cache.js'
import { type FuzzBackendName, openFuzzDb } from './fuzz-db.js'
import { describeFinding, fuzz, refusalTable, totals } from './fuzz-run.js'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '200' },
    seed: { type: 'string' },
    backend: { type: 'string', multiple: true },
    findings: { type: 'string', default: '5' },
  },
})

// Every reused analysis (src/plugin/shape-cache.ts) is checked against the full one, as in the tests.
verifyShapeCache(true)

const runs = Number(values.runs)
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed)
const names = (values.backend ?? ['postgres', 'mysql', 'pglite']) as FuzzBackendName[]
let bugs = 0
let notRun = 0

for (const name of names) {
  const url = name === 'postgres' ? process.env.PG_URL : name === 'mysql' ? process.env.MYSQL_URL : null
  if (name !== 'pglite' && !url) {
    console.log(`\n## ${name}: NOT RUN (no ${name === 'postgres' ? 'PG_URL' : 'MYSQL_URL'})`)
    notRun += 1
    continue
  }
  const db = await openFuzzDb({ name, url: url ?? null })
  const started = Date.now()
  try {
    const report = await fuzz(db, {
      runs,
      seed,
      maxFindings: Number(values.findings),
      onCase: (n) => {
        if (n % 250 === 0) process.stderr.write(`${name}: ${n}/${runs}\n`)
      },
    })
    const t = totals(report)
    console.log(
      `\n## ${name}: ${report.runs} cases, seed ${seed}, ${((Date.now() - started) / 1000).toFixed(0)} s\n`,
    )
    console.log(refusalTable(report))
    console.log(
      `\nwrong results: ${t.wrong}, leaks: ${t.leak}, refusals of plaintext-only queries: ${t.plaintextRefused}`,
    )
    console.log(
      `refusal codes: ${[...report.codes.entries()].map(([c, k]) => `${c} ${k}`).join(', ') || 'none'}`,
    )
    for (const f of report.findings) console.log(`\n${describeFinding(f, name)}`)
    bugs += t.wrong + t.leak + t.plaintextRefused
  } finally {
    await db.close()
  }
}
process.exitCode = bugs > 0 ? 1 : notRun > 0 ? 2 : 0
