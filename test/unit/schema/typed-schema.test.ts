/**
 * `encryptedSchema<DB>()`: a table or column name that is not in the application's database
 * interface is a compile error (checked by `tsc --noEmit`, which covers test/), and `Decrypted<>`
 * keeps mapping stored bytes to plaintext types. The runtime asserts check the schema still works.
 */
import type { ColumnType, Generated, Insertable, Selectable } from 'kysely'
import { describe, expect, expectTypeOf, it } from 'vitest'
import { type Decrypted, encrypted, encryptedSchema } from '../../../src/index.js'

/** kysely-codegen style: encrypted columns are bytes, ids Generated<>, a timestamp ColumnType<>. */
interface StoredDB {
  users: {
    id: Generated<number>
    email: Buffer
    email_bidx: Buffer
    ssn: Buffer | null
    ssn_bidx: Buffer | null
    created_at: ColumnType<Date, string | undefined, never>
  }
  orders: { id: Generated<number>; note: Buffer | null }
}

describe('encryptedSchema<DB>()', () => {
  it('accepts the tables and columns of DB, and Decrypted<> maps them to plaintext', () => {
    const schema = encryptedSchema<StoredDB>()({
      users: {
        email: encrypted.text({ index: { name: 'email_bidx' } }),
        ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
      },
      orders: { note: encrypted.json() },
    })
    expect(schema.table('users')?.column('email')?.physical).toBe('email')
    type DB = Decrypted<StoredDB, typeof schema>
    expectTypeOf<Selectable<DB['users']>['email']>().toEqualTypeOf<string>()
    expectTypeOf<Selectable<DB['users']>['ssn']>().toEqualTypeOf<string | null>()
    expectTypeOf<Selectable<DB['users']>['id']>().toEqualTypeOf<number>()
    expectTypeOf<Insertable<DB['users']>['id']>().toEqualTypeOf<number | undefined>()
    expectTypeOf<Selectable<DB['users']>['email_bidx']>().toEqualTypeOf<Buffer>()
    expectTypeOf<Selectable<DB['users']>['created_at']>().toEqualTypeOf<Date>()
  })

  it('an unknown table or column name is a compile error', () => {
    const typed = encryptedSchema<StoredDB>()
    // @ts-expect-error — `user` is not a table of StoredDB (the misspelling from issue 13)
    const misspeltTable = () => typed({ user: { email: encrypted.text() } })
    // @ts-expect-error — `mail` is not a column of users
    const misspeltColumn = () => typed({ users: { mail: encrypted.text() } })
    const options = { tables: { user: { logicalName: 'u' } } } as const
    // @ts-expect-error — logicalName options name a table of StoredDB only
    const badOption = () => typed({ users: { email: encrypted.text() } }, options)
    expect([misspeltTable, misspeltColumn, badOption].every((f) => typeof f === 'function')).toBe(true)
  })

  it('the untyped form still takes any names', () => {
    const schema = encryptedSchema({ anything: { at_all: encrypted.text() } })
    expect([...schema.tables.keys()]).toEqual(['anything'])
  })
})
