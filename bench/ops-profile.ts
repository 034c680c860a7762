/**
 * Scratch profiler for the job engine: runs `ops.reencrypt` and the floor on one engine with
 * statements counted by kind (a hooked dialect) and node CPU time, so round trips per batch and
 * CPU per row can be compared on a noisy machine.
 * Usage (`--help`): see USAGE below; PG_URL or MYSQL_URL names the database.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { parseArgs } from 'node:util'
import { type CompiledQuery, type Dialect, Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely'
import { createPool as createMysqlPool } from 'mysql2'
import { createPool as createMysqlPromisePool } from 'mysql2/promise'
import pg from 'pg'
import type { JobResult } from '../src/ops.js'
import { hooked } from '../test/support/hooked-dialect.js'
import { mysqlFloor, postgresFloor, runFloorJob } from './ops-floor.js'
import { opsTables } from './ops-tables.js'

const { values } = parseArgs({
  options: {
    engine: { type: 'string', default: 'pg' },
    rows: { type: 'string', default: '20000' },
    workers: { type: 'string', default: '1' },
    runs: { type: 'string', default: '3' },
    'batch-size': { type: 'string', default: '1000' },
    only: { type: 'string' },
    cpuprof: { type: 'string' },
    locks: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
})
const USAGE = `Usage: tsx bench/ops-profile.ts [--engine pg|mysql] [--rows N] [--workers W] [--runs R]
  [--batch-size N] [--only floor|ours] [--cpuprof PREFIX] [--locks]
Defaults: pg, 20000 rows, 1 worker, 3 runs, batches of 1000. The database: PG_URL or MYSQL_URL.
`
if (values.help === true) {
  process.stdout.write(USAGE)
  process.exit(0)
}
const rows = Number(values.rows)
const workers = Number(values.workers)
const batchSize = Number(values['batch-size'])
const family = values.engine === 'mysql' ? 'mysql' : 'postgres'

/**
 * CPU seconds the database server's processes have used (user + system, from /proc; Linux only,
 * a server on this machine): PostgreSQL's backends are children of the postmaster, so every
 * `postgres` process is summed. Undefined when none is found.
 */
function serverCpuSeconds(): number | undefined {
  let pids: string[]
  try {
    pids = execFileSync('pgrep', ['-x', family === 'postgres' ? 'postgres' : 'mariadbd'], {
      encoding: 'utf8',
    })
      .trim()
      .split('\n')
  } catch {
    return undefined
  }
  let ticks = 0
  for (const pid of pids) {
    try {
      // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {
      // exited meanwhile
    }
  }
  return ticks / 100
}

const kinds = new Map<string, { n: number; ms: number }>()
const kindOf = (q: CompiledQuery): string => {
  const s = q.sql.replace(/\s+/g, ' ').trim().toLowerCase()
  if (s.startsWith('floor-')) return s
  if (/^(begin|start transaction|commit|rollback)/.test(s)) return s.split(' ')[0]!
  if (s.includes('skip locked')) return 'claim'
  if (s.startsWith('with w as (update')) return 'cas-write+checkpoint'
  if (s.includes('_keys')) return 'key-metadata'
  if (s.startsWith('update') && s.includes('_batches')) return 'checkpoint'
  if (s.startsWith('update')) return 'cas-write'
  if (s.startsWith('select') && s.includes('_batches')) return 'batches-other'
  if (s.startsWith('select') && s.includes('_jobs')) return 'jobs-other'
  if (s.startsWith('select')) return 'read'
  return s.slice(0, 30)
}
const count = (q: CompiledQuery, ms: number) => {
  const k = kindOf(q)
  const e = kinds.get(k) ?? { n: 0, ms: 0 }
  e.n++
  e.ms += ms
  kinds.set(k, e)
}
let counting = false
function counted(d: Dialect): Dialect {
  return hooked(
    d,
    async () => {},
    (e, q) => {
      if (counting) count({ sql: `error ${(e as { code?: string }).code} ${kindOf(q)}` } as CompiledQuery, 0)
    },
  )
}
// Times each statement: wraps executeQuery once more.
function timed(d: Dialect): Dialect {
  const inner = counted(d)
  return {
    ...inner,
    createAdapter: () => inner.createAdapter(),
    createQueryCompiler: () => inner.createQueryCompiler(),
    createIntrospector: (db) => inner.createIntrospector(db),
    createDriver: () => {
      const drv = inner.createDriver()
      const seen = new WeakSet<object>()
      return new Proxy(drv, {
        get(t, p) {
          if (p === 'acquireConnection')
            return async () => {
              const c = await t.acquireConnection()
              if (!seen.has(c)) {
                seen.add(c)
                const ex = c.executeQuery.bind(c)
                c.executeQuery = (async (q: CompiledQuery) => {
                  const t0 = performance.now()
                  try {
                    return await ex(q)
                  } finally {
                    if (counting) count(q, performance.now() - t0)
                  }
                }) as typeof c.executeQuery
              }
              return c
            }
          const v = Reflect.get(t, p, t) as unknown
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v
        },
      })
    },
  }
}

const pgUrl = process.env.PG_URL!
const mysqlUrl = process.env.MYSQL_URL!
const dialect = (): Dialect =>
  family === 'postgres'
    ? new PostgresDialect({ pool: new pg.Pool({ connectionString: pgUrl, max: 6 }) })
    : new MysqlDialect({ pool: createMysqlPool({ uri: mysqlUrl, connectionLimit: 6 }) })

async function main() {
  // biome-ignore lint/suspicious/noExplicitAny: scratch
  const raw: Kysely<any> = new Kysely({ dialect: timed(dialect()) })
  const tables = await opsTables(raw, {
    prefix: 'prof_ops',
    family,
    rows,
    floor: true,
    appDialect: dialect(),
  })
  const { ours, floorTable, ops, cipher } = tables
  const floorDriver: { driver: import('./ops-floor.js').FloorDriver; close(): Promise<void> } =
    family === 'postgres'
      ? (() => {
          const pool = new pg.Pool({ connectionString: pgUrl, max: 5 })
          return { driver: postgresFloor(pool, floorTable), close: () => pool.end() }
        })()
      : (() => {
          const pool = createMysqlPromisePool({ uri: mysqlUrl, connectionLimit: 5 })
          return { driver: mysqlFloor(pool, floorTable), close: () => pool.end() }
        })()
  const fd = floorDriver.driver
  const wrap =
    <A extends unknown[], R>(name: string, f: (...a: A) => Promise<R>) =>
    async (...a: A) => {
      const t0 = performance.now()
      try {
        return await f(...a)
      } finally {
        if (counting) count({ sql: `floor-${name}` } as CompiledQuery, performance.now() - t0)
      }
    }
  floorDriver.driver = {
    plan: wrap('plan', fd.plan),
    read: wrap('read', fd.read),
    write: wrap('write', fd.write),
  }
  try {
    for (let r = 0; r < Number(values.runs); r++) {
      for (const which of ['floor', 'ours'] as const) {
        if (values.only !== undefined && values.only !== which) continue
        if (which === 'ours') await ops.rotate(ours, { purpose: 'data', reencrypt: false })
        if (family === 'postgres')
          await sql`vacuum analyze ${sql.table(which === 'ours' ? ours : floorTable)}`.execute(raw)
        kinds.clear()
        const cpu0 = process.cpuUsage()
        const server0 = serverCpuSeconds()
        const t0 = performance.now()
        const session = values.cpuprof !== undefined && r > 0 ? new Session() : undefined
        if (session !== undefined) {
          session.connect()
          await session.post('Profiler.enable')
          await session.post('Profiler.start')
        }
        counting = true
        const waits = new Map<string, number>()
        let sampling = values.locks === true && family === 'mysql'
        const sampler = sampling
          ? (async () => {
              const conn = createMysqlPromisePool({ uri: mysqlUrl, connectionLimit: 1 })
              let samples = 0
              while (sampling) {
                samples++
                const [rs] = await conn.query(
                  `select r.trx_query as waiting, b.trx_query as blocking, l.lock_table as tbl, l.lock_mode as mode, l.lock_type as type from information_schema.innodb_lock_waits w join information_schema.innodb_trx r on r.trx_id = w.requesting_trx_id join information_schema.innodb_trx b on b.trx_id = w.blocking_trx_id left join information_schema.innodb_locks l on l.lock_id = w.requested_lock_id`,
                )
                for (const x of rs as Array<Record<string, string | null>>) {
                  const k = `${x.tbl} ${x.mode} ${x.type} | waiting: ${(x.waiting ?? 'idle').slice(0, 60)} | blocking: ${(x.blocking ?? 'idle (between statements)').slice(0, 60)}`
                  waits.set(k, (waits.get(k) ?? 0) + 1)
                }
                await new Promise((r) => setTimeout(r, 10))
              }
              await conn.end()
              return samples
            })()
          : undefined
        let batches = 0
        if (which === 'ours') {
          const job = (await ops.reencrypt(ours, { batchSize, workers })) as JobResult
          batches = job.batches
          if (job.rewritten !== rows) throw new Error(`ours rewrote ${job.rewritten}`)
        } else {
          const n = await runFloorJob(floorDriver.driver, cipher, { batchSize, workers, cas: false })
          batches = Math.ceil(rows / batchSize)
          if (n !== rows) throw new Error(`floor rewrote ${n}`)
        }
        counting = false
        sampling = false
        if (sampler !== undefined) {
          const n = await sampler
          console.log(`${which}: ${n} lock samples`)
          for (const [k, v] of [...waits.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8))
            console.log(`  ${v} ${k}`)
        }
        if (session !== undefined) {
          const { profile } = await session.post('Profiler.stop')
          writeFileSync(`${values.cpuprof}.${which}.${r}.cpuprofile`, JSON.stringify(profile))
          session.disconnect()
        }
        const ms = performance.now() - t0
        const cpu = process.cpuUsage(cpu0)
        const server1 = serverCpuSeconds()
        const serverMs =
          server0 === undefined || server1 === undefined
            ? 'n/a'
            : `${((server1 - server0) * 1000).toFixed(0)}ms`
        const total = [...kinds.values()].reduce((a, b) => a + b.n, 0)
        const line = [...kinds.entries()]
          .sort((a, b) => b[1].ms - a[1].ms)
          .map(([k, v]) => `${k}=${(v.n / batches).toFixed(2)}/${v.ms.toFixed(0)}ms`)
          .join(' ')
        console.log(
          `${which.padEnd(5)} w${workers} ${ms.toFixed(0)}ms ${((rows / ms) * 1000).toFixed(0)} rows/s cpu user ${(cpu.user / 1000).toFixed(0)}ms sys ${(cpu.system / 1000).toFixed(0)}ms server ${serverMs}; stmts/batch ${(total / batches).toFixed(2)} (ours only counted): ${line}`,
        )
      }
    }
  } finally {
    await floorDriver.close()
    await tables.drop()
    await raw.destroy()
  }
}
main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
