import { type Kysely, sql } from 'kysely'
import type { Backend } from './backends.js'
import type { KfeRunner } from './cli-runner.js'
import type { TestDB } from './encrypted-db.js'

/** This connection's id on the server, by `fn` (`pg_backend_pid()` or `connection_id()`). */
async function backendId(db: Kysely<TestDB>, fn: string): Promise<number> {
  const { rows } = await sql<{ id: number | string }>`select ${sql.raw(fn)} as id`.execute(db)
  return Number(rows[0]?.id)
}

/** Where {@link killAfterBatches} stops a job: the row it holds locked. */
export interface KillGate {
  readonly family: Backend['family']
  /** The table the job writes (its primary key is `id`). */
  readonly table: string
  /** The job's `--batch-size`. */
  readonly batchSize: number
  /** The batch, counted from 0 in key order, the job is killed inside. */
  readonly batch: number
}

/**
 * The id the gate of {@link killAfterBatches} locks: the middle row of batch `gate.batch`. A
 * concurrent test writer must not update or delete it (it would wait on the gate).
 */
export async function gateRowId(db: Kysely<TestDB>, gate: KillGate): Promise<number> {
  const row = await db
    .selectFrom(gate.table)
    .select('id')
    .orderBy('id')
    .offset(gate.batch * gate.batchSize + Math.floor(gate.batchSize / 2))
    .limit(1)
    .executeTakeFirstOrThrow()
  return Number(row.id)
}

/**
 * Starts `kfe <args>` as a child and SIGKILLs it inside a batch's transaction, and returns how many
 * batches of the job table `jobsTable_batches` it left undone (those of jobs whose id starts with
 * `jobPrefix`). The kill is not left to timing: this holds row `gateId` locked (`FOR UPDATE`, in a
 * transaction of its own that changes nothing) until the child's batch waits on it, and kills the
 * child there. The batches before it are done, that batch is not, and the child's open transaction
 * dies with its connection.
 */
export async function killAfterBatches(
  runner: Pick<KfeRunner, 'spawnKfe'>,
  db: Kysely<TestDB>,
  jobsTable: string,
  gate: KillGate & { readonly gateId: number },
  args: string[],
  jobPrefix = '',
): Promise<number> {
  return db.transaction().execute(async (trx) => {
    const held = await trx
      .selectFrom(gate.table)
      .select('id')
      .where('id', '=', gate.gateId)
      .forUpdate()
      .executeTakeFirst()
    if (held === undefined) throw new Error(`gate row ${gate.gateId} of ${gate.table} does not exist`)
    const child = runner.spawnKfe(...args)
    let stderr = ''
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    let exitedEarly = false
    const exited = new Promise<NodeJS.Signals | null>((r) =>
      child.on('exit', (_code, signal) => {
        exitedEarly = signal === null
        r(signal)
      }),
    )
    // The child waits on this transaction's lock (a test writer must avoid the row). Asked on another
    // connection: PostgreSQL's pg_stat_activity is a snapshot per transaction. MariaDB's
    // information_schema.innodb_trx does not list a transaction waiting inside a multi-table UPDATE,
    // so there: a statement on the table running for 200 ms (a batch's take far less; the kill at
    // worst lands inside an earlier batch).
    const holder = await backendId(trx, gate.family === 'postgres' ? 'pg_backend_pid()' : 'connection_id()')
    const waiting =
      gate.family === 'postgres'
        ? sql<{ n: number | string }>`select count(*) as n from pg_stat_activity
            where ${holder}::int = any(pg_blocking_pids(pid))`
        : sql<{ n: number | string }>`select count(*) as n from information_schema.processlist
            where id not in (${holder}, connection_id()) and command = 'Query' and time_ms > 200
              and locate(${`\`${gate.table}\``}, info) > 0`
    const batches = db.selectFrom(`${jobsTable}_batches`).where('job_id', 'like', `${jobPrefix}%`)
    const count = (done: 0 | 1) =>
      batches
        .select((eb) => eb.fn.countAll().as('n'))
        .where('done', '=', done)
        .executeTakeFirstOrThrow()
        .then((r) => Number(r.n))
    // Past its planning (the job table may not exist yet while the child starts).
    while (
      (await count(1).catch(() => 0)) === 0 ||
      Number((await waiting.execute(db)).rows[0]?.n ?? 0) === 0
    ) {
      if (exitedEarly) throw new Error(`kfe exited before it reached the gate row:\n${stderr.slice(-2000)}`)
      await new Promise((r) => setTimeout(r, 5))
    }
    child.kill('SIGKILL')
    if ((await exited) !== 'SIGKILL') throw new Error('kfe exited before it was killed')
    // The transaction ends (it changed nothing) and lets the dead child's statement go on to fail.
    return count(0)
  })
}
