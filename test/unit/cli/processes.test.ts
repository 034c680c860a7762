import { describe, expect, it } from 'vitest'
import { jobExit } from '../../../src/cli/commands/reencrypt.js'
import { rotationJob } from '../../../src/cli/commands/rotate.js'
import { combine, workerOutcome } from '../../../src/cli/processes.js'
import type { JobResult } from '../../../src/ops/job-engine.js'
import type { RotateResult } from '../../../src/ops/rotate.js'
import type { RotateTenantsResult } from '../../../src/ops/rotate-tenants.js'

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

  it("a worker's result for another job of the command (a rotation slot's backfill: other targets) is not added", () => {
    const own = result({ targets: { data: 2, index: 2 } })
    const backfill = { result: result({ targets: { data: 2, index: 1 }, rows: 300, batches: 9 }) }
    const final = { result: result({ targets: { data: 2, index: 2 }, rows: 5 }) }
    expect(combine(own, [backfill, final], false)).toMatchObject({ rows: 25, batches: 4, processes: 2 })
    expect(combine(own, [backfill], false)).toMatchObject({ rows: 20, batches: 2, processes: 1 })
    // Its count of batches left is not this job's either.
    const stopped = result({ targets: { data: 2, index: 2 }, stopped: true, remainingBatches: 3 })
    const done = { result: result({ targets: { data: 2, index: 1 }, remainingBatches: 0 }) }
    expect(combine(stopped, [done], true)).toMatchObject({ stopped: true, remainingBatches: 3 })
    // The workers that failed in an earlier job are listed, and are not processes of this one.
    const earlier = [{ pid: 4, code: 'ERROR', message: 'm' }]
    expect(combine(own, [], false, earlier)).toMatchObject({ processes: 1, processFailures: earlier })
  })

  it('a worker that joined and did no batch (it looked before the job was planned again) changes neither the count left nor `processes`', () => {
    const stopped = result({ stopped: true, remainingBatches: 3 })
    const looked = {
      result: result({ batches: 0, rows: 0, rewritten: 0, conflicts: 0, deleted: 0, remainingBatches: 0 }),
    }
    expect(combine(stopped, [looked], true)).toMatchObject({
      stopped: true,
      remainingBatches: 3,
      processes: 1,
      rows: 20,
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

describe('kfe rotate --processes: the rotation result around the shared job', () => {
  const rotated: RotateResult = {
    table: 'users',
    purpose: 'data',
    previous: 1,
    version: 2,
    state: 'active',
    activateAfter: undefined,
    dryRun: false,
    reencrypt: result({ stopped: true, remainingBatches: 2 }),
    interrupted: true,
    left: 'version 2 is active; 2 re-encryption batches are left: …',
  }
  const shared = (over: Partial<JobResult>) => combine(result(over), [], false)

  it('counts `interrupted` and `left` again from the batches left with the workers', () => {
    const job = rotationJob('acme')
    expect(job.get(rotated)).toBe(rotated.reencrypt)
    // A worker finished the batches this process left: the rotation is through.
    expect(job.set(rotated, shared({ remainingBatches: 0 }))).toMatchObject({
      interrupted: false,
      left: undefined,
    })
    const one = job.set(rotated, shared({ stopped: true, remainingBatches: 1 })) as RotateResult
    expect(one.interrupted).toBe(true)
    expect(one.left).toBe(
      'version 2 is active; 1 re-encryption batches are left: run `kfe reencrypt users --tenant acme` to finish',
    )
    // Stopped in a rotation slot's backfill: not through while the version is staged.
    const staged = job.set({ ...rotated, purpose: 'index', state: 'staged' }, shared({ remainingBatches: 0 }))
    expect(staged).toMatchObject({ interrupted: true, state: 'staged' })
    expect((staged as RotateResult).left).toContain('0 backfill batches are left')
    // Every tenant's rotation: interrupted while batches are left.
    const tenants: RotateTenantsResult = {
      table: 'users',
      tenants: [],
      reencrypt: result(),
      interrupted: true,
      left: 'the parent process counted 1 batch left',
    }
    expect(job.set(tenants, shared({ remainingBatches: 0 }))).toMatchObject({
      interrupted: false,
      left: undefined,
    })
    expect((job.set(tenants, shared({ remainingBatches: 2 })) as RotateTenantsResult).left).toBe(
      "every tenant's new version is active; 2 re-encryption batches are left: run `kfe reencrypt users` to finish (rotating again would rotate every tenant once more)",
    )
  })
})
