import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { blindIndex } from '../../../src/blindindex/blind-index.js'
import { NORMALIZER_NAMES, type Normalizer, normalizeValue } from '../../../src/blindindex/normalizers.js'
import { BlindIndexError } from '../../../src/errors.js'

const norm = (normalize: Normalizer[], value: string) =>
  normalizeValue(blindIndex({ name: 'n', normalize }), value)

describe('normalizeValue()', () => {
  it('returns the value unchanged when the index has no normalizers', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        expect(norm([], s)).toBe(s)
      }),
    )
  })

  it('trim removes Unicode white space at both ends only', () => {
    expect(norm(['trim'], ' \t\n\u00a0\ufeffa b\u2003 ')).toBe('a b')
  })

  it('lowercase is the locale-independent Unicode mapping', () => {
    expect(norm(['lowercase'], 'A@X.IO')).toBe('a@x.io')
    // Default case mapping, not Turkish: 'I' → 'i', 'İ' → 'i' + U+0307.
    expect(norm(['lowercase'], 'I')).toBe('i')
    expect(norm(['lowercase'], '\u0130')).toBe('i\u0307')
    // A case mapping, not full case folding.
    expect(norm(['lowercase'], 'ß')).toBe('ß')
  })

  it('nfc composes and nfkc also maps compatibility characters', () => {
    expect(norm(['nfc'], 'Cafe\u0301')).toBe('Caf\u00e9')
    expect(norm(['nfc'], '\uff11\uff12')).toBe('\uff11\uff12')
    expect(norm(['nfkc'], '\uff11\uff12\ufb01')).toBe('12fi')
  })

  it('digits keeps ASCII 0-9 only', () => {
    expect(norm(['digits'], '123-45-6789')).toBe('123456789')
    expect(norm(['digits'], '+1 (555) 010-9999')).toBe('15550109999')
    expect(norm(['digits'], '\uff11\uff12')).toBe('')
    expect(norm(['nfkc', 'digits'], '\uff11\uff12')).toBe('12')
  })

  it('collapse-whitespace turns each run of white space into one space, without trimming', () => {
    expect(norm(['collapse-whitespace'], '  John \t\n Smith ')).toBe(' John Smith ')
  })

  it('applies normalizers in the declared order', () => {
    // digits before a custom "last four" and after it give different results.
    const lastFour = (v: string) => v.slice(-4)
    expect(norm(['digits', lastFour], '1234-56-78')).toBe('5678')
    expect(norm([lastFour, 'digits'], '1234-56-78')).toBe('678')
    const custom = (v: string) => `<${v}>`
    expect(norm([custom, 'trim'], ' x ')).toBe('< x >')
    expect(norm(['trim', custom], ' x ')).toBe('<x>')
  })

  it('changes equality: differently written e-mails normalize to one value', () => {
    const spec = blindIndex({ name: 'email_bidx', normalize: ['trim', 'lowercase'] })
    expect(normalizeValue(spec, ' A@x.io')).toBe(normalizeValue(spec, 'a@X.IO '))
  })

  it('is deterministic and idempotent for every built-in', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.constantFrom(...NORMALIZER_NAMES), (s, n) => {
        const once = norm([n], s)
        expect(norm([n], s)).toBe(once)
        expect(norm([n], once)).toBe(once)
      }),
    )
  })

  it('runs a custom function and refuses one that returns a non-string', () => {
    expect(norm([(v) => v.slice(-4)], '123-45-6789')).toBe('6789')
    const spec = blindIndex({ name: 'bad', normalize: [(() => 42) as unknown as Normalizer] })
    let error: unknown
    try {
      normalizeValue(spec, 'secret-value')
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(BlindIndexError)
    expect((error as BlindIndexError).code).toBe('INDEX_INVALID')
    expect((error as BlindIndexError).message).not.toContain('secret-value')
  })

  it('wraps a throwing custom normalizer in INDEX_INVALID, and keeps its message (which may quote the plaintext) out of the cause chain', () => {
    const spec = blindIndex({
      name: 'throws',
      normalize: [
        (v: string) => {
          throw new TypeError(`cannot normalize ${v}`)
        },
      ],
    })
    let error: unknown
    try {
      normalizeValue(spec, 'secret-plaintext-77')
    } catch (e) {
      error = e
    }
    expect(error).toMatchObject({ code: 'INDEX_INVALID', message: expect.stringContaining('TypeError') })
    const chain: string[] = []
    for (let e: unknown = error; e instanceof Error; e = e.cause) chain.push(e.message, String(e.stack))
    expect(chain.length).toBeGreaterThan(2)
    expect(chain.join('\n')).not.toContain('secret-plaintext-77')
  })

  it('refuses a non-string value with INDEX_INVALID', () => {
    const spec = blindIndex({ name: 'n', normalize: ['trim'] })
    expect(() => normalizeValue(spec, 42 as unknown as string)).toThrow(
      expect.objectContaining({ code: 'INDEX_INVALID' }),
    )
  })
})
