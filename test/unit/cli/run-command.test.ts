import { describe, expect, it } from 'vitest'
import { jobOptions } from '../../../src/cli/commands/job-args.js'
import { intArg } from '../../../src/cli/run-command.js'

describe('kfe integer options', () => {
  it('a positive integer is read; an option not given is undefined', () => {
    expect(intArg('40', 'batch-size')).toBe(40)
    expect(intArg(undefined, 'batch-size')).toBeUndefined()
    expect(jobOptions({ 'batch-size': '7', workers: '4' })).toEqual({ batchSize: 7, workers: 4 })
  })

  it('given empty (--workers "", --batch-size=) it is refused (OPS_INVALID), not run with the default', () => {
    for (const args of [{ workers: '' }, { 'batch-size': '' }, { 'max-rows-per-second': '' }]) {
      expect(() => jobOptions(args)).toThrow(expect.objectContaining({ code: 'OPS_INVALID' }))
    }
    expect(() => intArg('', 'sample')).toThrow(/--sample needs a value/)
    for (const bad of ['0', '-1', '1.5', 'x', ' ']) {
      expect(() => intArg(bad, 'workers')).toThrow(expect.objectContaining({ code: 'OPS_INVALID' }))
    }
  })
})
