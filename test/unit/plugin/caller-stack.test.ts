import { describe, expect, it } from 'vitest'
import { withCallerStack } from '../../../src/plugin/caller-stack.js'

function errorWithStack(stack: string): Error {
  const e = new Error('m')
  e.stack = stack
  return e
}

describe('withCallerStack', () => {
  it("appends the caller's frames without the first line or Node's trailing runtime frames", () => {
    const error = errorWithStack('QueryRefusedError: m\n    at refuse (refusal.ts:1:1)')
    const here = errorWithStack(
      [
        'Error',
        '    at EncryptionPlugin.transformQuery (encryption-plugin.ts:2:2)',
        '    at run (app.ts:3:3)',
        '    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)',
      ].join('\n'),
    )
    expect(withCallerStack(error, here)).toBe(error)
    expect(error.stack).toBe(
      [
        'QueryRefusedError: m',
        '    at refuse (refusal.ts:1:1)',
        '    at EncryptionPlugin.transformQuery (encryption-plugin.ts:2:2)',
        '    at run (app.ts:3:3)',
      ].join('\n'),
    )
    expect(error.stack?.split('\n').at(-1)).toContain('app.ts')
  })

  it('extends an error once, and leaves what has no string stack as it is', () => {
    const error = errorWithStack('E: m\n    at a (a.ts:1:1)')
    const here = errorWithStack('Error\n    at b (b.ts:1:1)')
    withCallerStack(error, here)
    withCallerStack(error, here)
    expect(error.stack).toBe('E: m\n    at a (a.ts:1:1)\n    at b (b.ts:1:1)')
    expect(withCallerStack('text', here)).toBe('text')
    // A stack that already ends at the same caller (a driver that extends its errors) is kept.
    const driver = errorWithStack('E: d\n    at x (x.ts:1:1)\n    at b (b.ts:1:1)')
    withCallerStack(driver, here)
    expect(driver.stack).toBe('E: d\n    at x (x.ts:1:1)\n    at b (b.ts:1:1)')
    // So is one whose caller's line is followed by Node's own frames (a driver's extension on
    // some runs; the whole suite once saw the line twice).
    const trailing =
      'E: d\n    at b (b.ts:1:1)\n    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)'
    const driverThenNode = errorWithStack(trailing)
    withCallerStack(driverThenNode, here)
    expect(driverThenNode.stack).toBe(trailing)
    // A frozen error keeps its stack instead of throwing.
    const frozenError = Object.freeze(errorWithStack('E: f\n    at y (y.ts:1:1)'))
    expect(withCallerStack(frozenError, here)).toBe(frozenError)
    expect(frozenError.stack).toBe('E: f\n    at y (y.ts:1:1)')
    const frozen = Object.freeze({ stack: 1 })
    expect(withCallerStack(frozen, here)).toBe(frozen)
  })
})
