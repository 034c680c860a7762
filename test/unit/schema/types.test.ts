// These assertions are checked by the TypeScript compiler (`npm run typecheck`, run by .ci/run).
import type { ColumnType, Generated } from 'kysely'
import { describe, expect, expectTypeOf, it } from 'vitest'
import { type Decrypted, encrypted, encryptedSchema } from '../../../src/index.js'

const schema = encryptedSchema({
  users: {
    email: encrypted.text({ index: { name: 'email_bidx' } }),
    dob: encrypted.date(),
    notes: encrypted.json<{ tags: string[] }>(),
  },
})

interface StoredDB {
  users: {
    id: Generated<number>
    email: Buffer | null
    email_bidx: Buffer | null
    dob: ColumnType<Buffer, Buffer | undefined, Buffer>
    notes: Buffer
    name: string
  }
  plain: { id: number }
}

describe('Decrypted<DB, schema>', () => {
  it('maps encrypted columns to plaintext types and keeps everything else', () => {
    type DB = Decrypted<StoredDB, typeof schema>
    expectTypeOf<DB['users']['email']>().toEqualTypeOf<string | null>()
    expectTypeOf<DB['users']['email_bidx']>().toEqualTypeOf<Buffer | null>()
    expectTypeOf<DB['users']['dob']>().toEqualTypeOf<ColumnType<Date, Date | undefined, Date>>()
    expectTypeOf<DB['users']['notes']>().toEqualTypeOf<{ tags: string[] }>()
    expectTypeOf<DB['users']['id']>().toEqualTypeOf<Generated<number>>()
    expectTypeOf<DB['users']['name']>().toEqualTypeOf<string>()
    expectTypeOf<DB['plain']>().toEqualTypeOf<{ id: number }>()
  })
})

describe('Decrypted<DB, schema> with omitBlindIndexes', () => {
  const omitting = encryptedSchema(
    {
      users: {
        email: encrypted.text({ index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] } }),
        ssn: encrypted.text({
          index: [
            { name: 'ssn_bidx', bits: 16 },
            { name: 'ssn_last4_bidx', bits: 8 },
          ],
        }),
        dob: encrypted.calendarDate(),
        notes: encrypted.json<{ tags: string[] }>(),
      },
    },
    { omitBlindIndexes: true },
  )
  interface Stored {
    users: {
      id: Generated<number>
      email: Buffer
      email_bidx: Buffer
      ssn: Buffer | null
      ssn_bidx: Buffer | null
      ssn_last4_bidx: Buffer | null
      dob: Buffer | null
      notes: Buffer
      name: string
    }
    plain: { id: number; email_bidx: string }
  }

  it('drops exactly the index columns of encrypted tables and keeps the rest as Decrypted<> maps it', () => {
    type DB = Decrypted<Stored, typeof omitting>
    expectTypeOf<keyof DB['users']>().toEqualTypeOf<'id' | 'email' | 'ssn' | 'dob' | 'notes' | 'name'>()
    expectTypeOf<DB['users']['email']>().toEqualTypeOf<string>()
    expectTypeOf<DB['users']['ssn']>().toEqualTypeOf<string | null>()
    expectTypeOf<DB['users']['dob']>().toEqualTypeOf<string | null>()
    expectTypeOf<DB['users']['id']>().toEqualTypeOf<Generated<number>>()
    // A plain table keeps a column that happens to share an index column's name.
    expectTypeOf<DB['plain']>().toEqualTypeOf<{ id: number; email_bidx: string }>()
  })

  it('keeps the index columns when the option is off', () => {
    type DB = Decrypted<Stored, typeof schema>
    expectTypeOf<DB['users']>().toHaveProperty('email_bidx')
    expect(schema.omitBlindIndexes).toBe(false)
    expect(omitting.omitBlindIndexes).toBe(true)
  })
})

/**
 * kysely-codegen writes a camelCase interface for an application that uses CamelCasePlugin
 * (`userAccounts.emailAddress` for `user_accounts.email_address`), while the schema's keys are the
 * database's names. Such tables and columns kept their stored types (`Buffer`): the application
 * had to cast every plaintext it read or wrote.
 */
describe('Decrypted<DB, schema> over an interface generated for CamelCasePlugin', () => {
  const snake = encryptedSchema(
    {
      user_accounts: {
        email_address: encrypted.text({ index: { name: 'email_address_bidx' } }),
        date_of_birth: encrypted.calendarDate(),
        ssn: encrypted.text({ index: { name: 'ssn_last_4_bidx', bits: 16 } }),
      },
    },
    { omitBlindIndexes: true },
  )
  interface CamelStored {
    userAccounts: {
      id: Generated<number>
      emailAddress: Buffer
      emailAddressBidx: Buffer
      dateOfBirth: Buffer | null
      ssn: Buffer | null
      ssnLast4Bidx: Buffer | null
      displayName: string
    }
    auditLog: { emailAddress: string }
  }

  it('maps the camelCase spellings of encrypted tables and columns, and leaves out their index columns', () => {
    type DB = Decrypted<CamelStored, typeof snake>
    expectTypeOf<keyof DB['userAccounts']>().toEqualTypeOf<
      'id' | 'emailAddress' | 'dateOfBirth' | 'ssn' | 'displayName'
    >()
    expectTypeOf<DB['userAccounts']['emailAddress']>().toEqualTypeOf<string>()
    expectTypeOf<DB['userAccounts']['dateOfBirth']>().toEqualTypeOf<string | null>()
    expectTypeOf<DB['userAccounts']['ssn']>().toEqualTypeOf<string | null>()
    expectTypeOf<DB['userAccounts']['displayName']>().toEqualTypeOf<string>()
    // A table outside the schema keeps its columns, whatever they are named.
    expectTypeOf<DB['auditLog']>().toEqualTypeOf<{ emailAddress: string }>()
    expect(snake.omitBlindIndexes).toBe(true)
  })

  it('still maps the snake_case interface of the same schema', () => {
    interface SnakeStored {
      user_accounts: { id: number; email_address: Buffer; email_address_bidx: Buffer; ssn: Buffer | null }
    }
    type DB = Decrypted<SnakeStored, typeof snake>
    expectTypeOf<keyof DB['user_accounts']>().toEqualTypeOf<'id' | 'email_address' | 'ssn'>()
    expectTypeOf<DB['user_accounts']['email_address']>().toEqualTypeOf<string>()
    expect(snake.tables.has('user_accounts')).toBe(true)
  })
})
