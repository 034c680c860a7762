import { describe, expect, it } from 'vitest'
import { jobExit } from '../../../src/cli/commands/reencrypt.js'
import { combine, workerOutcome } from '../../../src/cli/processes.js'
import type { JobResult } from '../../../src/ops/job-engine.js'

/** A job result with its counts; `over` changes some. */
function result(over: Partial<JobResult> = {}): JobResult {
  return {
    jobId: 'reencrypt:users',
    table: 'users',
    planned: false,
    batches: 2,
    rows: 20,
    rewritten: 18,
    conflicts: 1,
    deleted: 1,
    failed: 0,
    shredded: 0,
    failedKeys: [],
    jobFailed: 0,
    targets: { data: 2, index: 1 },
    replaced: undefined,
    stopped: false,
    remainingBatches: 0,
    ...over,
  }
}

describe('--processes: what a worker process printed, and the results combined', () => {
  it("reads a worker's --json result, its printed error, or says it ended without one", () => {
    const ok = workerOutcome(7, `${JSON.stringify(result())}\n`, 0, null, true)
    expect(ok).toEqual({ result: result() })
    const error = JSON.stringify({ ok: false, error: { code: 'JOB_PAUSED', message: 'provider down' } })
    expect(workerOutcome(8, `${error}\n`, 1, null, true)).toEqual({
      failure: { pid: 8, code: 'JOB_PAUSED', message: 'provider down' },
      printed: true,
      began: true,
    })
    expect(workerOutcome(9, '', null, 'SIGKILL', true)).toEqual({
      failure: {
        pid: 9,
        code: 'ERROR',
        message: 'The worker process ended (signal SIGKILL) without a result.',
      },
      printed: false,
      began: true,
    })
    expect(workerOutcome(undefined, '', null, null, false, new Error('spawn EMFILE'))).toMatchObject({
      failure: { code: 'ERROR', message: 'The worker process ended (spawn EMFILE) without a result.' },
    })
  })

  it('sums the counts, keeps the fewest batches left and the most failed rows of the job', () => {
    const own = result({ planned: true, failed: 1, failedKeys: [3], jobFailed: 1, remainingBatches: 2 })
    const other = result({
      batches: 3,
      rows: 30,
      failed: 2,
      failedKeys: [5, 6],
      jobFailed: 3,
      remainingBatches: 0,
    })
    const all = combine(own, [{ result: other }], false)
    expect(all).toMatchObject({
      planned: true,
      batches: 5,
      rows: 50,
      rewritten: 36,
      conflicts: 2,
      deleted: 2,
      failed: 3,
      failedKeys: [3, 5, 6],
      jobFailed: 3,
      remainingBatches: 0,
      stopped: false,
      processes: 2,
      processFailures: [],
    })
  })

  it('a worker stopped from outside does not make a finished job "stopped"; with batches left it does', () => {
    const stoppedWorker = { result: result({ stopped: true, remainingBatches: 4 }) }
    expect(combine(result(), [stoppedWorker], false)).toMatchObject({ stopped: false, remainingBatches: 0 })
    const stoppedBoth = combine(result({ stopped: true, remainingBatches: 5 }), [stoppedWorker], true)
    expect(stoppedBoth).toMatchObject({ stopped: true, remainingBatches: 4 })
    expect(jobExit(stoppedBoth)).toBe(2)
  })

  it('a failed worker is reported (exit 2: the others took over its batch); one stopped before it began is not', () => {
    const crashed = workerOutcome(11, '', null, 'SIGKILL', true)
    const printed = workerOutcome(
      12,
      `${JSON.stringify({ ok: false, error: { code: 'KEY_NOT_FOUND', message: 'm' } })}\n`,
      1,
      null,
      true,
    )
    const unstarted = workerOutcome(13, '', 2, null, false)
    const failed = combine(result(), [crashed, printed, unstarted], false)
    expect(failed.processFailures.map((f) => f.pid)).toEqual([11, 12, 13])
    expect(jobExit(failed)).toBe(2)
    // Asked to stop while it started, it did nothing and printed nothing: no failure, and not one
    // of the processes that ran the job. One that had begun and died without a result is a failure.
    const stopping = combine(
      result({ stopped: true, remainingBatches: 3 }),
      [crashed, printed, unstarted],
      true,
    )
    expect(stopping.processFailures.map((f) => f.pid)).toEqual([11, 12])
    expect(stopping.processes).toBe(3)
    // Rows that failed outrank a failed worker.
    expect(jobExit(combine(result({ failed: 1 }), [printed], false))).toBe(1)
    expect(jobExit(combine(result(), [], false))).toBe(0)
  })
})
