import { describe, expect, it } from 'vitest'
import { ConfigError, encrypted, encryptedSchema } from '../../../src/index.js'
import { encryptedColumnTypes } from '../../../src/schema/migration.js'
import { indexColumnNames, slotOfVersion } from '../../../src/schema/schema.js'

describe('rotationSlot annotation', () => {
  const schema = encryptedSchema({
    users: {
      email: encrypted.text({ index: { name: 'email_bidx', rotationSlot: 'email_bidx_next' } }),
      ssn: encrypted.text({ index: { name: 'ssn_bidx', bits: 16 } }),
    },
  })
  const users = schema.table('users')!

  it('registers both columns of the index, slot 0 and 1, sharing one spec', () => {
    const a = users.indexColumn('email_bidx')!
    const b = users.indexColumn('email_bidx_next')!
    expect([a.slot, b.slot]).toEqual([0, 1])
    expect(a.spec).toBe(b.spec)
    expect(a.column).toBe(b.column)
    expect(users.indexColumn('ssn_bidx')!.slot).toBeUndefined()
    expect(indexColumnNames(a.spec)).toEqual(['email_bidx', 'email_bidx_next'])
  })

  it('odd versions live in the index column, even ones in the slot', () => {
    expect([1, 2, 3, 4].map(slotOfVersion)).toEqual([0, 1, 0, 1])
  })

  it('the migration helper adds the slot column, of the index type', () => {
    const cols = encryptedColumnTypes(schema, 'users', 'postgres').map((c) => c.name)
    expect(cols).toEqual(['email', 'email_bidx', 'email_bidx_next', 'ssn', 'ssn_bidx'])
  })

  it('is refused on a search index, on its own name, and when it collides with another column', () => {
    const refused = (make: () => unknown) => {
      expect(make).toThrow(ConfigError)
      try {
        make()
      } catch (e) {
        expect((e as ConfigError).code).toBe('CONFIG_INVALID')
      }
    }
    refused(() => encrypted.text({ index: { name: 'a_bidx', bits: 16, rotationSlot: 'a_next' } }))
    refused(() => encrypted.text({ index: { name: 'a_bidx', rotationSlot: 'a_bidx' } }))
    refused(() =>
      encryptedSchema({
        t: {
          a: encrypted.text({ index: { name: 'a_bidx', rotationSlot: 'b' } }),
          b: encrypted.text(),
        },
      }),
    )
  })
})
