/**
 * CPU time and heap per lookup, interleaved in one process: the floor, the floor through Kysely's
 * WithSchemaPlugin (a plugin's bare cost), the plugin, and, with `--base DIR`, the plugin loaded
 * from another copy of `src/` (the code before a change) — so a before/after pair comes from one
 * run, and a loaded machine shifts both alike. Against results recorded on the engine (cpu.ts's
 * recording dialect), so the database does no work and only this process's CPU is counted.
 *
 *   node --expose-gc --import tsx bench/lookup-ab.ts [pg|mysql|pglite] [--base DIR] [--rounds N]
 *     [--lookups N] [--warmup N] [--cold] [--live] [--callgrind FILE]
 *
 * `DIR` holds a copy of `src/` and a `node_modules` link (e.g. `git worktree add` of the base
 * commit, or `cp -r src /tmp/base/src && ln -s $PWD/node_modules /tmp/base/`). `--cold` touches
 * 8 MiB before each lookup, as a database round trip does to the CPU caches (the touching is
 * counted for every variant alike: compare differences, not ratios). Each round runs every
 * variant once, in a rotating order, for `--lookups` lookups timed by `process.cpuUsage()` (user
 * + system); round 0 is discarded. Printed: per variant the median µs per lookup and its range
 * over rounds, the per-round difference from the bare plugin (median and range), and heap bytes
 * allocated per lookup (young-generation growth over 100 lookups after a full GC). Nothing is
 * written to bench/results.
 *
 * `--live` sends every lookup to the engine instead (PG_URL, MYSQL_URL, or PGlite in this
 * process) and times wall-clock µs per lookup: the database ratio of `npm run bench`'s lookups,
 * with the variants interleaved in one process the same way, so that a change (`--base`) is
 * seen with its round trips.
 *
 * `--callgrind FILE` counts instructions instead of CPU time, which load does not change: run
 * the script under `valgrind --tool=callgrind --callgrind-out-file=FILE --dump-instr=no
 * --dump-line=no node --single-threaded …` (one thread: no background compiler or GC whose work
 * would land in whichever interval it ran). Each interval ends with a dump of the counts since
 * the previous one; an empty interval measures the dump's own cost, which is subtracted. Under
 * valgrind a lookup takes ~50 times as long: use a few rounds (5–10) of a few hundred lookups.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { getHeapStatistics } from 'node:v8'
import { Kysely, sql, WithSchemaPlugin } from 'kysely'
import { COLD_BYTES, engineDialect, recordingDialect, recordLookups } from './cpu.js'
import {
  type DbVariant,
  FLOOR_THROUGH_KYSELY_PLUGIN,
  handWritten,
  type Person,
  people,
  pluginEncrypted,
} from './db-variants.js'
import { collectGarbage, median, rotate } from './harness.js'

const args = process.argv.slice(2)
const option = (name: string): string | undefined => {
  const at = args.indexOf(name)
  return at === -1 ? undefined : args[at + 1]
}
const engine = args[0] !== undefined && !args[0].startsWith('--') ? args[0] : 'pglite'
const base = option('--base')
const rounds = Number(option('--rounds') ?? 31)
const lookups = Number(option('--lookups') ?? 400)
const cold = args.includes('--cold')
const callgrind = option('--callgrind')
const live = args.includes('--live')
if (live && callgrind !== undefined) throw new Error('--live times wall-clock: not with --callgrind')
const warmup = Number(option('--warmup') ?? 300)

const family = engine === 'mysql' ? 'mysql' : 'postgres'
const schemaName =
  engine === 'mysql' ? decodeURIComponent(new URL(process.env.MYSQL_URL ?? '').pathname.slice(1)) : 'public'
const recording = recordingDialect(await engineDialect(engine))
const prefix = `bench_ab_${process.pid}`
// biome-ignore lint/suspicious/noExplicitAny: bench tables are named at run time.
const plainDb = new Kysely<any>({ dialect: recording.dialect })

type Library = typeof import('../src/index.js')
const closers: (() => Promise<void>)[] = []
/** The key tables the plugin variants create (autoCreateKeys): dropped with the variants' tables. */
const keyTables: string[] = []

/** The plugin variant built from one copy of the library. */
function pluginVariant(lib: Library, id: string, label: string): DbVariant {
  const table = `${prefix}_${id.replace(/\W/g, '_')}`
  const schema = lib.encryptedSchema({
    [table]: {
      email: lib.encrypted.text({ index: { name: 'email_bidx' }, maxBytes: 320 }),
      ssn: lib.encrypted.text({ maxBytes: 64 }),
    },
  })
  const encryption = lib.fieldEncryption({
    schema,
    keyProvider: lib.localKeyProvider({ key: randomBytes(32) }),
    keyTable: `${table}_keys`,
    autoCreateKeys: true,
    verifySchema: { unannotatedTables: false },
  })
  closers.push(() => encryption.close())
  keyTables.push(`${table}_keys`)
  // biome-ignore lint/suspicious/noExplicitAny: as above.
  const db = new Kysely<any>({ dialect: encryption.wrap(recording.dialect), plugins: [encryption.plugin] })
  return { ...pluginEncrypted(db, table, family, schema), id, label }
}

const current = (await import('../src/index.js')) as Library
const floorSchema = current.encryptedSchema({
  [`${prefix}_like`]: {
    email: current.encrypted.text({ index: { name: 'email_bidx' }, maxBytes: 320 }),
    ssn: current.encrypted.text({ maxBytes: 64 }),
  },
})
const variants: DbVariant[] = [
  handWritten(plainDb, `${prefix}_floor`, family, floorSchema, `${prefix}_like`),
  handWritten(
    plainDb.withPlugin(new WithSchemaPlugin(schemaName)),
    `${prefix}_floorp`,
    family,
    floorSchema,
    `${prefix}_like`,
    FLOOR_THROUGH_KYSELY_PLUGIN,
  ),
  pluginVariant(current, 'plugin', 'plugin (this src/)'),
]
if (base !== undefined) {
  const url = pathToFileURL(resolve(base, 'src/index.ts')).href
  variants.push(pluginVariant((await import(url)) as Library, 'base', `plugin (${base}/src)`))
}

const data = people(500)
const probe = data[250] as Person
const scratch = new Uint8Array(COLD_BYTES)
function disturbCaches(): void {
  for (let i = 0; i < scratch.length; i += 64) scratch[i] = (scratch[i] as number) + 1
}

/**
 * Ends a callgrind interval: `callgrind_control -d` makes valgrind write the counts since the
 * previous dump. Callgrind reads the command only while this process runs code, so the event
 * loop polls (cheaply) until the dump is done, rather than blocking.
 */
function dump(): Promise<void> {
  return new Promise((done, fail) => {
    const keepRunning = setInterval(() => undefined, 1)
    execFile('callgrind_control', ['-d', String(process.pid)], (error) => {
      clearInterval(keepRunning)
      if (error === null) done()
      else fail(error)
    })
  })
}

/** The empty interval of the callgrind mode: what a dump itself costs. */
const IDLE = { id: 'idle' } as DbVariant

async function batch(v: DbVariant, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    if (cold) disturbCaches()
    await v.lookup(probe.email)
  }
}

try {
  await recordLookups(variants, recording, data, probe)
  if (live) recording.live()
  for (const v of variants) await batch(v, warmup) // JIT tiers, key cache

  const us = new Map<string, number[]>(variants.map((v) => [v.id, []]))
  if (callgrind === undefined) {
    for (let r = 0; r < rounds; r++) {
      for (const v of rotate(variants, r)) {
        collectGarbage()
        const start = process.cpuUsage()
        const wall = performance.now()
        await batch(v, lookups)
        const spent = process.cpuUsage(start)
        const us1 = live ? (performance.now() - wall) * 1000 : spent.user + spent.system
        if (r > 0) us.get(v.id)?.push(us1 / lookups)
      }
    }
  } else {
    // Each interval ends with a dump, which holds the instructions since the previous one.
    const order: (string | undefined)[] = [undefined] // dump 1: everything up to here
    await dump()
    for (let r = 0; r < rounds; r++) {
      for (const v of [...rotate(variants, r), IDLE]) {
        // The collection in an interval of its own (not counted), so each lookup interval
        // starts from an empty young generation like the CPU mode's.
        collectGarbage()
        await dump()
        order.push(undefined)
        await batch(v, v === IDLE ? 0 : lookups)
        await dump()
        order.push(r > 0 ? v.id : undefined)
      }
    }
    const idle: number[] = []
    order.forEach((id, i) => {
      if (id === undefined) return
      const text = readFileSync(`${callgrind}.${i + 1}`, 'utf8')
      const total = Number(/^summary: (\d+)/m.exec(text)?.[1])
      if (id === IDLE.id) idle.push(total)
      else us.get(id)?.push(total)
    })
    // Thousand instructions per lookup, less the dump's own cost (the idle intervals' median).
    const spin = median(idle)
    for (const xs of us.values())
      for (let i = 0; i < xs.length; i++) xs[i] = ((xs[i] as number) - spin) / lookups / 1000
  }
  const heap = new Map<string, number[]>(variants.map((v) => [v.id, []]))
  for (let r = 0; r < 9; r++) {
    for (const v of rotate(variants, r)) {
      collectGarbage()
      const before = getHeapStatistics().used_heap_size
      await batch(v, 100)
      const after = getHeapStatistics().used_heap_size
      if (after > before) heap.get(v.id)?.push((after - before) / 100)
    }
  }

  const bare = us.get(FLOOR_THROUGH_KYSELY_PLUGIN.id) as number[]
  const floor = us.get('floor') as number[]
  const unit =
    callgrind !== undefined
      ? 'thousand instructions (callgrind)'
      : live
        ? 'wall-clock µs (live engine)'
        : 'CPU µs'
  const f = (x: number) => x.toFixed(2)
  const range = (xs: readonly number[]) =>
    `median ${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`
  process.stdout.write(
    `${engine}${cold ? ', cold' : ''}: ${rounds - 1} rounds × ${lookups} lookups; ${unit} per lookup\n`,
  )
  for (const v of variants) {
    const xs = us.get(v.id) as number[]
    const overBare = xs.map((x, i) => x - (bare[i] as number))
    const overFloor = xs.map((x, i) => x / (floor[i] as number))
    const h = heap.get(v.id) as number[]
    process.stdout.write(
      `  ${v.label}\n    ${range(xs)}; − bare plugin ${range(overBare)}; / floor ${range(overFloor)}\n` +
        `    heap per lookup ${h.length === 0 ? 'not measured (GC)' : `${Math.round(median(h))} B`}\n`,
    )
  }
  if (base !== undefined) {
    const a = us.get('plugin') as number[]
    const b = us.get('base') as number[]
    process.stdout.write(`  plugin − base, per round: ${range(a.map((x, i) => x - (b[i] as number)))}\n`)
  }
} finally {
  recording.live() // the DROPs must reach the engine, not be answered from the recording
  for (const v of variants) await v.drop().catch(() => undefined)
  for (const close of closers) await close()
  for (const t of keyTables)
    await sql`drop table if exists ${sql.table(t)}`.execute(plainDb).catch(() => undefined)
  process.exit(0)
}
