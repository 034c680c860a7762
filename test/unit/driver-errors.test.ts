import { describe, expect, it } from 'vitest'
import { scrubDriverError } from '../../src/driver-errors.js'

/** What each driver copies into its errors, blanked; what names the failure kept. */
describe('scrubDriverError', () => {
  it("mysql2's statement: every string and X'…' literal, escapes included; names and numbers stay", () => {
    const e = {
      sql: "update `t` set `email` = 'it''s \\'secret\\' \\\\', `e_bidx` = X'0a0b0c' where `id` = 7 and `name` <=> 'bob'",
    }
    scrubDriverError(e)
    expect(e.sql).toBe("update `t` set `email` = '…', `e_bidx` = X'…' where `id` = 7 and `name` <=> '…'")
  })

  it("PostgreSQL's detail: the failing row and a key's value, an expression index's columns kept", () => {
    const row = { detail: 'Failing row contains (1, alice@x.io, \\x0a0b0c0d).' }
    const key = { detail: 'Key (lower(name::text), email_bidx)=(bob, \\x0a0b) already exists.' }
    scrubDriverError(row)
    scrubDriverError(key)
    expect(row.detail).toBe('Failing row contains (…).')
    expect(key.detail).toBe('Key (lower(name::text), email_bidx)=(…) already exists.')
  })

  it("MySQL's duplicate entry in message, sqlMessage and stack; the key name stays", () => {
    const e = new Error("Duplicate entry 'alice@x.io' for key 'users_email_key'") as Error & {
      sqlMessage?: string
    }
    e.sqlMessage = e.message
    scrubDriverError(e)
    expect(e.message).toBe("Duplicate entry '…' for key 'users_email_key'")
    expect(e.sqlMessage).toBe(e.message)
    expect(e.stack).not.toContain('alice@x.io')
  })

  it("PGlite's bound parameters; and the cause chain of a library error, a cycle ended", () => {
    const driver = { message: 'boom', params: [Buffer.from('secret'), 'alice@x.io', 3] }
    const wrapper: { message: string; cause?: unknown } = { message: 'wrapped', cause: driver }
    ;(driver as { cause?: unknown }).cause = wrapper
    scrubDriverError(wrapper)
    expect(driver.params).toEqual(['…', '…', '…'])
  })

  it('a frozen error is scrubbed where it allows; a non-object is left alone', () => {
    const e = Object.preventExtensions({ sql: "select 'x'" })
    scrubDriverError(e)
    expect(e.sql).toBe("select '…'")
    expect(() => scrubDriverError('text')).not.toThrow()
    expect(() => scrubDriverError(null)).not.toThrow()
  })
})
