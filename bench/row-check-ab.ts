/**
 * The re-encryption job's row check (checkRow with rewrite, on rows a data-key rotation left on
 * the old version) of this checkout against the same code loaded from another copy of the
 * repository (the code before a change), interleaved in one process, each on its own in-memory
 * PGlite table: CPU µs per row (after a full GC before each loop) and the per-round difference.
 * Nothing is written to bench/results.
 *
 *   node --expose-gc --import tsx bench/row-check-ab.ts --base DIR [rows] [rounds]
 *
 * `DIR` is a checkout of the base commit (`git worktree add DIR <commit>`, with a node_modules link).
 */
import { resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { PGlite } from '@electric-sql/pglite'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'

const args = process.argv.slice(2)
const at = args.indexOf('--base')
const base = at === -1 ? undefined : args.splice(at, 2)[1]
if (base === undefined) throw new Error('usage: bench/row-check-ab.ts --base DIR [rows] [rounds]')
const N = Number(args[0] ?? 4000)
const ROUNDS = Number(args[1] ?? 21)
async function setup(dir: string) {
  const imp = (p: string) => import(pathToFileURL(resolve(dir, p)).href)
  const { opsTables } = await imp('bench/ops-tables.ts')
  const { createOpsContext } = await imp('src/ops/context.ts')
  const { keyColumn } = await imp('src/ops/primary-key.ts')
  const rc = await imp('src/ops/row-check.ts')
  const pglite = new PGlite()
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  const raw: Kysely<any> = new Kysely({ dialect: new PGliteDialect(pglite) })
  const tables = await opsTables(raw, {
    prefix: 'ab',
    family: 'postgres',
    rows: N,
    floor: false,
    appDialect: new PGliteDialect(pglite),
    sharesRaw: true,
  })
  const ctx = createOpsContext({
    db: raw,
    schema: tables.schema,
    keyProvider: tables.provider(),
    keyTable: tables.keyTable,
    metadataTtlMs: 0,
  })
  const table = ctx.table(tables.ours)
  const key = await keyColumn(ctx, table)
  const rows = await raw.selectFrom(tables.ours).select(rc.storedColumns(table, key)).orderBy('id').execute()
  await tables.ops.rotate(tables.ours, { purpose: 'data', reencrypt: false })
  ctx.ring.refresh()
  const keys = await rc.loadKeySet(ctx, table)
  return () => {
    let n = 0
    for (const r of rows) n += Object.keys(rc.checkRow(table, keys, r, true).updates).length
    return n
  }
}
const variants: Array<[string, () => number]> = [
  ['base', await setup(base)],
  ['new', await setup(fileURLToPath(new URL('..', import.meta.url)))],
]
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('Run with node --expose-gc.')
const us: Record<string, number[]> = { base: [], new: [] }
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? variants : [...variants].reverse()
  for (const [name, fn] of order) {
    gc()
    const c0 = process.cpuUsage()
    const n = fn()
    const c = process.cpuUsage(c0)
    if (n !== N * 2) throw new Error(`${name}: ${n} updates`)
    if (r > 0) us[name]!.push((c.user + c.system) / N)
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!
const diffs = us.new!.map((x, i) => x - us.base![i]!)
console.log(
  `cpu µs/row: base ${med(us.base!).toFixed(1)} (${Math.min(...us.base!).toFixed(1)}–${Math.max(...us.base!).toFixed(1)}), new ${med(us.new!).toFixed(1)} (${Math.min(...us.new!).toFixed(1)}–${Math.max(...us.new!).toFixed(1)}); new−base per round median ${med(diffs).toFixed(1)} (${Math.min(...diffs).toFixed(1)}–${Math.max(...diffs).toFixed(1)})`,
)
process.exit(0)
