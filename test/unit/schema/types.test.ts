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
