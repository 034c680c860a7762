/**
 * Where a re-encryption's time goes on PostgreSQL: the floor's job and `ops.reencrypt`, one
 * worker, alternating on tables of their own, with every statement timed — the floor's reads and
 * writes around its driver calls, ours through Kysely's `log` (execute to result, the driver's
 * serialization included). What is not in a statement is the process's own work (crypto, plans,
 * parameters). Not part of `npm run bench:ops`; nothing is written to bench/results.
 *
 *   PG_URL=postgres://… node --import tsx bench/ops-sql.ts [rows] [rounds]
 */
import { Kysely, type LogEvent, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { type FloorDriver, postgresFloor, runFloorJob } from './ops-floor.js'
import { opsTables } from './ops-tables.js'

const url = process.env.PG_URL
if (url === undefined) throw new Error('PG_URL is not set (this tool runs on PostgreSQL only).')
const rows = Number(process.argv[2] ?? 50_000)
const rounds = Number(process.argv[3] ?? 3)

/** Statement time by the statement's first words. */
const statements = new Map<string, { n: number; ms: number }>()
let timing = false
const note = (e: LogEvent) => {
  if (!timing) return
  const head = e.query.sql
    .replace(/\s+/g, ' ')
    .replace(/"[^"]*"/g, 'T')
    .slice(0, 48)
  const s = statements.get(head) ?? { n: 0, ms: 0 }
  s.n++
  s.ms += e.queryDurationMillis
  statements.set(head, s)
}
// biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
const raw: Kysely<any> = new Kysely({
  dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 6 }) }),
  log: note,
})
const tables = await opsTables(raw, {
  prefix: 'ops_sql',
  family: 'postgres',
  rows,
  floor: true,
  appDialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) }),
})
const pool = new pg.Pool({ connectionString: url, max: 2 })
const inner = postgresFloor(pool, tables.floorTable)
const floorSql = { read: 0, write: 0 }
const timed: FloorDriver = {
  plan: inner.plan,
  async read(lo, hi) {
    const t = performance.now()
    const out = await inner.read(lo, hi)
    floorSql.read += performance.now() - t
    return out
  },
  async write(out, cas) {
    const t = performance.now()
    const n = await inner.write(out, cas)
    floorSql.write += performance.now() - t
    return n
  },
}
const settle = async (table: string) => {
  await sql`vacuum analyze ${sql.table(table)}`.execute(raw)
  await sql`checkpoint`.execute(raw)
}
const ms = (x: number) => `${x.toFixed(0)} ms`
try {
  for (let round = 0; round < rounds; round++) {
    await settle(tables.floorTable)
    floorSql.read = 0
    floorSql.write = 0
    let t0 = performance.now()
    await runFloorJob(timed, tables.cipher, { batchSize: 1000, workers: 1, cas: false })
    const floorMs = performance.now() - t0
    await tables.ops.rotate(tables.ours, { purpose: 'data', reencrypt: false })
    await settle(tables.ours)
    statements.clear()
    timing = true
    t0 = performance.now()
    await tables.ops.reencrypt(tables.ours, { batchSize: 1000, workers: 1 })
    const oursMs = performance.now() - t0
    timing = false
    const oursSql = [...statements.values()].reduce((a, s) => a + s.ms, 0)
    const floorStatements = floorSql.read + floorSql.write
    process.stdout.write(
      `round ${round}: floor ${ms(floorMs)} (statements ${ms(floorStatements)}, the rest ${ms(floorMs - floorStatements)}), ours ${ms(oursMs)} (statements ${ms(oursSql)}, the rest ${ms(oursMs - oursSql)}), ours/floor ${(oursMs / floorMs).toFixed(2)}×\n`,
    )
    process.stdout.write(`  floor: reads ${ms(floorSql.read)}, writes ${ms(floorSql.write)}\n`)
    for (const [head, s] of [...statements].sort((a, b) => b[1].ms - a[1].ms).slice(0, 8)) {
      process.stdout.write(`  ours: ${ms(s.ms).padStart(8)} ${String(s.n).padStart(4)}× ${head}\n`)
    }
  }
} finally {
  await tables.drop()
  await pool.end()
  await raw.destroy()
}
