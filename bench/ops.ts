/**
 * `npm run bench:ops` (issue 14, "Performance"): re-encryption of a table of (id, name, email,
 * ssn) — email and ssn encrypted, each with its blind index — by the job engine
 * (`ops.reencrypt`, compare-and-set, checkpoints) with 1, 2 and 4 workers, against the
 * hand-written floor of the same shape (bench/ops-floor.ts) with 1, 2 and 4 workers and, at one
 * worker, with compare-and-set: on PostgreSQL (PG_URL) and MariaDB/MySQL (MYSQL_URL), an engine
 * without its URL is reported NOT RUN. Every variant re-encrypts the whole table once per round;
 * the variants are interleaved in a rotating order (bench/harness.ts), round 0 is discarded.
 *
 * Writes bench/results/ops.{json,md} and the re-encryption section of docs/benchmarks.md.
 * Options: --rows N (default 200,000; a smaller N is a smoke run, said so in the report),
 * --rounds N (including the warm-up; default 4), --batch-size N (default 1,000).
 * A benchmark, never a test: nothing here is asserted but that every row was rewritten.
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type Dialect, Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely'
import { createPool as createMysqlPool } from 'mysql2'
import { createPool as createMysqlPromisePool } from 'mysql2/promise'
import pg from 'pg'
import type { JobResult } from '../src/ops.js'
import { environment } from './environment.js'
import { measureGroups, type Timed } from './harness.js'
import { type FloorDriver, mysqlFloor, postgresFloor, runFloorJob } from './ops-floor.js'
import { startProcessPool } from './ops-process.js'
import {
  type OpsEngineResult,
  type OpsResults,
  type OpsVariant,
  opsMarkdown,
  spliceOps,
} from './ops-report.js'
import { opsTables } from './ops-tables.js'

const { values } = parseArgs({
  options: {
    rows: { type: 'string' },
    rounds: { type: 'string' },
    'batch-size': { type: 'string' },
  },
})
const int = (v: string | undefined, fallback: number, name: string): number => {
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} takes a positive integer, not '${v}'`)
  return n
}
const settings = {
  rows: int(values.rows, 200_000, 'rows'),
  batchSize: int(values['batch-size'], 1000, 'batch-size'),
  rounds: Math.max(2, int(values.rounds, 4, 'rounds')),
}
const WORKERS = [1, 2, 4] as const
/** Processes of the process variants (one worker each), as `kfe reencrypt --processes N`. */
const PROCESSES = [2, 4] as const

const root = fileURLToPath(new URL('..', import.meta.url))
const started = performance.now()
const log = (s: string) => {
  const t = ((performance.now() - started) / 1000).toFixed(0).padStart(4)
  process.stderr.write(`[${t}s] ${s}\n`)
}

// biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
type AnyDB = Kysely<any>

interface Engine {
  readonly name: string
  readonly family: 'postgres' | 'mysql'
  /** A dialect on a pool of its own (each worker of a job takes a connection). */
  dialect(): Dialect
  /** The floor's own pool and driver, and a way to close it. */
  floor(table: string): { driver: FloorDriver; close(): Promise<void> }
  /**
   * Brings `table` to the same state before every timed run (not timed): the run before it left
   * every row's old version dead and its pages dirty, which the server would otherwise clean up
   * during whichever run comes next.
   */
  settle(db: AnyDB, table: string): Promise<void>
}

function engines(): Array<Engine | { name: string; notRun: string }> {
  const pgUrl = process.env.PG_URL
  const mysqlUrl = process.env.MYSQL_URL
  return [
    pgUrl
      ? {
          name: 'PostgreSQL',
          family: 'postgres',
          dialect: () => new PostgresDialect({ pool: new pg.Pool({ connectionString: pgUrl, max: 6 }) }),
          floor(table) {
            const pool = new pg.Pool({ connectionString: pgUrl, max: 5 })
            return { driver: postgresFloor(pool, table), close: () => pool.end() }
          },
          // The dead row versions vacuumed, then a checkpoint: no run pays for the last one's WAL.
          async settle(db, table) {
            await sql`vacuum analyze ${sql.table(table)}`.execute(db)
            await sql`checkpoint`.execute(db)
          },
        }
      : { name: 'PostgreSQL', notRun: 'NOT RUN: PG_URL is not set' },
    mysqlUrl
      ? {
          name: 'MariaDB/MySQL',
          family: 'mysql',
          dialect: () => new MysqlDialect({ pool: createMysqlPool({ uri: mysqlUrl, connectionLimit: 6 }) }),
          floor(table) {
            const pool = createMysqlPromisePool({ uri: mysqlUrl, connectionLimit: 5 })
            return { driver: mysqlFloor(pool, table), close: () => pool.end() }
          },
          // The table's dirty pages written out (InnoDB's flush for a tablespace copy; the lock it
          // takes is released at once): no run pays for the flushing of the last one's writes.
          async settle(db, table) {
            await db.connection().execute(async (c) => {
              await sql`flush tables ${sql.table(table)} for export`.execute(c)
              await sql`unlock tables`.execute(c)
            })
          },
        }
      : { name: 'MariaDB/MySQL', notRun: 'NOT RUN: MYSQL_URL is not set' },
  ]
}

/** Tables, rows and the timed variants of one engine, and how to drop it all. */
async function prepare(engine: Engine): Promise<{
  variants: Timed[]
  labels: OpsVariant[]
  server: string
  teardown(): Promise<void>
}> {
  const raw: AnyDB = new Kysely({ dialect: engine.dialect() })
  const server =
    (await sql<{ v: string }>`select version() as v`.execute(raw)).rows[0]?.v.split(' on ')[0] ?? '?'
  const kek = randomBytes(32)
  const tables = await opsTables(raw, {
    prefix: 'bench_ops',
    family: engine.family,
    rows: settings.rows,
    floor: true,
    appDialect: engine.dialect(),
    kek,
  }).catch(async (error: unknown) => {
    await raw.destroy()
    throw error
  })
  const { ours, floorTable, ops, cipher } = tables
  log(`${engine.name}: ${settings.rows} rows in each table`)
  const floor = engine.floor(floorTable)
  const pool = await startProcessPool(
    {
      family: engine.family,
      ours,
      floorTable,
      keyTable: tables.keyTable,
      jobsTable: tables.jobsTable,
      kek: kek.toString('hex'),
      floorSecrets: cipher.secrets(),
    },
    Math.max(...PROCESSES),
  )
  const expectAll = (what: string, n: number) => {
    if (n !== settings.rows) throw new Error(`${engine.name} ${what}: rewrote ${n} of ${settings.rows} rows`)
  }
  // `half`: at half the batch size (the compare-and-set cost is measured at both sizes).
  const floorVariant = (workers: number, cas: boolean, half = false): Timed => ({
    name: `floor-${cas ? 'cas-' : ''}${half ? 'half-' : ''}${workers}`,
    batch: 1,
    async run() {
      await engine.settle(raw, floorTable)
      const batchSize = half ? Math.max(1, Math.floor(settings.batchSize / 2)) : settings.batchSize
      const t0 = performance.now()
      const n = await runFloorJob(floor.driver, cipher, { batchSize, workers, cas })
      const ms = performance.now() - t0
      expectAll(`floor (${workers} workers${cas ? ', compare-and-set' : ''})`, n)
      return ms
    },
  })
  const oursVariant = (workers: number): Timed => ({
    name: `ours-${workers}`,
    batch: 1,
    async run() {
      // Not timed: the next data version, activated (rotate waits out the 50 ms metadata TTL).
      await ops.rotate(ours, { purpose: 'data', reencrypt: false })
      await engine.settle(raw, ours)
      const t0 = performance.now()
      const job = (await ops.reencrypt(ours, { batchSize: settings.batchSize, workers })) as JobResult
      const ms = performance.now() - t0
      if (job.failed > 0) throw new Error(`${engine.name} ours: ${job.failed} rows failed`)
      expectAll(`ours (${workers} workers)`, job.rewritten)
      return ms
    },
  })
  // A job shared by `n` processes (bench/ops-process.ts): the floor's batches planned here, split among them.
  const floorProcesses = (n: number): Timed => ({
    name: `floor-proc-${n}`,
    batch: 1,
    async run() {
      await engine.settle(raw, floorTable)
      const t0 = performance.now()
      const batches = await floor.driver.plan(settings.batchSize)
      const written = await pool.floor(n, batches, cipher.current)
      const ms = performance.now() - t0
      cipher.current = 1 - cipher.current
      expectAll(`floor (${n} processes)`, written)
      return ms
    },
  })
  const oursProcesses = (n: number): Timed => ({
    name: `ours-proc-${n}`,
    batch: 1,
    async run() {
      await ops.rotate(ours, { purpose: 'data', reencrypt: false })
      await engine.settle(raw, ours)
      const t0 = performance.now()
      const written = await pool.ours(n, settings.batchSize)
      const ms = performance.now() - t0
      expectAll(`ours (${n} processes)`, written)
      return ms
    },
  })
  const variants = [
    ...PROCESSES.map((n) => floorProcesses(n)),
    ...PROCESSES.map((n) => oursProcesses(n)),
    ...WORKERS.map((w) => floorVariant(w, false)),
    floorVariant(1, true),
    floorVariant(1, false, true),
    floorVariant(1, true, true),
    ...WORKERS.map((w) => oursVariant(w)),
  ]
  const half = Math.max(1, Math.floor(settings.batchSize / 2)).toLocaleString('en-US')
  const labels: OpsVariant[] = [
    ...WORKERS.map((w) => ({ id: `floor-${w}`, label: 'floor: by hand, plain UPDATE', workers: w })),
    { id: 'floor-cas-1', label: 'floor: by hand, compare-and-set UPDATE', workers: 1 },
    { id: 'floor-half-1', label: `floor: by hand, plain UPDATE, batches of ${half}`, workers: 1 },
    {
      id: 'floor-cas-half-1',
      label: `floor: by hand, compare-and-set UPDATE, batches of ${half}`,
      workers: 1,
    },
    ...WORKERS.map((w) => ({ id: `ours-${w}`, label: '`ops.reencrypt` (`kfe reencrypt`)', workers: w })),
    ...PROCESSES.map((n) => ({
      id: `floor-proc-${n}`,
      label: 'floor: by hand, plain UPDATE, in processes (batch i to process i mod N)',
      workers: n,
      processes: n,
    })),
    ...PROCESSES.map((n) => ({
      id: `ours-proc-${n}`,
      label: '`ops.reencrypt` in processes, as `kfe reencrypt --processes` runs it',
      workers: n,
      processes: n,
      floor: `floor-proc-${n}`,
    })),
  ]
  return {
    variants,
    labels,
    server,
    async teardown() {
      await pool.close()
      await floor.close()
      await tables.drop()
      await raw.destroy()
    },
  }
}

async function main(): Promise<void> {
  const env = environment()
  const loadAtStart = loadavg()[0] ?? 0
  log(
    `bench:ops: ${settings.rows} rows, batches of ${settings.batchSize}, ${settings.rounds} rounds (1 warm-up)`,
  )
  const results: OpsEngineResult[] = []
  const prepared: Array<{ engine: Engine; p: Awaited<ReturnType<typeof prepare>> }> = []
  try {
    for (const engine of engines()) {
      if ('notRun' in engine) {
        results.push({ engine: engine.name, notRun: engine.notRun })
        continue
      }
      prepared.push({ engine, p: await prepare(engine) })
    }
    // One job at a time (a job is a whole table's re-encryption): interleaved across engines and variants.
    const measured = await measureGroups(
      prepared.map(({ engine, p }) => ({ id: engine.name, variants: p.variants })),
      settings.rounds,
      { timeMs: 0, iterations: 1 },
      (r) => log(r === 0 ? 'round 0 (warm-up, discarded)' : `round ${r}`),
    )
    for (const { engine, p } of prepared) {
      env.servers[engine.name] = p.server
      results.push({
        engine: engine.name,
        server: p.server,
        variants: p.labels,
        timings: Object.fromEntries(measured.get(engine.name) ?? []),
      })
    }
  } finally {
    for (const { p } of prepared) await p.teardown()
  }
  const out: OpsResults = {
    environment: env,
    settings: { ...settings, load: { start: loadAtStart, end: loadavg()[0] ?? 0 } },
    engines: results,
    notes: [
      'Each job re-encrypts every row from the data key version it is on to the next one: ours under `ops.rotate(…, { reencrypt: false })` (not timed) then `ops.reencrypt` (timed: planning, batches, checkpoints); the floor from one of its two keys to the other. Every run is checked to have rewritten every row.',
      'The floor (bench/ops-floor.ts) is a job written by hand: keyset batches planned by primary key, the batch read, both ciphertexts opened and sealed again with node:crypto AES-256-GCM, both blind indexes computed again (HMAC-SHA256), and one UPDATE per batch (`UPDATE … FROM unnest(…)` on PostgreSQL, `UPDATE … JOIN (SELECT … UNION ALL …)` on MariaDB/MySQL); no key store, no checkpoint, no transaction per batch. With compare-and-set the UPDATE also requires both ciphertexts to be the ones read.',
      'Ours: one transaction per batch that claims the batch (`FOR UPDATE SKIP LOCKED`), reads it, decrypts and checks every value and blind index, writes the changed rows with compare-and-set UPDATEs (the shape of the floor\u2019s compare-and-set UPDATE, with `RETURNING` of the rows written on PostgreSQL), one per part of 250 rows, each sent before the next part is planned so that the database writes one part while the job plans the next, and commits the checkpoint with the rows.',
      "Both tables have the same columns and indexes (the plugin's: a unique index on email_bidx, an index on ssn_bidx). Each run starts on a settled table (not timed): on PostgreSQL vacuumed, then a `CHECKPOINT`; on MariaDB/MySQL its dirty pages flushed (`FLUSH TABLES … FOR EXPORT`), so that no run pays for the cleanup of the one before it.",
      'Processes (`kfe reencrypt --processes N`, and the floor run the same way): one job shared by N worker processes of one worker each (bench/ops-process.ts), started before any clock runs (a `kfe` process starts in about 0.5 s, not timed here). Ours: the first plans the job and the others join it once planned, as `--processes` starts them; they share its batches through `FOR UPDATE SKIP LOCKED`. The floor: its batches planned in the benchmark process, then batch i written by process i mod N.',
      'Ratios are of times (lower is faster); each is the ratio of the medians, with the range of the per-round ratios (round i of one variant with round i of the other). A target is met ("yes") when every measured round meets it, missed ("no") when none does.',
    ],
  }
  const resultsDir = `${root}bench/results`
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(`${resultsDir}/ops.json`, `${JSON.stringify(out, null, 2)}\n`)
  const markdown = opsMarkdown(out)
  writeFileSync(`${resultsDir}/ops.md`, `# Re-encryption benchmark\n\n${markdown}`)
  const docPath = `${root}docs/benchmarks.md`
  writeFileSync(docPath, spliceOps(readFileSync(docPath, 'utf8'), markdown))
  log('wrote bench/results/ops.{json,md} and the re-encryption section of docs/benchmarks.md')
  process.stdout.write(markdown)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
