/**
 * `--processes N` of the job commands (`kfe reencrypt`, `kfe encrypt-column`, `kfe rotate`): this
 * process plans the job, then starts N-1 copies of the command (worker processes,
 * src/cli/worker-process.ts; `kfe reencrypt` for a rotation) that join it and share its batches through the database (`FOR UPDATE SKIP LOCKED`), as runs on
 * several machines do. Workers in one process share one JavaScript thread, which decrypting and
 * encrypting every row keeps busy; processes use the machine's other cores.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { sql } from 'kysely'
import type { EncryptColumnDryRun } from '../ops/encrypt-column.js'
import type { JobOptions, JobResult } from '../ops/job-engine.js'
import type { Progress, RunOptions } from '../ops/progress.js'
import type { ReencryptDryRun } from '../ops/reencrypt.js'
import type { OpenedOps } from './load-config.js'
import type { Output } from './output.js'
import { intArg, usageError } from './run-command.js'
import { isWorkerProcess, WORKER_OF } from './worker-process.js'

/** A worker process that failed: it printed an error, or ended without a result unasked. */
export interface ProcessFailure {
  readonly pid: number | undefined
  /** The error code it printed (docs/errors.md), or `ERROR` when it printed none. */
  readonly code: string
  readonly message: string
}

/** A job's result summed over the processes that shared it. */
export interface SharedJobResult extends JobResult {
  /**
   * Processes that ran the job: this one and the workers it started that did batches of it (or
   * began, and failed).
   */
  readonly processes: number
  /**
   * Workers that failed. The batch one held is taken over by the other processes (or left to the
   * next run); rows that failed to decrypt are counted in `failed`/`jobFailed`, not here.
   */
  readonly processFailures: readonly ProcessFailure[]
}

/** What a job command returns. */
export type JobOutcome = JobResult | SharedJobResult | ReencryptDryRun | EncryptColumnDryRun

/**
 * Where a command's result holds its job (`kfe rotate`: the re-encryption, when one ran), for
 * {@link shareJob} to add the workers' counts to it.
 */
export interface JobWithin<T> {
  /** The job's result in `result`, or undefined when no job ran. */
  readonly get: (result: T) => JobOutcome | undefined
  /** `result` with its job's result replaced by `job`. */
  readonly set: (result: T, job: SharedJobResult) => T
}

/** The result is the job's own (`kfe reencrypt`, `kfe encrypt-column`). */
const ITSELF: JobWithin<JobOutcome> = { get: (r) => r, set: (_, job) => job }

/** The parsed arguments `--processes` needs. */
export interface ProcessesArgs {
  readonly config?: string | undefined
  readonly processes?: unknown
  readonly workers?: unknown
  readonly 'batch-size'?: unknown
  readonly 'max-rows-per-second'?: unknown
  readonly 'dry-run'?: boolean | undefined
}

/**
 * Runs `job` in this process and, with `--processes N` (N > 1, not a dry run), in N-1 worker
 * processes started once this one has planned the job (or joined one), when at least two batches
 * are left: `command` is the worker's command line (the command and its own arguments; the
 * config, `--workers`, `--batch-size`, the throttle's share and `--json` are added). A stop
 * (SIGINT/SIGTERM) is passed on to the workers by closing their IPC channel, which a worker also
 * sees when this process ends however it does; either way each finishes its batch and saves the
 * checkpoint. Should this process exit at once (a second signal), it kills the workers still
 * running. `--max-rows-per-second` is divided among the processes (at least 1 row per second
 * each), also when no worker turns out to be needed. In a worker process, `job` runs with
 * `joinOnly`. Each job `job` plans gets its workers (`kfe rotate` with a rotation slot plans two:
 * the slot's backfill, then the re-encryption); the result is the last job's, with the failed
 * workers of the earlier ones (see {@link combine}).
 *
 * @param job - Runs the job with `run` and the options of this process's share.
 * @param within - Where `job`'s result holds the job's (by default, it is the job's).
 * @throws OperationError `OPS_INVALID` when `--processes` is not an integer from 1 to 64, or the
 *   config's database is PGlite (embedded in one process: no other process can open it)
 */
export async function shareJob<T>(
  args: ProcessesArgs,
  command: readonly string[],
  opened: OpenedOps,
  run: RunOptions,
  out: Output,
  job: (run: RunOptions, share: Pick<JobOptions, 'maxRowsPerSecond' | 'joinOnly'>) => Promise<T>,
  within: JobWithin<T> = ITSELF as unknown as JobWithin<T>,
): Promise<T> {
  const processes = intArg(args.processes, 'processes') ?? 1
  if (processes > 64) throw usageError('--processes must be an integer from 1 to 64.')
  // A worker process joins the job its parent planned, and plans none.
  if (isWorkerProcess()) return job(run, { joinOnly: true })
  if (processes === 1 || args['dry-run'] === true) return job(run, {})
  const version = (await sql<{ v: string }>`select version() as v`.execute(opened.db)).rows[0]?.v ?? ''
  if (/wasm32|emscripten/i.test(version))
    throw usageError(
      "--processes needs a database server: this config's database is PGlite, which lives in one process (use --workers).",
    )
  const rate = intArg(args['max-rows-per-second'], 'max-rows-per-second')
  const share = rate === undefined ? undefined : Math.max(1, Math.floor(rate / processes))
  /** Every worker started, for a stop or a kill. */
  const workers: Worker[] = []
  /**
   * The workers of each job planned, in order: `kfe rotate` with a rotation slot plans two (the
   * slot's backfill, then the re-encryption), and each gets workers of its own.
   */
  const rounds: Array<{ workers: Worker[]; unstarted: WorkerOutcome[] }> = []
  let workerBatches = 0
  let last: Progress | undefined
  let stopping = false
  const onProgress = (p: Progress): void => {
    if (p.phase === 'planned') workerBatches = 0
    if (p.phase === 'planned' || p.phase === 'batch') last = p
    run.onProgress?.(p.phase === 'batch' ? { ...p, done: p.done + workerBatches } : p)
    if (p.phase !== 'planned') return
    // A round per job planned, with or without workers: the last is the result's job.
    const round = { workers: [] as Worker[], unstarted: [] as WorkerOutcome[] }
    rounds.push(round)
    if (p.total === undefined || p.total - p.done < 2 || run.signal?.aborted) return
    const argv = [
      ...command,
      '--json',
      ...(args.config === undefined ? [] : [`--config=${resolve(args.config)}`]),
      ...option('--workers', args.workers),
      ...option('--batch-size', args['batch-size']),
      ...(share === undefined ? [] : [`--max-rows-per-second=${share}`]),
    ]
    for (let i = 1; i < processes; i++) {
      try {
        const worker = startWorker(argv, out, () => {
          // A batch line of an earlier job's worker, read late, is not this job's.
          if (rounds.at(-1) !== round) return
          workerBatches++
          if (last !== undefined)
            run.onProgress?.({ ...last, phase: 'batch', done: last.done + workerBatches })
        })
        workers.push(worker)
        round.workers.push(worker)
      } catch (error) {
        // spawn threw (an argument it refuses): reported, not swallowed by the progress callback.
        const message = `The worker process could not be started: ${error instanceof Error ? error.message : String(error)}`
        round.unstarted.push({
          failure: { pid: undefined, code: 'ERROR', message },
          printed: false,
          began: true,
        })
      }
    }
  }
  // Once: a worker counts a second stop as "exit at once" only for OS signals, but one is enough.
  const stopWorkers = () => {
    if (stopping) return
    stopping = true
    for (const w of workers) if (w.child.connected) w.child.disconnect()
  }
  // This process exits before its workers have ended (a second signal): they stop at once too.
  const killWorkers = () => {
    for (const w of workers)
      if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL')
  }
  // Until every worker has ended: a stop while this process waits for them is passed on too.
  run.signal?.addEventListener('abort', stopWorkers, { once: true })
  process.once('exit', killWorkers)
  try {
    let own: T
    try {
      own = await job({ ...run, onProgress }, share === undefined ? {} : { maxRowsPerSecond: share })
    } catch (error) {
      stopWorkers()
      await Promise.all(workers.map((w) => w.outcome))
      throw error
    }
    const ended = await Promise.all(
      rounds.map(async (r) => [...(await Promise.all(r.workers.map((w) => w.outcome))), ...r.unstarted]),
    )
    const ownJob = within.get(own)
    if (ownJob === undefined || 'dryRun' in ownJob) return own
    // The result is the last job's. A worker of an earlier job that joined this one (it started
    // late) counts in it; otherwise an earlier job's workers count only as failures.
    const before = ended.slice(0, -1).flat()
    const joinedLate = before.filter((o) => 'result' in o)
    const outcomes = [...(ended.at(-1) ?? []), ...joinedLate]
    return within.set(own, combine(ownJob, outcomes, stopping, failures(before, stopping)))
  } finally {
    run.signal?.removeEventListener('abort', stopWorkers)
    process.off('exit', killWorkers)
  }
}

/** `[name, value]` when the option was given. */
function option(name: string, value: unknown): string[] {
  return value === undefined ? [] : [name, String(value)]
}

/**
 * What a worker process ended with. A failure says whether it is an error the worker printed, and
 * whether the worker had begun (reported a progress step: every worker that starts its job does).
 * @internal
 */
export type WorkerOutcome =
  | { readonly result: JobResult }
  | { readonly failure: ProcessFailure; readonly printed: boolean; readonly began: boolean }

interface Worker {
  readonly child: ChildProcess
  readonly outcome: Promise<WorkerOutcome>
}

/**
 * Starts `kfe <argv>` as a worker process: the same Node.js (its options but a debugger's, whose
 * port one process holds) and bin as this process, the environment marking it as this process's
 * worker, an IPC channel whose end tells it to stop, and its own process group (a terminal's
 * Ctrl-C reaches the parent, which passes the stop on once). Its progress lines call `onBatch`;
 * any other line it writes to stderr is written through `out`, prefixed with its pid.
 */
function startWorker(argv: readonly string[], out: Output, onBatch: () => void): Worker {
  const node = withoutDebugger(process.execArgv)
  const nodeOptions = process.env.NODE_OPTIONS
  const child = spawn(process.execPath, [...node, resolve(process.argv[1] ?? ''), ...argv], {
    env: {
      ...process.env,
      [WORKER_OF]: String(process.pid),
      ...(nodeOptions === undefined
        ? {}
        : { NODE_OPTIONS: withoutDebugger(nodeOptions.split(/\s+/)).join(' ') }),
    },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    detached: true,
    windowsHide: true,
  })
  let stdout = ''
  let began = false
  let settled = false
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk
  })
  if (child.stderr !== null)
    createInterface({ input: child.stderr }).on('line', (line) => {
      const progress = progressLine(line)
      if (progress === undefined) out.line(`[kfe worker ${child.pid}] ${line}`)
      else {
        began = true
        // A line read after the result would count a batch twice, or redraw a closed bar.
        if (progress.phase === 'batch' && !settled) onBatch()
      }
    })
  const outcome = new Promise<WorkerOutcome>((done) => {
    const settle = (o: WorkerOutcome) => {
      if (settled) return
      settled = true
      done(o)
    }
    // Its result is read once it has exited and its stdout has ended, or 2 s after it exited (a
    // process it started may hold a copy of the pipe): never a wait without end.
    const ended = new Promise<void>((r) => {
      if (child.stdout === null) r()
      else child.stdout.once('end', r).once('close', r)
    })
    child.once('exit', (code, signal) => {
      const late = new Promise<void>((r) => setTimeout(r, 2000).unref())
      void Promise.race([ended, late]).then(() =>
        settle(workerOutcome(child.pid, stdout, code, signal, began)),
      )
    })
    // Not started at all (no 'exit' follows); a later error (a failed kill) changes nothing.
    child.on('error', (error) => {
      if (child.pid === undefined) settle(workerOutcome(undefined, '', null, null, false, error))
    })
  })
  return { child, outcome }
}

/**
 * Node.js options without a debugger's (`--inspect*`, `--debug*`, and the value of a port option
 * given apart): one process holds its port, and `--inspect-brk` would stop the worker.
 */
function withoutDebugger(options: readonly string[]): string[] {
  const kept: string[] = []
  for (let i = 0; i < options.length; i++) {
    const o = options[i] as string
    if (!/^--(inspect|debug)/.test(o)) kept.push(o)
    else if (/^--(inspect|debug)-port$/.test(o)) i++
  }
  return kept
}

/** A worker's stderr line as a progress step, or undefined for any other line. */
function progressLine(line: string): Progress | undefined {
  if (!line.startsWith('{"type":"progress"')) return undefined
  try {
    return JSON.parse(line) as Progress
  } catch {
    return undefined
  }
}

/** A worker's result (its last stdout line, `--json`), or why it has none. @internal */
export function workerOutcome(
  pid: number | undefined,
  stdout: string,
  code: number | null,
  signal: NodeJS.Signals | null,
  began: boolean,
  spawnError?: Error,
): WorkerOutcome {
  let printed: unknown
  try {
    printed = JSON.parse(stdout.trim().split('\n').at(-1) ?? '')
  } catch {
    printed = undefined
  }
  if (printed !== null && typeof printed === 'object') {
    const p = printed as { ok?: unknown; error?: { code?: unknown; message?: unknown }; jobId?: unknown }
    if (p.ok === false)
      return {
        failure: { pid, code: String(p.error?.code ?? 'ERROR'), message: String(p.error?.message ?? '') },
        printed: true,
        began,
      }
    if (typeof p.jobId === 'string') return { result: printed as JobResult }
  }
  const ended = spawnError?.message ?? (signal === null ? `exit code ${code}` : `signal ${signal}`)
  return {
    failure: { pid, code: 'ERROR', message: `The worker process ended (${ended}) without a result.` },
    printed: false,
    began,
  }
}

/**
 * This process's result with its workers' added: counts summed, the job's state as last seen. A
 * worker that this process stopped while it was still starting (it had not begun and printed
 * nothing) did nothing and is no failure; one that had begun and ended without a result is one.
 * A worker's result for another job than `own` (towards other key versions) is not added to it.
 * `earlier`: the workers that failed in an earlier job of the same command (a rotation slot's
 * backfill), listed with this job's.
 * @internal
 */
export function combine(
  own: JobResult,
  outcomes: readonly WorkerOutcome[],
  stopping: boolean,
  earlier: readonly ProcessFailure[] = [],
): SharedJobResult {
  const same = (r: JobResult) =>
    r.jobId === own.jobId && r.targets.data === own.targets.data && r.targets.index === own.targets.index
  const joined = outcomes.flatMap((o) => ('result' in o && same(o.result) ? [o.result] : []))
  const results = [own, ...joined]
  const sum = (f: (r: JobResult) => number) => results.reduce((n, r) => n + f(r), 0)
  // Each process waits for the batches others hold before it ends: the fewest any saw is the
  // latest. A worker that did no batch may have looked before the job was planned again: its
  // count is not one.
  const measured = [own, ...joined.filter((r) => r.batches > 0)]
  const remainingBatches = Math.min(...measured.map((r) => r.remainingBatches))
  return {
    ...own,
    batches: sum((r) => r.batches),
    rows: sum((r) => r.rows),
    rewritten: sum((r) => r.rewritten),
    conflicts: sum((r) => r.conflicts),
    deleted: sum((r) => r.deleted),
    failed: sum((r) => r.failed),
    shredded: sum((r) => r.shredded),
    failedKeys: results.flatMap((r) => r.failedKeys).slice(0, 100),
    jobFailed: Math.max(...results.map((r) => r.jobFailed)),
    stopped: remainingBatches > 0 && measured.some((r) => r.stopped),
    remainingBatches,
    // This one and the workers that did batches of its job (or began, and failed).
    processes: measured.length + outcomes.filter((o) => 'failure' in o && o.began).length,
    processFailures: [...earlier, ...failures(outcomes, stopping)],
  }
}

/**
 * The failed workers among `outcomes`. A worker that this process stopped while it was still
 * starting (it had not begun and printed nothing) did nothing and is no failure.
 */
function failures(outcomes: readonly WorkerOutcome[], stopping: boolean): ProcessFailure[] {
  return outcomes.flatMap((o) => ('failure' in o && !(stopping && !o.began && !o.printed) ? [o.failure] : []))
}
