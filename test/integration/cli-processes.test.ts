import type { ChildProcess } from 'node:child_process'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, type ExpectStatic, it } from 'vitest'
import { type Backend, backends } from '../support/backends.js'
import { type CliTestDb, cliTestDb, insertRows } from '../support/cli-runner.js'
import { alive, childrenOf, firstBatch } from '../support/os-processes.js'

/**
 * Three processes at 150 rows/s in all (50 each), batches of 7, `--json`: this process alone
 * would take 12 s over the suite's 600 rows, time for the workers to start (seconds on a loaded
 * machine) and take part.
 */
const THREE_THROTTLED = ['--batch-size', '7', '--processes', '3', '--max-rows-per-second', '150', '--json']

/**
 * `kfe reencrypt --processes N` as a child process (src/cli/processes.ts): the command plans the
 * job and starts N-1 worker processes that join it. PostgreSQL and MariaDB; on PGlite (one
 * process's database) it is refused. The cases of one backend run in order on one table, each
 * moving it onto the next data version first.
 */
describe.concurrent.each(backends())('kfe --processes [$name]', { timeout: 600_000 }, (backend: Backend) => {
  const server = backend.name !== 'pglite'
  describe.runIf(backend.available).sequential('', () => {
    let t: CliTestDb
    beforeAll(async () => {
      t = await cliTestDb(backend)
      // PGlite's case is a refusal before any key is read.
      if (!server) return
      if ((await t.kfe('init')).code !== 0) throw new Error('kfe init failed')
      await insertRows(t.db.app, t.table, 600, 'p')
    }, 600_000)
    afterAll(async () => {
      await t?.destroy()
    })

    /** The table's active data key version. */
    async function activeData(): Promise<number> {
      const keys = await t.ops.status({ table: t.table })
      return keys.tables[0]!.keys.find((k) => k.purpose === 'data' && k.state === 'active')!.version
    }

    /**
     * Sessions waiting for a lock in a statement on the table (MariaDB: running an update of it
     * for a second or more, as its lock waits do here: `innodb_trx` is a cache that can miss one).
     */
    async function lockWaits(): Promise<number> {
      const query =
        backend.name === 'postgres'
          ? sql<{ n: number }>`select count(*) as n from pg_locks l join pg_stat_activity a using (pid)
              where not l.granted and a.query like ${`%${t.table}%`}`
          : sql<{ n: number }>`select count(*) as n from information_schema.processlist
              where command = 'Query' and time >= 1 and info like ${`update \`${t.table}\`%`}`
      return Number((await query.execute(t.db.raw)).rows[0]?.n ?? 0)
    }

    /** Rows in the table. */
    async function rowCount(): Promise<number> {
      const row = await t.db.raw
        .selectFrom(t.table)
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow()
      return Number(row.n)
    }

    /** The batches of the re-encryption job of `db`'s table, counted per worker. */
    function batchesByWorker(db: CliTestDb = t) {
      return db.db.raw
        .selectFrom(`${db.jobsTable}_batches`)
        .select(['worker', (eb) => eb.fn.countAll().as('n')])
        .where('job_id', '=', `reencrypt:${db.table}`)
        .groupBy('worker')
        .execute()
    }

    it.runIf(server)(
      '--processes 3: two worker processes join the planned job; every row read and rewritten once',
      async ({ expect }) => {
        await t.nextDataVersion()
        const run = await t.kfe('reencrypt', t.table, ...THREE_THROTTLED)
        expect(run.code).toBe(0)
        const total = await rowCount()
        // The workers join the job (they never plan or scan it again): rows read add up too.
        expect(run.json).toMatchObject({
          processFailures: [],
          planned: true,
          rows: total,
          rewritten: total,
          failed: 0,
          remainingBatches: 0,
        })
        // Every batch was done by one of three processes, and more than one took part.
        const by = await batchesByWorker()
        expect(by.reduce((n, r) => n + Number(r.n), 0)).toBe(Math.ceil(total / 7))
        expect(by.length).toBeGreaterThan(1)
        expect(by.length).toBeLessThanOrEqual(3)
        // `processes` counts those that did batches (every worker that took part is in it).
        expect((run.json as { processes: number }).processes).toBe(by.length)
        const verify = await t.kfe('verify', t.table, '--json')
        expect(verify.json).toMatchObject({ ok: true, dataVersions: { [await activeData()]: total * 2 } })
        // A worker process that starts once the job is done (a slow start) joins nothing: it reads
        // no row, where a run of its own would scan the table again.
        const late = await t.kfeWorker({}, 'reencrypt', t.table, '--json')
        expect(late.code).toBe(0)
        expect(late.json).toMatchObject({ planned: false, batches: 0, rows: 0, remainingBatches: 0 })
      },
    )

    it.runIf(server)(
      'kfe rotate --data --processes 3: the workers join the re-encryption once the new version is active',
      async ({ expect }) => {
        const before = await activeData()
        const refused = await t.kfe(
          'rotate',
          t.table,
          '--data',
          '--no-reencrypt',
          '--processes',
          '2',
          '--json',
        )
        expect(refused.code).toBe(1)
        expect(refused.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
        expect(await activeData()).toBe(before)
        const run = await t.kfe('rotate', t.table, '--data', ...THREE_THROTTLED)
        expect(run.code).toBe(0)
        const total = await rowCount()
        expect(run.json).toMatchObject({
          state: 'active',
          version: before + 1,
          interrupted: false,
          reencrypt: {
            processFailures: [],
            planned: true,
            rows: total,
            rewritten: total,
            remainingBatches: 0,
          },
        })
        expect((run.json as { reencrypt: { processes: number } }).reencrypt.processes).toBeGreaterThan(1)
        expect((await batchesByWorker()).length).toBeGreaterThan(1)
        const verify = await t.kfe('verify', t.table, '--json')
        expect(verify.json).toMatchObject({ ok: true, dataVersions: { [before + 1]: total * 2 } })
      },
    )

    it.runIf(server)(
      "kfe rotate --index --processes 3 with a rotation slot: workers share the slot's backfill, then the re-encryption; the result counts the last job's rows once",
      async ({ expect }) => {
        const s = await cliTestDb(backend, { rotationSlot: true })
        let child: ChildProcess | undefined
        try {
          expect((await s.kfe('init')).code).toBe(0)
          await insertRows(s.db.app, s.table, 600, 'q')
          // Throttled: the backfill alone would take this process 12 s.
          const rotating = s.spawnKfe('rotate', s.table, '--index', ...THREE_THROTTLED)
          child = rotating
          let stdout = ''
          rotating.stdout?.on('data', (c: Buffer) => {
            stdout += c.toString()
          })
          const exited = new Promise<number | null>((r) => rotating.on('exit', (code) => r(code)))
          let ended = false
          void exited.then(() => {
            ended = true
          })
          const indexState = async () =>
            (await s.ops.status({ table: s.table })).tables[0]!.keys.find(
              (k) => k.purpose === 'index' && k.version === 2,
            )?.state
          const workers = async () =>
            Number(
              (
                await s.db.raw
                  .selectFrom(`${s.jobsTable}_batches`)
                  .where('done', '=', 1)
                  .select((eb) => eb.fn.count('worker').distinct().as('n'))
                  .executeTakeFirstOrThrow()
              ).n,
            )
          // Seen between two reads of the staged version: batches of the backfill, by several processes.
          let sharedBackfill = false
          while (!ended && !sharedBackfill) {
            const first = await indexState()
            const n = await workers()
            sharedBackfill = first === 'staged' && n > 1 && (await indexState()) === 'staged'
            await new Promise((r) => setTimeout(r, 50))
          }
          expect(sharedBackfill).toBe(true)
          expect(await exited).toBe(0)
          const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Record<string, unknown>
          // The re-encryption after the activation reads each row once: the workers' backfill rows
          // are not added to it. It had workers of its own.
          expect(result).toMatchObject({
            version: 2,
            state: 'active',
            interrupted: false,
            reencrypt: { rows: 600, failed: 0, remainingBatches: 0, processFailures: [] },
          })
          expect((result.reencrypt as { processes: number }).processes).toBeGreaterThan(1)
          expect((await batchesByWorker(s)).length).toBe(
            (result.reencrypt as { processes: number }).processes,
          )
          expect((await s.kfe('verify', s.table, '--json')).json).toMatchObject({ ok: true })
        } finally {
          child?.kill('SIGKILL')
          await s.destroy()
        }
      },
    )

    /**
     * A throttled `kfe reencrypt --processes 3` (50 rows/s each, batches of 5), once its job is
     * planned and a worker process has done a batch beside the parent; and counts of its job's
     * done batches: `workers` that did one, `batches` done.
     */
    async function throttledProcesses(expect: ExpectStatic) {
      await t.nextDataVersion()
      const jobId = `reencrypt:${t.table}`
      const child = t.spawnKfe(
        'reencrypt',
        t.table,
        '--batch-size',
        '5',
        '--processes',
        '3',
        '--max-rows-per-second',
        '150',
        '--json',
      )
      let stdout = ''
      child.stdout?.on('data', (c: Buffer) => {
        stdout += c.toString()
      })
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
        child.on('exit', (code, signal) => r({ code, signal })),
      )
      /** The parent's `--json` result, once it has exited. */
      const printed = () => JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Record<string, unknown>
      const done = t.db.raw
        .selectFrom(`${t.jobsTable}_batches`)
        .where('job_id', '=', jobId)
        .where('done', '=', 1)
      const count = async (what: 'workers' | 'batches') =>
        Number(
          (
            await done
              .select((eb) =>
                (what === 'batches' ? eb.fn.countAll() : eb.fn.count('worker').distinct()).as('n'),
              )
              .executeTakeFirstOrThrow()
          ).n,
        )
      // Planned first (the batch rows of the last job replaced); the parent may do the first batches alone.
      await firstBatch(child)
      for (let i = 0; i < 400 && (await count('workers')) < 2; i++)
        await new Promise((r) => setTimeout(r, 50))
      expect(await count('workers')).toBeGreaterThan(1)
      return { child, exited, jobId, count, printed }
    }

    /** The next run finishes the job, and every row decrypts. */
    async function resumeAndVerify(expect: ExpectStatic) {
      const rest = await t.kfe('reencrypt', t.table, '--batch-size', '50', '--json')
      expect(rest.code).toBe(0)
      expect(rest.json).toMatchObject({ planned: false, remainingBatches: 0 })
      expect((await t.kfe('verify', t.table, '--json')).code).toBe(0)
    }

    it.runIf(server)(
      'kill -9 of a --processes 3 run: its workers see it gone and stop after their batch; the next run finishes',
      async ({ expect }) => {
        const { child, exited, jobId, count } = await throttledProcesses(expect)
        child.kill('SIGKILL')
        expect((await exited).signal).toBe('SIGKILL')
        // Each worker finishes the batch it holds, then stops: the count settles, with batches left.
        let before = -1
        let now = await count('batches')
        for (let i = 0; i < 20 && now !== before; i++) {
          await new Promise((r) => setTimeout(r, 1000))
          before = now
          now = await count('batches')
        }
        expect(now).toBe(before)
        const left = (await t.kfe('status', t.table, '--json')).json as {
          tables: Array<{
            jobs: Array<{ id: string; doneBatches: number; totalBatches: number; interrupted: boolean }>
          }>
        }
        const job = left.tables[0]!.jobs.find((j) => j.id === jobId)!
        expect(job.doneBatches).toBeLessThan(job.totalBatches)
        // Stopped cleanly (the job marked stopped), not ended by a write to a closed pipe: status
        // reports it interrupted at once, not only once 60 s pass without progress.
        expect(job.interrupted).toBe(true)
        await resumeAndVerify(expect)
      },
    )

    it.runIf(server)(
      'SIGTERM to a --processes 3 run stops its workers too (exit 2, no batch done after); the next run finishes',
      async ({ expect }) => {
        const { child, exited, count, printed } = await throttledProcesses(expect)
        child.kill('SIGTERM')
        expect((await exited).code).toBe(2)
        // The parent waited for its workers: nothing is done once it has exited.
        const atExit = await count('batches')
        await new Promise((r) => setTimeout(r, 1000))
        expect(await count('batches')).toBe(atExit)
        // Every worker stopped cleanly after its batch, and printed its counts: the batches this run
        // planned and did are all in the result (a worker ended mid-batch would be a failure).
        // (The third may still have been starting: stopped before it began, it is not counted.)
        const result = printed()
        expect(result).toMatchObject({ processFailures: [], stopped: true, batches: atExit })
        expect(result.processes).toBeGreaterThanOrEqual(2)
        await resumeAndVerify(expect)
      },
    )

    it.runIf(server)(
      'a second signal to a --processes 3 run exits at once and kills its workers, held up in their batch',
      async ({ expect }) => {
        await t.nextDataVersion()
        // Every row locked by this test: each process's first batch waits for it.
        let release = () => {}
        const held = new Promise<void>((r) => {
          release = r
        })
        let locked = () => {}
        const isLocked = new Promise<void>((r) => {
          locked = r
        })
        const holding = t.db.raw.transaction().execute(async (trx) => {
          await trx.selectFrom(t.table).select('id').forUpdate().execute()
          locked()
          await held
        })
        await isLocked
        try {
          const child = t.spawnKfe('reencrypt', t.table, '--batch-size', '5', '--processes', '3', '--json')
          const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)))
          let workers: number[] = []
          for (let i = 0; i < 600 && (workers.length < 2 || (await lockWaits()) < 3); i++) {
            await new Promise((r) => setTimeout(r, 50))
            workers = childrenOf(child.pid!)
          }
          expect(workers).toHaveLength(2)
          expect(await lockWaits()).toBeGreaterThanOrEqual(3)
          child.kill('SIGTERM')
          // The first signal ends nothing while the batches wait.
          await new Promise((r) => setTimeout(r, 500))
          expect([child.pid!, ...workers].filter(alive)).toHaveLength(3)
          child.kill('SIGTERM')
          expect(await exited).toBe(2)
          // Its workers were killed with it: their batches still wait for the rows.
          for (let i = 0; i < 40 && workers.some(alive); i++) await new Promise((r) => setTimeout(r, 50))
          expect(workers.filter(alive)).toEqual([])
        } finally {
          release()
          await holding
        }
        await resumeAndVerify(expect)
      },
    )

    it.runIf(server)(
      'a worker process whose parent is gone before it starts does nothing (exit 2, no output)',
      async ({ expect }) => {
        await t.nextDataVersion()
        const orphan = await t.kfeWorker({ parentGone: true }, 'reencrypt', t.table, '--json')
        expect(orphan.code).toBe(2)
        expect(orphan.stdout).toBe('')
        // Nothing planned or joined: no job is running.
        const status = (await t.kfe('status', t.table, '--json')).json as {
          tables: Array<{ jobs: Array<{ state: string }> }>
        }
        expect(status.tables[0]!.jobs.filter((j) => j.state === 'running')).toEqual([])
        const rows = await t.kfe('reencrypt', t.table, '--json')
        expect(rows.json).toMatchObject({ planned: true, failed: 0, remainingBatches: 0 })
      },
    )

    it.runIf(!server)('--processes is refused on PGlite (one process holds it)', async ({ expect }) => {
      const run = await t.kfe('reencrypt', t.table, '--processes', '2', '--json')
      expect(run.code).toBe(1)
      expect(run.json).toMatchObject({ ok: false, error: { code: 'OPS_INVALID' } })
      expect(JSON.stringify(run.json)).toContain('PGlite')
    })
  })
})
