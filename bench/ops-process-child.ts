/**
 * A worker process of `npm run bench:ops`'s process variants (bench/ops-process.ts): it opens
 * the benchmark's tables with the parent's keys, then on each message runs its share of one job —
 * ours (`ops.reencrypt`, planning it, or joining it as `kfe reencrypt --processes` workers do) or
 * the floor's (the batches the parent planned for it) — and answers with what it wrote.
 */
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely'
import { createPool as createMysqlPool } from 'mysql2'
import { createPool as createMysqlPromisePool } from 'mysql2/promise'
import pg from 'pg'
import { encryptedSchema, localKeyProvider } from '../src/index.js'
import { fieldEncryptionOps, type JobResult } from '../src/ops.js'
import { FloorCipher, type FloorDriver, mysqlFloor, postgresFloor, rewriteBatches } from './ops-floor.js'
import type { ChildInit, ChildReply, ChildTask } from './ops-process.js'
import { opsColumns } from './ops-tables.js'

const init = JSON.parse(process.argv[2] ?? '') as ChildInit
const url = init.family === 'postgres' ? process.env.PG_URL : process.env.MYSQL_URL
if (url === undefined) throw new Error('bench/ops-process-child.ts: PG_URL or MYSQL_URL is not set')
const db = new Kysely<unknown>({
  dialect:
    init.family === 'postgres'
      ? new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 6 }) })
      : new MysqlDialect({ pool: createMysqlPool({ uri: url, connectionLimit: 6 }) }),
})
const ops = fieldEncryptionOps({
  db,
  schema: encryptedSchema({ [init.ours]: opsColumns(), [init.floorTable]: opsColumns() }),
  keyProvider: localKeyProvider({ id: 'local:bench', key: Buffer.from(init.kek, 'hex') }),
  keyTable: init.keyTable,
  jobsTable: init.jobsTable,
  metadataTtlMs: 50,
})
const cipher = new FloorCipher(init.floorSecrets)
let floor: { driver: FloorDriver; close(): Promise<void> }
if (init.family === 'postgres') {
  const pool = new pg.Pool({ connectionString: url, max: 5 })
  floor = { driver: postgresFloor(pool, init.floorTable), close: () => pool.end() }
} else {
  const pool = createMysqlPromisePool({ uri: url, connectionLimit: 5 })
  floor = { driver: mysqlFloor(pool, init.floorTable), close: () => pool.end() }
}

const reply = (r: ChildReply) => process.send?.(r)

process.on('message', (task: ChildTask) => {
  void (async () => {
    try {
      if (task.kind === 'ours') {
        const job = (await ops.reencrypt(init.ours, {
          batchSize: task.batchSize,
          workers: 1,
          joinOnly: task.join,
          onProgress: (p) => {
            if (p.phase === 'planned') reply({ kind: 'planned' })
          },
        })) as JobResult
        reply({ kind: 'done', written: job.rewritten, failed: job.failed })
      } else if (task.kind === 'floor') {
        const written = await rewriteBatches(floor.driver, cipher, task.batches, task.from, {
          workers: 1,
          cas: false,
        })
        reply({ kind: 'done', written, failed: 0 })
      } else {
        await ops.close()
        await db.destroy()
        await floor.close()
        process.disconnect()
      }
    } catch (error) {
      reply({ kind: 'error', message: String(error instanceof Error ? error.stack : error) })
    }
  })()
})
reply({ kind: 'ready' })
