import { describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema, QueryRefusedError } from '../../../src/index.js'
import { PENDING_PLANS_MAX } from '../../../src/plugin/plan.js'
import { UnwrappedReads } from '../../../src/plugin/unwrapped-reads.js'

const column = encryptedSchema({ users: { email: encrypted.text() } })
  .table('users')!
  .column('email')!
const encryptedRows = [{ id: 1, email: Buffer.from([0x11, 0x01]) }]
const queryId = () => ({ queryId: Math.random().toString(36) })

function refusal(reads: UnwrappedReads, id: { queryId: string }): string | undefined {
  try {
    reads.check(id, encryptedRows)
  } catch (error) {
    expect(error).toBeInstanceOf(QueryRefusedError)
    return (error as QueryRefusedError).code
  }
  return undefined
}

describe('UnwrappedReads', () => {
  it('refuses bytes of a noted query no wrapper saw, and again when run again', () => {
    const reads = new UnwrappedReads()
    const q = queryId()
    reads.note(q, column)
    expect(refusal(reads, q)).toBe('DIALECT_NOT_WRAPPED')
    expect(refusal(reads, q)).toBe('DIALECT_NOT_WRAPPED')
    // Rows without bytes (nothing encrypted came back) pass.
    expect(() => reads.check(q, [{ id: 1, email: null }])).not.toThrow()
  })

  it('forgets the query noted last and the ones noted before it, each when the wrapper sees it', () => {
    const reads = new UnwrappedReads()
    const [q1, q2, q3] = [queryId(), queryId(), queryId()]
    reads.note(q1, column)
    reads.note(q2, column) // q1 waits in the map, q2 is the last one
    reads.note(q3, column)
    reads.seen(q2)
    expect(refusal(reads, q2)).toBeUndefined()
    expect(refusal(reads, q1)).toBe('DIALECT_NOT_WRAPPED')
    expect(refusal(reads, q3)).toBe('DIALECT_NOT_WRAPPED')
    reads.seen(q3)
    reads.seen(q1)
    expect(refusal(reads, q1)).toBeUndefined()
    expect(refusal(reads, q3)).toBeUndefined()
  })

  it('forgets a query noted twice with another between (in the map and last) when seen once', () => {
    const reads = new UnwrappedReads()
    const [q1, q2] = [queryId(), queryId()]
    reads.note(q1, column)
    reads.note(q2, column)
    reads.note(q1, column)
    reads.seen(q1)
    expect(refusal(reads, q1)).toBeUndefined()
    expect(refusal(reads, q2)).toBe('DIALECT_NOT_WRAPPED')
  })

  it(`keeps at most ${PENDING_PLANS_MAX} notes, dropping the oldest (a dropped note skips the check)`, () => {
    const reads = new UnwrappedReads()
    const ids = Array.from({ length: PENDING_PLANS_MAX + 1 }, queryId)
    for (const id of ids) reads.note(id, column)
    expect(refusal(reads, ids[0]!)).toBeUndefined()
    expect(refusal(reads, ids[1]!)).toBe('DIALECT_NOT_WRAPPED')
    expect(refusal(reads, ids[PENDING_PLANS_MAX]!)).toBe('DIALECT_NOT_WRAPPED')
  })
})
