import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { blindIndex, indexArity, indexLength } from '../../../src/blindindex/blind-index.js'
import { ConfigError } from '../../../src/errors.js'

function configError(f: () => unknown): ConfigError {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError)
    expect((e as ConfigError).code).toBe('CONFIG_INVALID')
    return e as ConfigError
  }
  throw new Error('expected a ConfigError')
}

describe('blindIndex()', () => {
  it('defaults to a unique 256-bit single-column index with no normalizers', () => {
    const spec = blindIndex({ name: 'email_bidx' })
    expect(spec).toEqual({ name: 'email_bidx', kind: 'unique', bits: 256, normalize: [], columns: [] })
    expect(indexLength(spec)).toBe(32)
    expect(indexArity(spec)).toBe(1)
  })

  it('makes a search index for 8..255 bits and a unique one for 256', () => {
    expect(blindIndex({ name: 'a', bits: 8 }).kind).toBe('search')
    expect(blindIndex({ name: 'a', bits: 255 }).kind).toBe('search')
    expect(blindIndex({ name: 'a', bits: 256 }).kind).toBe('unique')
  })

  it('returns a frozen spec with frozen arrays, copied from the options', () => {
    const normalize: ('trim' | 'lowercase')[] = ['trim']
    const columns = ['last_name', 'dob']
    const spec = blindIndex({ name: 'n_bidx', bits: 16, normalize, columns })
    normalize.push('lowercase')
    columns.push('x')
    expect(spec.normalize).toEqual(['trim'])
    expect(spec.columns).toEqual(['last_name', 'dob'])
    expect(Object.isFrozen(spec)).toBe(true)
    expect(Object.isFrozen(spec.normalize)).toBe(true)
    expect(Object.isFrozen(spec.columns)).toBe(true)
    expect(indexArity(spec)).toBe(2)
  })

  it('indexLength is ceil(bits / 8) for every allowed size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 8, max: 256 }), (bits) => {
        expect(indexLength(blindIndex({ name: 'x', bits }))).toBe(Math.ceil(bits / 8))
      }),
    )
  })

  it('rejects bits outside 8..256 or not an integer with CONFIG_INVALID', () => {
    for (const bits of [0, 1, 7, 257, 512, 12.5, Number.NaN, -8]) {
      configError(() => blindIndex({ name: 'x', bits }))
    }
  })

  it('rejects an empty, NUL-containing or over-long name', () => {
    configError(() => blindIndex({ name: '' }))
    configError(() => blindIndex({ name: 'a\0b' }))
    configError(() => blindIndex({ name: 'x'.repeat(64) }))
    expect(blindIndex({ name: 'x'.repeat(63) }).name).toHaveLength(63)
  })

  it('rejects an unknown normalizer, naming it', () => {
    const e = configError(() => blindIndex({ name: 'x', normalize: ['upper' as never] }))
    expect(e.message).toContain("'upper'")
  })

  it('rejects empty or duplicate columns', () => {
    configError(() => blindIndex({ name: 'x', columns: ['a', ''] }))
    configError(() => blindIndex({ name: 'x', columns: ['a', 'a'] }))
    configError(() => blindIndex({ name: 'x', columns: Array.from({ length: 256 }, (_, i) => `c${i}`) }))
  })
})
