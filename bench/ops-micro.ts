/**
 * Per-row JS cost of ours (spec.plan = checkRow with rewrite) vs the floor's crypto, no DB in the
 * timed loop. `tsx bench/ops-micro.ts N` compares whole rows; `node --expose-gc
 * --max-semi-space-size=512 --import tsx bench/ops-micro.ts N parts` also takes a row apart: the
 * row check, the same primitives called back to back, the floor's row, and each primitive against
 * the floor's, as CPU µs (minimum over rounds) and heap bytes per call.
 */

import { getHeapStatistics } from 'node:v8'
import { PGlite } from '@electric-sql/pglite'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { decryptValue } from '../src/fields/field-cipher.js'
import { headerKeyVersion } from '../src/fields/format.js'
import { createOpsContext } from '../src/ops/context.js'
import { keyColumn } from '../src/ops/primary-key.js'
import { checkRow, destroyKeySet, type KeySet, loadKeySet, storedColumns } from '../src/ops/row-check.js'
import { encryptColumn, indexValue } from '../src/plugin/resolve-values.js'
import { rowAad } from '../src/schema/row-context.js'
import type { TableInfo } from '../src/schema/schema.js'
import type { FloorCipher, FloorRow } from './ops-floor.js'
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
  if (process.argv[3] === 'parts') {
    const keys = await loadKeySet(ctx, table)
    parts(table, keys, rows, cipher, frows)
    destroyKeySet(keys)
  }
  await ctx.ring.close()
  await tables.drop()
  await raw.destroy()
}
/** A row taken apart (see the header): one line per part, CPU µs and heap bytes per call. */
function parts(
  table: TableInfo,
  keys: KeySet,
  rows: Record<string, unknown>[],
  cipher: FloorCipher,
  frows: FloorRow[],
): void {
  const M = Math.min(rows.length, 2000)
  const email = table.columns.get('email')!
  const ssn = table.columns.get('ssn')!
  const emailIndex = table.indexColumn('email_bidx')!
  const ssnIndex = table.indexColumn('ssn_bidx')!
  const active = keys.data.get(keys.activeData)!
  const index = keys.index.get(keys.activeIndex)!
  const open = (column: typeof email, row: Record<string, unknown>) => {
    const ct = row[column.stored] as Uint8Array
    return decryptValue(
      column.spec.codec,
      ct,
      keys.data.get(headerKeyVersion(ct))!,
      rowAad(column, undefined),
    )
  }
  const emails = rows.slice(0, M).map((r) => open(email, r))
  const variants: Array<[string, (i: number) => unknown]> = [
    ['row check (checkRow)', (i) => checkRow(table, keys, rows[i]!, true)],
    [
      'same primitives, back to back',
      (i) => {
        const e = open(email, rows[i]!)
        const s = open(ssn, rows[i]!)
        return [
          encryptColumn(active, email, e),
          indexValue(index, emailIndex, e),
          encryptColumn(active, ssn, s),
          indexValue(index, ssnIndex, s),
        ]
      },
    ],
    [
      "floor's row",
      (i) => {
        const r = frows[i]!
        const e = cipher.open(r.email, 0)
        const s = cipher.open(r.ssn, 0)
        return [cipher.seal(e, 1), cipher.emailIndex(e), cipher.seal(s, 1), cipher.ssnIndex(s)]
      },
    ],
    ['decrypt (email)', (i) => open(email, rows[i]!)],
    ["floor's open (email)", (i) => cipher.open(frows[i]!.email, 0)],
    ['encrypt (email)', (i) => encryptColumn(active, email, emails[i])],
    ["floor's seal (email)", (i) => cipher.seal(emails[i] as string, 1)],
    ['blind index (email)', (i) => indexValue(index, emailIndex, emails[i])],
    ["floor's blind index (email)", (i) => cipher.emailIndex(emails[i] as string)],
  ]
  const best = new Map<string, { us: number; heap: number | undefined }>()
  for (let round = 0; round < 5; round++) {
    for (const [label, f] of variants) {
      // Heap: growth over M calls (no GC expected with a large young generation; a GC is not counted).
      const before = getHeapStatistics().used_heap_size
      for (let i = 0; i < M; i++) f(i)
      const after = getHeapStatistics().used_heap_size
      const c0 = process.cpuUsage()
      for (let r = 0; r < 5; r++) for (let i = 0; i < M; i++) f(i)
      const c = process.cpuUsage(c0)
      const us = (c.user + c.system) / (5 * M)
      const was = best.get(label)
      best.set(label, {
        us: Math.min(us, was?.us ?? Number.POSITIVE_INFINITY),
        heap: after >= before ? (after - before) / M : was?.heap,
      })
    }
  }
  for (const [label, { us, heap }] of best)
    console.log(
      `${label.padEnd(32)} ${us.toFixed(2)} µs  ${heap === undefined ? 'GC ran' : `${heap.toFixed(0)} B`}`,
    )
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
