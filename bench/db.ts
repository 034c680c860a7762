/**
 * Case 2: PostgreSQL, MariaDB/MySQL and PGlite. Per engine and round: fresh tables, insert
 * 10,000 rows in batches of 500, 2,000 sequential lookups by email, select all; the six variants
 * interleaved (rotating order) within each phase; tables dropped at the end of the round.
 */
import { randomBytes } from 'node:crypto'
import { PGlite } from '@electric-sql/pglite'
import { type Dialect, Kysely, MysqlDialect, PostgresDialect, sql, WithSchemaPlugin } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { createPool } from 'mysql2'
import pg from 'pg'
import type { FieldEncryption } from '../src/field-encryption.js'
import { encrypted, encryptedSchema, fieldEncryption, localKeyProvider } from '../src/index.js'
import { type CpuResult, measureCpu, recordingDialect } from './cpu.js'
import {
  type AnyDB,
  type DbVariant,
  type Family,
  FLOOR_THROUGH_KYSELY_PLUGIN,
  handWritten,
  type Person,
  people,
  plainKysely,
  plainKyselyControl,
  pluginEncrypted,
  pluginPlaintextTable,
} from './db-variants.js'
import { measureRound, rotate, type Summary, summarize } from './harness.js'

export type DbOp = 'insert' | 'lookup' | 'selectAll'
export const DB_OPS: readonly DbOp[] = ['insert', 'lookup', 'selectAll']

/**
 * Times each op runs per variant and round; the round keeps the median, because one run on this
 * machine is partly scheduler noise (a select of 10,000 plaintext rows takes a few ms). Each
 * insert goes into a table dropped and created again just before it, outside the timed part.
 */
export const REPEATS: Readonly<Record<DbOp, number>> = { insert: 5, lookup: 5, selectAll: 9 }

/**
 * The key cache's TTL in the plugin's instance (the library's default, stated here because the
 * key-provider target is per TTL): a run longer than this reloads each key once per TTL.
 */
export const KEY_TTL_MS = 300_000

export interface DbSettings {
  readonly rows: number
  readonly batchSize: number
  readonly lookups: number
  readonly rounds: number
}

export interface EngineResult {
  readonly engine: string
  /** Why it was not run (no URL, unreachable), or undefined when it ran. */
  readonly notRun?: string
  readonly server?: string
  readonly variants?: ReadonlyArray<{ id: string; label: string; reference?: string }>
  /** variant → op → ms for the whole operation (10,000 inserts, 2,000 lookups, one select). */
  readonly timings?: Record<string, Record<DbOp, Summary>>
  /** Key-provider calls of the plugin's instance, after each round (cumulative). */
  readonly providerCallsPerRound?: readonly number[]
  /** ms from the plugin's instance's creation to the last round's end: how many TTLs it lived. */
  readonly pluginLifetimeMs?: number
  /** The key cache TTL of that instance. */
  readonly keyTtlMs?: number
  /** Keys the plugin's instance uses: (table, purpose, version). */
  readonly keys?: number
  /** Rows the plugin's instance wrote and read, over all rounds. */
  readonly rowsThroughPlugin?: number
  /** The same variants with the database replaced by recorded results (bench/cpu.ts). */
  readonly cpu?: CpuResult
  readonly settings?: DbSettings
}

interface Engine {
  readonly name: string
  readonly family: Family
  /**
   * Two dialects over ONE connection pool (one PGlite instance): one for plain Kysely, one to
   * wrap. Sharing the pool means every variant's queries go to the same server backends, so no
   * variant is favoured by where the scheduler happened to put its own backend process.
   */
  readonly dialects: () => [Dialect, Dialect]
  /** The schema (MySQL: the database) the bench's tables are in, for WithSchemaPlugin. */
  readonly schemaName: string
  readonly version: (db: AnyDB) => Promise<string>
}

function engines(): Array<Engine | { name: string; notRun: string }> {
  const pgUrl = process.env.PG_URL
  const mysqlUrl = process.env.MYSQL_URL
  const pgVersion = async (db: AnyDB) =>
    (await sql<{ v: string }>`select version() as v`.execute(db)).rows[0]?.v.split(' on ')[0] ?? '?'
  const out: Array<Engine | { name: string; notRun: string }> = []
  out.push(
    pgUrl
      ? {
          name: 'PostgreSQL',
          family: 'postgres',
          dialects: () => {
            const pool = new pg.Pool({ connectionString: pgUrl, max: 5 })
            return [new PostgresDialect({ pool }), new PostgresDialect({ pool })]
          },
          schemaName: 'public',
          version: pgVersion,
        }
      : { name: 'PostgreSQL', notRun: 'NOT RUN: PG_URL is not set' },
  )
  out.push(
    mysqlUrl
      ? {
          name: 'MariaDB/MySQL',
          family: 'mysql',
          dialects: () => {
            const pool = createPool({ uri: mysqlUrl, connectionLimit: 5 })
            return [new MysqlDialect({ pool }), new MysqlDialect({ pool })]
          },
          schemaName: decodeURIComponent(new URL(mysqlUrl).pathname.slice(1)),
          version: async (db) =>
            (await sql<{ v: string }>`select version() as v`.execute(db)).rows[0]?.v ?? '?',
        }
      : { name: 'MariaDB/MySQL', notRun: 'NOT RUN: MYSQL_URL is not set' },
  )
  out.push({
    name: 'PGlite',
    family: 'postgres',
    dialects: () => {
      const instance = new PGlite()
      return [new PGliteDialect(instance), new PGliteDialect(instance)]
    },
    schemaName: 'public',
    version: pgVersion,
  })
  return out
}

function unique(prefix: string): string {
  return `${prefix}_${process.pid}_${randomBytes(3).toString('hex')}`
}

function check(variant: string, what: string, ok: boolean): void {
  if (!ok) throw new Error(`${variant}: ${what}`)
}

/** Table names of one run, unique to this process. */
function tableNames() {
  return {
    plain: unique('bench_plain'),
    floor: unique('bench_floor'),
    floorPlugin: unique('bench_floorp'),
    plugin: unique('bench_enc'),
    pluginPlain: unique('bench_pplain'),
    control: unique('bench_control'),
    keys: unique('bench_kfe_keys'),
  }
}

/** The plugin's instance and the six variants, on two dialects of one engine. */
function setUp(engine: Engine, dialects: [Dialect, Dialect]) {
  const names = tableNames()
  const schema = encryptedSchema({
    [names.plugin]: {
      email: encrypted.text({ index: { name: 'email_bidx' }, maxBytes: 320 }),
      ssn: encrypted.text({ maxBytes: 64 }),
    },
  })
  const kek = randomBytes(32)
  const options = {
    schema,
    keyTable: names.keys,
    cache: { ttlMs: KEY_TTL_MS },
    // The floor variants' tables have the plugin table's columns (email_bidx) on purpose, unannotated.
    verifySchema: { unannotatedTables: false },
  }
  const encryption: FieldEncryption = fieldEncryption({
    ...options,
    keyProvider: localKeyProvider({ key: Buffer.from(kek) }),
  })
  /**
   * Creates the keys from another instance, before any round: the target counts the measured
   * instance's provider calls, one per key per cache TTL (its unwraps), not a key's creation,
   * which calls the provider once more per KEK to prove the wrapping unwraps.
   */
  const createKeys = async () => {
    const creator = fieldEncryption({ ...options, keyProvider: localKeyProvider({ key: Buffer.from(kek) }) })
    try {
      await creator.init(plainDb)
    } finally {
      await creator.close()
    }
  }
  const [plainDialect, appDialect] = dialects
  const plainDb: AnyDB = new Kysely({ dialect: plainDialect })
  const appDb: AnyDB = new Kysely({ dialect: encryption.wrap(appDialect), plugins: [encryption.plugin] })
  const variants: DbVariant[] = [
    plainKysely(plainDb, names.plain),
    handWritten(plainDb, names.floor, engine.family, schema, names.plugin),
    handWritten(
      plainDb.withPlugin(new WithSchemaPlugin(engine.schemaName)),
      names.floorPlugin,
      engine.family,
      schema,
      names.plugin,
      FLOOR_THROUGH_KYSELY_PLUGIN,
    ),
    pluginEncrypted(appDb, names.plugin, engine.family, schema),
    pluginPlaintextTable(appDb, names.pluginPlain),
    plainKyselyControl(plainDb, names.control),
  ]
  const tearDown = async () => {
    for (const v of variants) await v.drop().catch(() => undefined)
    await sql`drop table if exists ${sql.table(names.keys)}`.execute(plainDb).catch(() => undefined)
    await encryption.close()
    // One pool (or PGlite instance) under both: closing it once is enough.
    await appDb.destroy()
  }
  return { encryption, plainDb, variants, tearDown, createKeys }
}

/** The CPU case (bench/cpu.ts) on its own instance, tables and connections. */
async function runCpu(engine: Engine, data: readonly Person[], settings: DbSettings): Promise<CpuResult> {
  const [a, b] = engine.dialects()
  const plain = recordingDialect(a)
  const app = recordingDialect(b)
  const { variants, tearDown, createKeys } = setUp(engine, [plain.dialect, app.dialect])
  try {
    await createKeys()
    return await measureCpu(
      variants,
      {
        dialect: plain.dialect,
        replay: () => {
          plain.replay()
          app.replay()
        },
        live: () => {
          plain.live()
          app.live()
        },
      },
      data.slice(0, settings.batchSize),
      { timeMs: settings.lookups >= 1000 ? 300 : 30, batch: settings.batchSize, rounds: settings.rounds },
    )
  } finally {
    // The tables were made for real: so must their DROPs be, not answered from the recording.
    plain.live()
    app.live()
    await tearDown()
  }
}

async function runEngine(
  engine: Engine,
  settings: DbSettings,
  log: (s: string) => void,
): Promise<EngineResult> {
  const born = performance.now()
  const { encryption, plainDb, variants, tearDown, createKeys } = setUp(engine, engine.dialects())
  const data = people(settings.rows)
  const byEmail = new Map(data.map((p) => [p.email, p]))
  // The same lookups for every variant: a fixed stride through the rows.
  const probes = Array.from({ length: settings.lookups }, (_, i) => data[(i * 7919) % data.length] as Person)
  const raw = new Map<string, Record<DbOp, number[]>>(
    variants.map((v) => [v.id, { insert: [], lookup: [], selectAll: [] }]),
  )
  const providerCallsPerRound: number[] = []
  try {
    await createKeys()
    const server = await engine.version(plainDb)
    for (let r = 0; r < settings.rounds; r++) {
      log(`${engine.name}: round ${r + 1}/${settings.rounds}${r === 0 ? ' (warm-up, discarded)' : ''}`)
      const order = rotate(variants, r)
      // A run returns the ms to count (the insert alone), or nothing: then its wall time counts.
      const phases: Record<DbOp, (v: DbVariant) => () => Promise<number | undefined>> = {
        insert: (v) => async () => {
          await v.drop()
          await v.create()
          const start = performance.now()
          await v.insert(data, settings.batchSize)
          return performance.now() - start
        },
        lookup: (v) => async () => {
          let found = 0
          for (const p of probes) {
            const row = await v.lookup(p.email)
            if (row !== undefined && row.ssn === p.ssn) found++
          }
          check(v.id, `found ${found} of ${probes.length} looked-up rows`, found === probes.length)
          return undefined
        },
        selectAll: (v) => async () => {
          const rows = await v.selectAll()
          check(v.id, `select all returned ${rows.length} rows`, rows.length === data.length)
          const sample = rows.find((row) => row.id === 1)
          check(
            v.id,
            'select all returned wrong values',
            sample?.ssn === byEmail.get(sample?.email ?? '')?.ssn,
          )
          return undefined
        },
      }
      for (const op of ['insert', 'lookup', 'selectAll'] as const) {
        const result = await measureRound(
          order.map((v) => ({ name: v.id, batch: 1, run: phases[op](v) })),
          { timeMs: 0, iterations: REPEATS[op] },
        )
        if (r === 0) continue
        for (const [id, ms] of result) raw.get(id)?.[op].push(ms)
      }
      for (const v of variants) await v.drop()
      providerCallsPerRound.push(encryption.stats().keys?.providerCalls ?? Number.NaN)
    }
    const pluginLifetimeMs = performance.now() - born
    log(`${engine.name}: CPU case (the database replaced by recorded results)`)
    const cpu = await runCpu(engine, data, settings)
    const timings: Record<string, Record<DbOp, Summary>> = {}
    for (const [id, ops] of raw) {
      timings[id] = {
        insert: summarize(ops.insert),
        lookup: summarize(ops.lookup),
        selectAll: summarize(ops.selectAll),
      }
    }
    return {
      engine: engine.name,
      server,
      variants: variants.map((v) => ({
        id: v.id,
        label: v.label,
        ...(v.reference === undefined ? {} : { reference: v.reference }),
      })),
      timings,
      providerCallsPerRound,
      pluginLifetimeMs,
      keyTtlMs: KEY_TTL_MS,
      keys: encryption.stats().keys?.cache.size ?? Number.NaN,
      rowsThroughPlugin:
        settings.rounds *
        (settings.rows * (REPEATS.insert + REPEATS.selectAll) + settings.lookups * REPEATS.lookup),
      cpu,
      settings,
    }
  } finally {
    await tearDown()
  }
}

/** Runs case 2 on every engine with a URL (and PGlite always). */
export async function runDbBench(settings: DbSettings, log: (s: string) => void): Promise<EngineResult[]> {
  const out: EngineResult[] = []
  for (const engine of engines()) {
    if ('notRun' in engine) {
      log(`${engine.name}: ${engine.notRun}`)
      out.push({ engine: engine.name, notRun: engine.notRun })
      continue
    }
    out.push(await runEngine(engine, settings, log))
  }
  return out
}
