/** Scratch: per-row JS cost of ours (spec.plan = checkRow with rewrite) vs the floor's crypto, no DB in the timed loop. */
import { randomBytes } from 'node:crypto'
import { PGlite } from '@electric-sql/pglite'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import {
  addEncryptedColumns,
  createBlindIndexes,
  encrypted,
  encryptedSchema,
  fieldEncryption,
  localKeyProvider,
} from '../src/index.js'
import { createOpsContext } from '../src/ops/context.js'
import { keyColumn } from '../src/ops/primary-key.js'
import { checkRow, destroyKeySet, loadKeySet, storedColumns } from '../src/ops/row-check.js'
import { people } from './db-variants.js'
import { FloorCipher } from './ops-floor.js'

const N = Number(process.argv[2] ?? 5000)
async function main() {
  const pglite = new PGlite()
  // biome-ignore lint/suspicious/noExplicitAny: scratch
  const raw: Kysely<any> = new Kysely({ dialect: new PGliteDialect(pglite) })
  const schema = encryptedSchema({
    t: {
      email: encrypted.text({ index: { name: 'email_bidx' }, maxBytes: 200 }),
      ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
    },
  })
  await raw.schema
    .createTable('t')
    .addColumn('id', 'integer', (c) => c.primaryKey())
    .addColumn('name', 'varchar(100)')
    .$call(addEncryptedColumns(schema, 't', 'postgres'))
    .execute()
  await createBlindIndexes(raw, schema, 't')
  const kek = randomBytes(32)
  const ctx = createOpsContext({
    db: raw,
    schema,
    keyProvider: localKeyProvider({ id: 'local:l', key: kek }),
    metadataTtlMs: 0,
  })
  const { init } = await import('../src/ops/init.js')
  await init(ctx)
  const enc = fieldEncryption({
    schema,
    keyProvider: localKeyProvider({ id: 'local:l', key: kek }),
    autoCreateKeys: false,
  })
  // biome-ignore lint/suspicious/noExplicitAny: scratch
  const app: Kysely<any> = new Kysely({ dialect: enc.wrap(new PGliteDialect(pglite)), plugins: [enc.plugin] })
  const all = people(N)
  for (let i = 0; i < N; i += 1000)
    await app
      .insertInto('t')
      .values(all.slice(i, i + 1000))
      .execute()
  const table = ctx.table('t')
  const key = await keyColumn(ctx, table)
  const rows = (await raw
    .selectFrom('t')
    .select(storedColumns(table, key))
    .orderBy('id')
    .execute()) as Record<string, unknown>[]
  // rotate: stage+activate a new data version by hand through ops rotate
  const { rotate } = await import('../src/ops/rotate.js')
  await rotate(ctx, 't', { purpose: 'data', reencrypt: false } as never)
  ctx.ring.refresh()
  const cipher = new FloorCipher()
  const frows = all.map((p) => cipher.row(p.id, p.name, p.email, p.ssn))
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
  await app.destroy()
  await enc.close()
  await ctx.ring.close()
  await raw.destroy()
}
main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
