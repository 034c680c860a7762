/**
 * `npm run bench`: every case, then bench/results/latest.{json,md}, bench/results/chart.svg, its
 * shipped copy docs/benchmarks-chart.svg and
 * docs/benchmarks.md (from bench/doc-template.md; no hand-edited numbers).
 *
 * Narrower runs write bench/results/<suite>.{json,md} and leave the doc alone:
 *   npm run bench:fields     case 1 only
 *   npm run bench:db         case 2 only (PG_URL / MYSQL_URL; PGlite always)
 * The re-encryption section of docs/benchmarks.md is `npm run bench:ops`'s (bench/ops.ts): kept.
 * Options: --rounds N (including the discarded warm-up round), --quick (small sizes, a smoke test).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { chartSvg } from './chart.js'
import { type EngineResult, REPEATS, runDbBench } from './db.js'
import { environment } from './environment.js'
import { type FieldResults, runFieldBench } from './fields.js'
import { currentOps, spliceOps } from './ops-report.js'
import { type BenchResults, resultsMarkdown } from './report.js'
import { checkTargets } from './targets.js'

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    rounds: { type: 'string' },
    quick: { type: 'boolean', default: false },
  },
})
const only = values.only
if (only !== undefined && only !== 'fields' && only !== 'db') {
  throw new Error(`--only takes 'fields' or 'db', not '${only}'`)
}
const quick = values.quick === true
const rounds = values.rounds === undefined ? undefined : Number.parseInt(values.rounds, 10)

const root = fileURLToPath(new URL('..', import.meta.url))
const resultsDir = `${root}bench/results`
const started = performance.now()
const log = (s: string) => {
  const t = ((performance.now() - started) / 1000).toFixed(0).padStart(4)
  process.stderr.write(`[${t}s] ${s}\n`)
}

async function sodiumBackend(): Promise<string> {
  try {
    const { createRequire } = await import('node:module')
    const { SodiumPlus } = createRequire(import.meta.url)('sodium-plus') as {
      SodiumPlus: { auto(): Promise<{ getBackendName(): string }> }
    }
    return (await SodiumPlus.auto()).getBackendName()
  } catch {
    return 'unknown'
  }
}

async function main(): Promise<void> {
  const env = environment()
  let fields: FieldResults | undefined
  let db: EngineResult[] | undefined
  if (only !== 'db') {
    fields = await runFieldBench(rounds ?? (quick ? 2 : 7), quick ? 20 : 150, log)
  }
  if (only !== 'fields') {
    db = await runDbBench(
      quick
        ? { rows: 1000, batchSize: 500, lookups: 200, rounds: rounds ?? 2 }
        : { rows: 10_000, batchSize: 500, lookups: 2_000, rounds: rounds ?? 9 },
      log,
    )
    for (const e of db) if (e.server !== undefined) env.servers[e.engine] = e.server
  }
  const notes = [
    `ciphersweet-js runs on sodium-plus with the ${await sodiumBackend()} backend.`,
    'The floor is AES-256-GCM under one fixed key with 12-byte nonces from a pooled randomFillSync buffer, stored as nonce ‖ ciphertext ‖ tag, and HMAC-SHA256 for the index: no AAD, no key versions, no per-record subkeys, no key store. It is the least work a correct implementation can do, not a safer design.',
    'Ours per field: AES-256-GCM under an HKDF per-record subkey (one HKDF per 65,536 encryptions), AAD = header ‖ table ‖ column ‖ context, format v1 (32 bytes: type, key version, salt, nonce, tag); blind index = HMAC-SHA256 under a per-index HKDF subkey, over the codec-encoded value. The 4 KiB JSON value is checked by the json codec (one validating pass: what JSON cannot hold is refused) and written with JSON.stringify in its own key order, as every library writes it; our blind index of it is computed over canonical JSON (sorted keys).',
    'The database plugin variant declares email as encrypted.text with a unique blind index (no normalizer, like the floor) and ssn as encrypted.text with no index. Keys come from localKeyProvider (a local KEK) through the key store and the default cache (5 min TTL).',
    'AWS Encryption SDK: RawAesKeyringNode, commitment policy REQUIRE_ENCRYPT_REQUIRE_DECRYPT; the caching variants use NodeCachingMaterialsManager with getLocalCryptographicMaterialsCache(100), maxAge 5 min.',
    'All variants share one process. The plugin enters its AsyncLocalStorage (which on Node 20 turns on promise hooks for the whole process) only while a key must be loaded from the key store, and disables it afterwards, so the steady state measured here runs without promise hooks for every variant.',
    `Per-field timings are the median call of each round (a call preempted by another process is an outlier); database timings are whole operations (each round keeps the median of its ${Math.min(...Object.values(REPEATS))} to ${Math.max(...Object.values(REPEATS))} runs of an operation), so they carry the machine's noise: read the min–max ranges and the 95 % intervals before reading a ratio.`,
    '@47ng/cloak and the AWS Encryption SDK offer no blind index; ciphersweet-js is measured with its "fast" index (the default slow index is Argon2id / PBKDF2 with many iterations, by design).',
  ]
  const results: BenchResults = {
    environment: env,
    notes,
    ...(fields === undefined ? {} : { fields }),
    ...(db === undefined ? {} : { db }),
    targets: checkTargets(fields, db),
  }
  mkdirSync(resultsDir, { recursive: true })
  const base = only ?? 'latest'
  writeFileSync(`${resultsDir}/${base}.json`, `${JSON.stringify(results, null, 2)}\n`)
  if (only === undefined) {
    const chart = chartSvg(fields, db)
    writeFileSync(`${resultsDir}/chart.svg`, chart)
    // The package ships docs/ but not bench/: docs/benchmarks.md shows its own copy of the chart.
    writeFileSync(`${root}docs/benchmarks-chart.svg`, chart)
    writeFileSync(
      `${resultsDir}/latest.md`,
      `# Benchmark results\n\n${resultsMarkdown(results, 'chart.svg')}`,
    )
    const template = readFileSync(`${root}bench/doc-template.md`, 'utf8')
    const docPath = `${root}docs/benchmarks.md`
    // The re-encryption section is `npm run bench:ops`'s: kept as the page has it.
    const ops = existsSync(docPath) ? currentOps(readFileSync(docPath, 'utf8')) : undefined
    const doc = template.replace(
      '<!-- results -->',
      resultsMarkdown(results, 'benchmarks-chart.svg').trimEnd(),
    )
    writeFileSync(docPath, ops === undefined ? doc : spliceOps(doc, ops))
    log('wrote bench/results/latest.{json,md}, bench/results/chart.svg, docs/benchmarks.{md,-chart.svg}')
  } else {
    writeFileSync(
      `${resultsDir}/${base}.md`,
      `# Benchmark results (${only} only)\n\n${resultsMarkdown(results)}`,
    )
    log(`wrote bench/results/${base}.{json,md}`)
  }
  process.stdout.write(resultsMarkdown(results))
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
