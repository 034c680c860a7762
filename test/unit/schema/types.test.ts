// These assertions are checked by the TypeScript compiler (`npm run typecheck`, run by .ci/run).
import type { ColumnType, Generated } from 'kysely'
import { describe, expectTypeOf, it } from 'vitest'
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
