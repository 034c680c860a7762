/**
 * Where the plugin's time goes, database excluded. The same variants as case 2 run against a
 * dialect that answers each query from a result recorded on the real engine (an insert is
 * acknowledged without being sent), so what is timed is the CPU work of the process alone:
 * query building, the plugin's rewrite, compilation, keys, crypto, row decryption.
 *
 * This case explains the database ratios; it does not replace them. Every other number of
 * case 2 comes from the real engine.
 */
import {
  type CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  MysqlDialect,
  PostgresDialect,
  type QueryResult,
} from 'kysely'
import type { DbVariant, Person } from './db-variants.js'
import { measureRound, rotate, type Summary, summarize } from './harness.js'

/** µs per lookup, per lookup's build + compile alone, and per inserted row, by variant id. */
export interface CpuResult {
  readonly lookupUs: Record<string, Summary>
  /** µs per lookup with {@link COLD_BYTES} of other memory touched before each (not counted). */
  readonly coldLookupUs: Record<string, Summary>
  readonly compileUs: Record<string, Summary>
  /** µs per lookup's build + compile with {@link COLD_BYTES} of other memory touched before each. */
  readonly coldCompileUs: Record<string, Summary>
  readonly insertRowUs: Record<string, Summary>
  /** µs per inserted row of building and compiling the insert alone (crypto left out of the floor's). */
  readonly compileInsertRowUs: Record<string, Summary>
  /** µs per row of a select of every row (decrypted where encrypted). */
  readonly selectRowUs: Record<string, Summary>
}

/** A dialect whose connections can switch from the real engine to replaying what they recorded. */
export interface RecordingDialect {
  readonly dialect: Dialect
  /** From now on: answer from the recording (inserts are acknowledged, not sent). */
  replay(): void
  /** From now on: run every query for real again (a teardown's DROP must reach the engine). */
  live(): void
}

/** Wraps `inner`: queries run for real (and are recorded, by SQL text) until `replay()`. */
export function recordingDialect(inner: Dialect): RecordingDialect {
  const recorded = new Map<string, QueryResult<Record<string, unknown>>>()
  let replaying = false
  const copy = (r: QueryResult<Record<string, unknown>>) => ({
    ...r,
    rows: r.rows.map((row) => ({ ...row })),
  })
  const wrapped = new WeakMap<DatabaseConnection, DatabaseConnection>()
  const wrapConnection = (c: DatabaseConnection): DatabaseConnection => {
    const known = wrapped.get(c)
    if (known !== undefined) return known
    const w: DatabaseConnection = {
      streamQuery: (q, chunk) => c.streamQuery(q, chunk),
      async executeQuery<R>(q: CompiledQuery): Promise<QueryResult<R>> {
        if (replaying && /^\s*insert/i.test(q.sql)) {
          return { rows: [], numAffectedRows: BigInt(q.parameters.length) } as QueryResult<R>
        }
        const hit = replaying ? recorded.get(q.sql) : undefined
        if (hit !== undefined) return copy(hit) as QueryResult<R>
        const result = await c.executeQuery<Record<string, unknown>>(q)
        // Copied before anyone (the plugin's row decryption) rewrites the rows in place.
        recorded.set(q.sql, copy(result))
        return result as QueryResult<R>
      },
    }
    wrapped.set(c, w)
    return w
  }
  const unwrapped = new WeakMap<DatabaseConnection, DatabaseConnection>()
  const driver = (d: Driver): Driver => {
    const real = (c: DatabaseConnection) => unwrapped.get(c) ?? c
    return {
      init: () => d.init(),
      destroy: () => d.destroy(),
      async acquireConnection() {
        const c = await d.acquireConnection()
        const w = wrapConnection(c)
        unwrapped.set(w, c)
        return w
      },
      releaseConnection: (c) => d.releaseConnection(real(c)),
      beginTransaction: (c, s) => d.beginTransaction(real(c), s),
      commitTransaction: (c) => d.commitTransaction(real(c)),
      rollbackTransaction: (c) => d.rollbackTransaction(real(c)),
    }
  }
  return {
    dialect: {
      createAdapter: () => inner.createAdapter(),
      createDriver: () => driver(inner.createDriver()),
      createQueryCompiler: () => inner.createQueryCompiler(),
      createIntrospector: (db) => inner.createIntrospector(db),
    },
    replay: () => {
      replaying = true
    },
    live: () => {
      replaying = false
    },
  }
}

/**
 * The dialect of one engine for the tools that run on recorded results (counts.ts,
 * lookup-ab.ts): `pg` (PG_URL), `mysql` (MYSQL_URL, MariaDB or MySQL), else an in-process PGlite.
 */
export async function engineDialect(engine: string): Promise<Dialect> {
  if (engine === 'pg') {
    const pg = (await import('pg')).default
    return new PostgresDialect({ pool: new pg.Pool({ connectionString: process.env.PG_URL, max: 5 }) })
  }
  if (engine === 'mysql') {
    const { createPool } = await import('mysql2')
    return new MysqlDialect({ pool: createPool({ uri: process.env.MYSQL_URL ?? '', connectionLimit: 5 }) })
  }
  const { PGlite } = await import('@electric-sql/pglite')
  const { PGliteDialect } = await import('kysely-pglite-dialect')
  return new PGliteDialect(new PGlite())
}

/**
 * Creates each variant's table holding `data` (on the real engine, recorded), checks that a
 * lookup of `probe` finds its row, then switches `recording` to replaying.
 */
export async function recordLookups(
  variants: readonly DbVariant[],
  recording: RecordingDialect,
  data: readonly Person[],
  probe: Person,
): Promise<void> {
  for (const v of variants) {
    await v.drop()
    await v.create()
    await v.insert(data, data.length)
    if ((await v.lookup(probe.email))?.ssn !== probe.ssn) throw new Error(`${v.id}: wrong row`)
  }
  recording.replay()
}

/** Lookups per timed call: long enough for the timer, short enough that a GC is an outlier. */
const LOOKUPS_PER_CALL = 100
const COLD_LOOKUPS_PER_CALL = 20

/**
 * Memory touched between two cold lookups: about what a database round trip leaves behind in
 * the CPU caches (PGlite runs the whole server in this process; a socket round trip runs the
 * server's backend, often on the same core). Only the lookup itself is timed.
 */
export const COLD_BYTES = 8 << 20
const scratch = new Uint8Array(COLD_BYTES)

/** Touches one byte per cache line of {@link scratch}. */
function disturbCaches(): void {
  for (let i = 0; i < scratch.length; i += 64) scratch[i] = (scratch[i] as number) + 1
}

/**
 * Runs `op` `n` times, touching {@link COLD_BYTES} before each; returns the ms spent in `op`
 * alone (until its promise settles, when it returns one).
 */
async function disturbedCalls(n: number, op: () => unknown): Promise<number> {
  let spent = 0
  for (let i = 0; i < n; i++) {
    disturbCaches()
    const start = performance.now()
    const result = op()
    if (result instanceof Promise) await result
    spent += performance.now() - start
  }
  return spent
}

/** Appends one round's ms per operation, as µs, to each variant's samples. */
function keepUs(samples: Map<string, number[]>, round: ReadonlyMap<string, number>): void {
  for (const [id, ms] of round) samples.set(id, [...(samples.get(id) ?? []), ms * 1000])
}

/**
 * Records one lookup and one insert batch per variant on the real engine, then times them
 * replayed: `rounds` interleaved rounds (the first discarded); in each, every variant runs calls
 * of 100 lookups (caches warm, then disturbed), of 100 lookup compiles (warm, then disturbed), of a select of every row,
 * of one `batch`-row insert and of that insert's compile, for `timeMs` each; the median call counts.
 */
export async function measureCpu(
  variants: readonly DbVariant[],
  recording: RecordingDialect,
  data: readonly Person[],
  settings: { readonly timeMs: number; readonly batch: number; readonly rounds: number },
): Promise<CpuResult> {
  const probe = data[Math.floor(data.length / 2)] as Person
  const batch = data.slice(0, settings.batch)
  for (const v of variants) {
    await v.drop()
    await v.create()
    await v.insert(data, settings.batch)
    const row = await v.lookup(probe.email)
    if (row?.ssn !== probe.ssn) throw new Error(`${v.id}: the recorded lookup returned a wrong row`)
    const all = await v.selectAll()
    if (all.length !== data.length)
      throw new Error(`${v.id}: the recorded select returned ${all.length} rows`)
  }
  recording.replay()
  const lookups = new Map<string, number[]>()
  const colds = new Map<string, number[]>()
  const compiles = new Map<string, number[]>()
  const coldCompiles = new Map<string, number[]>()
  const selects = new Map<string, number[]>()
  const inserts = new Map<string, number[]>()
  const insertCompiles = new Map<string, number[]>()
  for (let r = 0; r < settings.rounds; r++) {
    const order = rotate(variants, r)
    const lookup = await measureRound(
      order.map((v) => ({
        name: v.id,
        batch: LOOKUPS_PER_CALL,
        run: async (n: number) => {
          for (let i = 0; i < n; i++) {
            const row = await v.lookup(probe.email)
            if (row?.ssn !== probe.ssn) throw new Error(`${v.id}: a replayed lookup returned a wrong row`)
          }
        },
      })),
      { timeMs: settings.timeMs, iterations: 5 },
    )
    const cold = await measureRound(
      order.map((v) => ({
        name: v.id,
        batch: COLD_LOOKUPS_PER_CALL,
        run: (n: number) =>
          disturbedCalls(n, async () => {
            const row = await v.lookup(probe.email)
            if (row?.ssn !== probe.ssn) throw new Error(`${v.id}: a replayed lookup returned a wrong row`)
          }),
      })),
      { timeMs: settings.timeMs, iterations: 5 },
    )
    const coldCompile = await measureRound(
      order.map((v) => ({
        name: v.id,
        batch: COLD_LOOKUPS_PER_CALL,
        run: (n: number) => disturbedCalls(n, () => v.compileLookup(probe.email)),
      })),
      { timeMs: settings.timeMs, iterations: 5 },
    )
    const compile = await measureRound(
      order.map((v) => ({
        name: v.id,
        batch: LOOKUPS_PER_CALL,
        run: (n: number) => {
          for (let i = 0; i < n; i++) v.compileLookup(probe.email)
        },
      })),
      { timeMs: settings.timeMs, iterations: 5 },
    )
    const select = await measureRound(
      order.map((v) => ({
        name: v.id,
        batch: data.length,
        run: async () => {
          const rows = await v.selectAll()
          if (rows.length !== data.length) throw new Error(`${v.id}: a replayed select lost rows`)
        },
      })),
      { timeMs: settings.timeMs, iterations: 5 },
    )
    const insert = await measureRound(
      order.map((v) => ({ name: v.id, batch: batch.length, run: () => v.insert(batch, batch.length) })),
      { timeMs: settings.timeMs, iterations: 5 },
    )
    const insertCompile = await measureRound(
      order.map((v) => ({ name: v.id, batch: batch.length, run: () => v.compileInsert(batch) })),
      { timeMs: settings.timeMs, iterations: 5 },
    )
    if (r === 0) continue
    keepUs(lookups, lookup)
    keepUs(colds, cold)
    keepUs(coldCompiles, coldCompile)
    keepUs(selects, select)
    keepUs(compiles, compile)
    keepUs(inserts, insert)
    keepUs(insertCompiles, insertCompile)
  }
  const summaries = (m: Map<string, number[]>) =>
    Object.fromEntries([...m].map(([id, samples]) => [id, summarize(samples)]))
  return {
    lookupUs: summaries(lookups),
    coldLookupUs: summaries(colds),
    compileUs: summaries(compiles),
    coldCompileUs: summaries(coldCompiles),
    insertRowUs: summaries(inserts),
    compileInsertRowUs: summaries(insertCompiles),
    selectRowUs: summaries(selects),
  }
}
