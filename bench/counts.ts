/**
 * Counts, not times: what one lookup and one 500-row insert cost the floor, the floor through
 * Kysely's WithSchemaPlugin and the plugin, in things a loaded machine cannot blur. Against
 * results recorded on the real engine (bench/cpu.ts), so the database does no work:
 *
 * - promises created (an async_hooks count: the promise hops of each path);
 * - heap bytes allocated (growth of V8's young generation; a run in which a GC struck says so);
 * - `__name` calls: under tsx, which the benchmarks run through, every named closure also costs
 *   an `Object.defineProperty` (the published build has none);
 * - node:crypto cipher, decipher and HMAC objects made.
 *
 *   node --expose-gc --max-semi-space-size=512 --import tsx bench/counts.ts pg|mysql|pglite
 *
 * PostgreSQL and MariaDB/MySQL take PG_URL and MYSQL_URL. Nothing is written to bench/results.
 */
import { createHook } from 'node:async_hooks'
import { createRequire, syncBuiltinESMExports } from 'node:module'
import { getHeapStatistics } from 'node:v8'

const counts = { __name: 0, createCipheriv: 0, createDecipheriv: 0, createHmac: 0 }
type Counted = keyof typeof counts

// Before anything else is imported: node:crypto's functions (ESM imports see the patched ones
// after syncBuiltinESMExports) and Object.defineProperty (tsx's __name helper binds it once, when
// each module loads).
const crypto = createRequire(import.meta.url)('node:crypto') as Record<string, unknown>
for (const name of ['createCipheriv', 'createDecipheriv', 'createHmac'] as const) {
  const original = crypto[name] as (...args: unknown[]) => unknown
  crypto[name] = function (this: unknown, ...args: unknown[]) {
    counts[name]++
    return original.apply(this, args)
  }
}
syncBuiltinESMExports()
const defineProperty = Object.defineProperty
Object.defineProperty = ((target: object, key: PropertyKey, descriptor: PropertyDescriptor) => {
  if (key === 'name' && typeof target === 'function') counts.__name++
  return defineProperty(target, key, descriptor)
}) as typeof Object.defineProperty

const { randomBytes } = await import('node:crypto')
const { Kysely, sql, WithSchemaPlugin } = await import('kysely')
const { encrypted, encryptedSchema, fieldEncryption, localKeyProvider } = await import('../src/index.js')
const { engineDialect, recordLookups, recordingDialect } = await import('./cpu.js')
const { FLOOR_THROUGH_KYSELY_PLUGIN, handWritten, people, pluginEncrypted } = await import('./db-variants.js')

const engine = process.argv[2] ?? 'pglite'
const family = engine === 'mysql' ? 'mysql' : 'postgres'
const schemaName =
  engine === 'mysql' ? decodeURIComponent(new URL(process.env.MYSQL_URL ?? '').pathname.slice(1)) : 'public'
const recording = recordingDialect(await engineDialect(engine))
const prefix = `bench_counts_${process.pid}`
const schema = encryptedSchema({
  [`${prefix}_enc`]: {
    email: encrypted.text({ index: { name: 'email_bidx' }, maxBytes: 320 }),
    ssn: encrypted.text({ maxBytes: 64 }),
  },
})
const encryption = fieldEncryption({
  schema,
  keyProvider: localKeyProvider({ key: randomBytes(32) }),
  keyTable: `${prefix}_keys`,
  autoCreateKeys: true,
  verifySchema: { unannotatedTables: false },
})
// biome-ignore lint/suspicious/noExplicitAny: bench tables are named at run time.
const plainDb = new Kysely<any>({ dialect: recording.dialect })
// biome-ignore lint/suspicious/noExplicitAny: as above.
const appDb = new Kysely<any>({ dialect: encryption.wrap(recording.dialect), plugins: [encryption.plugin] })
const like = `${prefix}_enc`
const variants = [
  handWritten(plainDb, `${prefix}_floor`, family, schema, like),
  handWritten(
    plainDb.withPlugin(new WithSchemaPlugin(schemaName)),
    `${prefix}_floorp`,
    family,
    schema,
    like,
    FLOOR_THROUGH_KYSELY_PLUGIN,
  ),
  pluginEncrypted(appDb, like, family, schema),
]
const data = people(500)
const probe = data[250] as (typeof data)[number]
await recordLookups(variants, recording, data, probe)

let promises = 0
const hook = createHook({
  init(_id, type) {
    if (type === 'PROMISE') promises++
  },
})
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('Run with node --expose-gc (see the header).')

try {
  for (const op of ['lookup', 'insert 500 rows'] as const) {
    for (const v of variants) {
      const run = () => (op === 'lookup' ? v.lookup(probe.email) : v.insert(data, 500))
      const n = op === 'lookup' ? 300 : 10
      for (let i = 0; i < n; i++) await run() // warm: JIT, key cache
      gc()
      const before = getHeapStatistics().used_heap_size
      for (let i = 0; i < n; i++) await run()
      const after = getHeapStatistics().used_heap_size
      for (const k of Object.keys(counts) as Counted[]) counts[k] = 0
      promises = 0
      hook.enable()
      for (let i = 0; i < n; i++) await run()
      hook.disable()
      const per = (x: number) => (x / n).toFixed(1)
      const heap = after < before ? 'a GC ran: not counted' : `${Math.round((after - before) / n)} B`
      process.stdout.write(
        `${engine} ${op}, ${v.label}: promises ${per(promises)}, heap allocated ${heap}, ${(
          Object.keys(counts) as Counted[]
        )
          .map((k) => `${k} ${per(counts[k])}`)
          .join(', ')}\n`,
      )
    }
  }
} finally {
  recording.live() // the DROPs must reach the engine, not be answered from the recording
  for (const v of variants) await v.drop().catch(() => undefined)
  await encryption.close()
  // The key table autoCreateKeys made: left behind, it is an unannotated table holding wrapped
  // keys, which the next benchmark's schema check refuses.
  await sql`drop table if exists ${sql.table(`${prefix}_keys`)}`.execute(plainDb).catch(() => undefined)
  process.exit(0)
}
