import { describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema } from '../../../src/index.js'
import { plaintextValue } from '../../../src/schema/plaintext-value.js'

const schema = encryptedSchema({
  t: {
    amount: encrypted.number({ storedAs: 'amount_encrypted', migration: 'dual-writing' }),
    data: encrypted.json({ storedAs: 'data_encrypted', migration: 'dual-writing' }),
  },
})
const column = (name: string) => schema.table('t')!.columns.get(name)!

/** The plaintext as a driver returns it, turned into the codec's value: exactly, or refused. */
describe('plaintextValue', () => {
  it('a decimal string becomes the number that prints back as the same decimal', () => {
    for (const [text, n] of [
      ['1.50', 1.5],
      ['-12.340', -12.34],
      ['0', 0],
      ['100', 100],
      ['1e21', 1e21],
      ['1E-7', 1e-7],
      ['0.0000001', 1e-7],
      ['9007199254740992', 9007199254740992],
      ['0.1', 0.1],
      ['  42 ', 42],
      // PostgreSQL's unconstrained numeric holds them (14+); the codec decides.
      ['Infinity', Number.POSITIVE_INFINITY],
      ['-Infinity', Number.NEGATIVE_INFINITY],
    ] as const)
      expect(plaintextValue(column('amount'), text)).toBe(n)
    expect(plaintextValue(column('amount'), 'NaN')).toBeNaN()
  })

  it('a decimal a double cannot hold exactly is refused (CODEC_INVALID_VALUE), never rounded; the value is not in the message', () => {
    for (const text of ['9007199254740993.00', '12345678901234567.89', '0.10000000000000001', '1e400']) {
      let caught: unknown
      try {
        plaintextValue(column('amount'), text)
      } catch (error) {
        caught = error
      }
      expect(caught).toMatchObject({ name: 'CodecError', code: 'CODEC_INVALID_VALUE' })
      expect(String((caught as Error).message)).not.toContain(text)
    }
  })

  it('JSON text is parsed once; the JSON value null is refused, SQL NULL is null', () => {
    expect(plaintextValue(column('data'), '"123"')).toBe('123')
    expect(plaintextValue(column('data'), '{"a":[1,"x"]}')).toEqual({ a: [1, 'x'] })
    expect(() => plaintextValue(column('data'), 'null')).toThrow(
      expect.objectContaining({ code: 'CODEC_INVALID_VALUE' }),
    )
    expect(plaintextValue(column('data'), null)).toBe(null)
  })
})
