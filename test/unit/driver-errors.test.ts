import { describe, expect, it } from 'vitest'
import { scrubDriverError } from '../../src/driver-errors.js'

/** What each driver copies into its errors, blanked; what names the failure kept. */
describe('scrubDriverError', () => {
  it("mysql2's statement: every string, number, boolean and X'…' literal, escapes included; names stay", () => {
    const e = {
      sql: "update `t` set `email` = 'it''s \\'secret\\' \\\\', `e_bidx` = X'0a0b0c', `salary` = -8675309.25, `ok` = true where `id` = 7 and `name` <=> 'bob' and `t1`.`m0` = `v2`.`3a`",
    }
    scrubDriverError(e)
    expect(e.sql).toBe(
      "update `t` set `email` = '…', `e_bidx` = X'…', `salary` = …, `ok` = … where `id` = … and `name` <=> '…' and `t1`.`m0` = `v2`.`3a`",
    )
  })

  it("the statement the caller sent, with its placeholders, replaces the driver's copy", () => {
    const e = { sql: 'insert into `t` (`n`) values (987654.321)' }
    scrubDriverError(e, 'insert into `t` (`n`) values (?)')
    expect(e.sql).toBe('insert into `t` (`n`) values (?)')
  })

  it("MySQL's syntax error quotes the statement from the error on; its refusal of a value for a type quotes the value", () => {
    const near = new Error(
      "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near '1, X'1101ef0a0b0c', 'alice@x.io')' at line 1",
    ) as Error & { sqlMessage?: string }
    near.sqlMessage = near.message
    const incorrect = new Error("Incorrect integer value: 'it''s 1234.5' for column `test`.`t`.`n` at row 1")
    scrubDriverError(near)
    scrubDriverError(incorrect)
    expect(near.message).toBe(
      "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near '…' at line 1",
    )
    expect(near.sqlMessage).toBe(near.message)
    expect(near.stack).not.toContain('1101ef')
    expect(incorrect.message).toBe("Incorrect integer value: '…' for column `test`.`t`.`n` at row 1")
  })

  it('a quoted value holding the quote, the text that follows it, a backslash or a newline hides nothing of itself', () => {
    const cases: [Error, string][] = [
      [
        new Error("Incorrect integer value: 'O'Brien 123-45-6789' for column `db`.`t`.`n` at row 1"),
        "Incorrect integer value: '…' for column `db`.`t`.`n` at row 1",
      ],
      [
        new Error("Incorrect integer value: 'abc\\' for column 'n' at row 1"),
        "Incorrect integer value: '…' for column 'n' at row 1",
      ],
      [new Error("Truncated incorrect DOUBLE value: 'x' y'"), "Truncated incorrect DOUBLE value: '…'"],
      [
        new Error("You have an error in your SQL syntax; … near '1, 'a' at line 1 SECRET-123', 1' at line 1"),
        "You have an error in your SQL syntax; … near '…' at line 1",
      ],
      [
        new Error("Duplicate entry 'a' for key b SECRET' for key 'users_email_key'"),
        "Duplicate entry '…' for key 'users_email_key'",
      ],
      [
        Object.assign(new Error('invalid input syntax for type integer: "line1\nSECRET"'), { code: '22P02' }),
        'invalid input syntax for type integer: "…"',
      ],
      [
        Object.assign(new Error('invalid input syntax for type integer: "a"SECRET tail"'), { code: '22P02' }),
        'invalid input syntax for type integer: "…"',
      ],
      [
        Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0xe9 0x74 0x65'), {
          code: '22021',
        }),
        'invalid byte sequence for encoding "…": 0x…',
      ],
    ]
    for (const [e, clean] of cases) {
      scrubDriverError(e)
      expect(e.message).toBe(clean)
      expect(String(e.stack)).not.toMatch(/SECRET|O'Brien|0xe9/)
      // The stack keeps its frames.
      expect(String(e.stack)).toMatch(/\n\s+at /)
    }
  })

  it("PostgreSQL's JSON input error: the token in detail, the input in where", () => {
    const e = {
      code: '22P02',
      message: 'invalid input syntax for type json',
      detail: 'Token "ssn" is invalid.',
      where: 'JSON data, line 1: {"ssn": "123-45-6789", ssn...\nunnamed portal parameter $1 = \'{"ssn": 1}\'',
    }
    scrubDriverError(e)
    expect(e.detail).toBe('Token "…" is invalid.')
    expect(e.where).toBe('JSON data, line 1: …')
    const p = { code: '23502', where: "unnamed portal parameter $1 = 'it''s secret'" }
    scrubDriverError(p)
    expect(p.where).toBe("unnamed portal parameter $1 = '…'")
  })

  it("NaN and Infinity in mysql2's statement", () => {
    const e = { sql: 'insert into `t` (`a`, `b`, `c`) values (NaN, -Infinity, Infinity)' }
    scrubDriverError(e)
    expect(e.sql).toBe('insert into `t` (`a`, `b`, `c`) values (…, …, …)')
  })

  it("PostgreSQL's data exceptions (class 22) quote the refused value; other classes keep their quotes", () => {
    const input = Object.assign(new Error('invalid input syntax for type integer: "1234.5"'), {
      code: '22P02',
    })
    const range = Object.assign(new Error('value "99999999999" is out of range for type integer'), {
      code: '22003',
    })
    const other = Object.assign(new Error('relation "users" does not exist'), { code: '42P01' })
    for (const e of [input, range, other]) scrubDriverError(e)
    expect(input.message).toBe('invalid input syntax for type integer: "…"')
    expect(input.stack).not.toContain('1234.5')
    expect(range.message).toBe('value "…" is out of range for type integer')
    expect(other.message).toBe('relation "users" does not exist')
  })

  it("PostgreSQL's detail: the failing row and a key's value, an expression index's columns kept", () => {
    const row = { detail: 'Failing row contains (1, alice@x.io, \\x0a0b0c0d).' }
    const key = { detail: 'Key (lower(name::text), email_bidx)=(bob, \\x0a0b) already exists.' }
    // CREATE UNIQUE INDEX over rows that already repeat a value.
    const build = { detail: 'Key (email_bidx)=(\\xd1b8360a) is duplicated.' }
    scrubDriverError(row)
    scrubDriverError(key)
    scrubDriverError(build)
    expect(row.detail).toBe('Failing row contains (…).')
    expect(key.detail).toBe('Key (lower(name::text), email_bidx)=(…) already exists.')
    expect(build.detail).toBe('Key (email_bidx)=(…) is duplicated.')
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
