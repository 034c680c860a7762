import { describe, expect, it } from 'vitest'
import { OperationError } from '../../src/errors.js'
import { decodeBound, encodeBound } from '../../src/ops/job-tables.js'

describe("a job's batch bounds (job table, varchar(1000))", () => {
  it('round-trip strings, integers and bigints beyond 2^53 exactly', () => {
    for (const value of ['a"b\\c', 7, 2n ** 63n - 1n, 'x'.repeat(998)]) {
      expect(decodeBound(encodeBound(value))).toEqual(value)
    }
    expect(encodeBound(null)).toBeNull()
  })

  it('a key longer than the column holds as JSON is OPS_INVALID, not a driver error at planning', () => {
    // 603 characters of `"`: 1208 as JSON (each escaped, and the quotes).
    const error = (() => {
      try {
        encodeBound('"'.repeat(603))
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(OperationError)
    expect(error).toMatchObject({ code: 'OPS_INVALID' })
    expect((error as Error).message).toContain('1208 characters')
    expect((error as Error).message).not.toContain('""')
  })
})
