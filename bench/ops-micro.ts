/** Scratch: per-row JS cost of ours (spec.plan = checkRow with rewrite) vs the floor's crypto, no DB in the timed loop. */
import { PGlite } from '@electric-sql/pglite'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { createOpsContext } from '../src/ops/context.js'
import { keyColumn } from '../src/ops/primary-key.js'
import { checkRow, destroyKeySet, loadKeySet, storedColumns } from '../src/ops/row-check.js'
import { opsTables } from './ops-tables.js'

const N = Number(process.argv[2] ?? 5000)
async function main() {
  const pglite = new PGlite()
  // biome-ignore lint/suspicious/noExplicitAny: scratch
  const raw: Kysely<any> = new Kysely({ dialect: new PGliteDialect(pglite) })
  const tables = await opsTables(raw, {
    prefix: 'micro',
    family: 'postgres',
    rows: N,
    floor: false,
    appDialect: new PGliteDialect(pglite),
    sharesRaw: true,
  })
  const { ours, schema, cipher } = tables
  const ctx = createOpsContext({
    db: raw,
    schema,
    keyProvider: tables.provider(),
    keyTable: tables.keyTable,
    metadataTtlMs: 0,
  })
  const table = ctx.table(ours)
  const key = await keyColumn(ctx, table)
  const rows = (await raw
    .selectFrom(ours)
    .select(storedColumns(table, key))
    .orderBy('id')
    .execute()) as Record<string, unknown>[]
  // A new data version, staged and activated (no re-encryption): the rows read above are now on the old one.
  await tables.ops.rotate(ours, { purpose: 'data', reencrypt: false })
  ctx.ring.refresh()
  const frows = tables.people.map((p) => cipher.row(p.id, p.name, p.email, p.ssn))
  const results: number[] = []
  for (let round = 0; round < 12; round++) {
    const keys = await loadKeySet(ctx, table)
    let c0 = process.cpuUsage()
    let t0 = performance.now()
    let n = 0
    for (let i = 0; i < rows.length; i++) {
      const c = checkRow(table, keys, rows[i]!, true)
      n += Object.keys(c.updates).length
    }
    const ours = performance.now() - t0
    const oursCpu = process.cpuUsage(c0)
    destroyKeySet(keys)
    c0 = process.cpuUsage()
    t0 = performance.now()
    for (const r of frows) {
      const email = cipher.open(r.email, 0)
      const ssn = cipher.open(r.ssn, 0)
      n +=
        cipher.seal(email, 1).length +
        cipher.emailIndex(email).length +
        cipher.seal(ssn, 1).length +
        cipher.ssnIndex(ssn).length
    }
    const floor = performance.now() - t0
    const floorCpu = process.cpuUsage(c0)
    const cpu = (u: NodeJS.CpuUsage) => (u.user + u.system) / N
    results.push(cpu(oursCpu) / cpu(floorCpu))
    console.log(
      `ours ${((ours / N) * 1000).toFixed(1)} us/row, floor ${((floor / N) * 1000).toFixed(1)} us/row, ratio ${(ours / floor).toFixed(2)}; cpu ${cpu(oursCpu).toFixed(1)} vs ${cpu(floorCpu).toFixed(1)} us/row, ratio ${(cpu(oursCpu) / cpu(floorCpu)).toFixed(2)} (${n})`,
    )
  }
  results.sort((a, b) => a - b)
  console.log(
    `cpu ratio over ${results.length} rounds: median ${results[results.length >> 1]?.toFixed(2)}, min ${results[0]?.toFixed(2)}, max ${results.at(-1)?.toFixed(2)}`,
  )
  await ctx.ring.close()
  await tables.drop()
  await raw.destroy()
}
main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
