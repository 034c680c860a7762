import { describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema } from '../../../src/index.js'

describe('blind index options', () => {
  it('an option the index does not know is refused (CONFIG_INVALID), not ignored', () => {
    // `unique: true` would have been dropped: { bits: 16, unique: true } a truncated search index.
    for (const index of [
      { name: 'email_bidx', unique: true },
      { name: 'ssn_bidx', bits: 16, unique: true },
      { name: 'x_bidx', normalise: ['trim'] },
    ])
      expect(() => encrypted.text({ index: index as never })).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID' }),
      )
    expect(() => encrypted.text({ index: { name: 'x_bidx', unique: true } as never })).toThrow(
      /unknown option unique/,
    )
  })

  it("an index without a name is not called 'undefined' in the refusal", () => {
    expect(() => encrypted.text({ index: { unique: true } as never })).toThrow(
      /^A blind index \(it has no name\): unknown option unique/,
    )
  })

  it('the known ones are accepted', () => {
    const column = encrypted.text({
      index: {
        name: 'email_bidx',
        bits: 256,
        normalize: ['trim', 'lowercase'],
        rotationSlot: 'email_bidx_next',
      },
    })
    expect(column.indexes[0]).toMatchObject({
      name: 'email_bidx',
      kind: 'unique',
      rotationSlot: 'email_bidx_next',
    })
  })
})

describe('malformed schema definitions', () => {
  it('a column that is not an annotation, or a table that is not an object of them, is CONFIG_INVALID (not a TypeError)', () => {
    const cases: [unknown, RegExp][] = [
      [
        { users: { email: encrypted.text } },
        /users\.email must be a column annotation .*forget the parentheses/,
      ],
      [
        { users: { email: 'text' } },
        /users\.email must be a column annotation such as encrypted\.text\(\)\.$/,
      ],
      [{ users: { email: null } }, /users\.email must be a column annotation/],
      [{ users: 'email' }, /Table users must map its encrypted columns/],
    ]
    for (const [definition, message] of cases) {
      expect(() => encryptedSchema(definition as never)).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(message) }),
      )
    }
  })
})
