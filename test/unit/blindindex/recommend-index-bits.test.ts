import { createRequire } from 'node:module'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { recommendIndexBits } from '../../../src/blindindex/recommend-index-bits.js'
import { ConfigError } from '../../../src/errors.js'

interface Planner {
  setEstimatedPopulation(n: number): Planner
  recommend(): { min: number; max: number }
}
const { FieldIndexPlanner } = createRequire(import.meta.url)('ciphersweet-js') as {
  FieldIndexPlanner: new () => Planner
}

describe('recommendIndexBits()', () => {
  // bits = clamp(floor(log2(min(D, R) / 2)), 8, 255), or with a budget F the fewest bits with
  // R(1 − 1/D)/2^B ≤ F, capped by that bound.
  it.each([
    { rows: 1e3, distinctValues: 1e3, bits: 8 }, // log2(500) = 8.97
    { rows: 1e6, distinctValues: 1e6, bits: 18 }, // log2(5e5) = 18.93
    { rows: 1e9, distinctValues: 1e9, bits: 28 }, // log2(5e8) = 28.90
    { rows: 1e6, distinctValues: 1e4, bits: 12 }, // log2(5000) = 12.29
    { rows: 1e6, distinctValues: 1e9, bits: 18 }, // distinct capped at rows
    { rows: 2 ** 20, distinctValues: 2 ** 20, bits: 19 }, // exact power of two: 2^20 / 2^19 = 2
    { rows: 1e6, distinctValues: 1e6, maxFalsePositivesPerQuery: 50, bits: 15 }, // ceil(log2(1e6/50)) = 15
    { rows: 1e9, distinctValues: 1e9, maxFalsePositivesPerQuery: 10, bits: 27 }, // ceil(log2(1e8)) = 27
    { rows: 1e6, distinctValues: 1e6, maxFalsePositivesPerQuery: 0.1, bits: 18 }, // budget unreachable: bound kept
    { rows: 1e3, distinctValues: 1e3, maxFalsePositivesPerQuery: 1000, bits: 8 }, // clamped up to 8
    { rows: 100, distinctValues: 100, bits: 8 }, // bound 5 < 8: warns
  ])('$rows rows, $distinctValues distinct, budget $maxFalsePositivesPerQuery → $bits bits', (c) => {
    const r = recommendIndexBits(c)
    expect(r.bits).toBe(c.bits)
    expect(r.kind).toBe('search')
    const D = Math.min(c.rows, c.distinctValues)
    const fp = (c.rows * (1 - 1 / D)) / 2 ** c.bits
    expect(r.expectedFalsePositivesPerQuery).toBeCloseTo(fp, Math.max(0, 3 - Math.ceil(Math.log10(fp + 1))))
    expect(r.rationale).toContain('ciphersweet.paragonie.com')
    expect(r.rationale).toContain('docs.aws.amazon.com')
    expect(r.leaks.length).toBeGreaterThan(20)
  })

  it('says so when the false-positive budget cannot be met privately, or the column has too few values', () => {
    expect(
      recommendIndexBits({ rows: 1e6, distinctValues: 1e6, maxFalsePositivesPerQuery: 0.1 }).rationale,
    ).toMatch(/privacy bound/)
    const few = recommendIndexBits({ rows: 100, distinctValues: 100 })
    expect(few.rationale).toMatch(/compound index/)
    expect(few.leaks).toMatch(/of their own/)
    expect(recommendIndexBits({ rows: 1e6, distinctValues: 1e6 }).rationale).not.toMatch(/compound index/)
  })

  it('keeps ≥ 2 distinct values per index value whenever the bound is ≥ 8 bits', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 512, max: 2 ** 40 }),
        fc.integer({ min: 512, max: 2 ** 40 }),
        (rows, distinct) => {
          const r = recommendIndexBits({ rows, distinctValues: distinct })
          expect(Math.min(rows, distinct) / 2 ** r.bits).toBeGreaterThanOrEqual(2)
          expect(rows / 2 ** r.bits).toBeGreaterThanOrEqual(2) // CipherSweet's coincidence count
        },
      ),
    )
  })

  it('stays in 8..255, and more rows never means fewer bits', () => {
    const size = fc.double({ min: 1, max: 1e15, noNaN: true })
    const budget = fc.option(fc.double({ min: 0.01, max: 1e6, noNaN: true }), { nil: undefined })
    fc.assert(
      fc.property(size, size, size, budget, (a, b, distinct, f) => {
        const [small, large] = a <= b ? [a, b] : [b, a]
        const x = recommendIndexBits({ rows: small, distinctValues: distinct, maxFalsePositivesPerQuery: f })
        const y = recommendIndexBits({ rows: large, distinctValues: distinct, maxFalsePositivesPerQuery: f })
        for (const r of [x, y]) {
          expect(r.bits).toBeGreaterThanOrEqual(8)
          expect(r.bits).toBeLessThanOrEqual(255)
          expect(Number.isInteger(r.bits)).toBe(true)
          expect(r.expectedFalsePositivesPerQuery).toBeGreaterThanOrEqual(0)
        }
        expect(y.bits).toBeGreaterThanOrEqual(x.bits)
      }),
      { numRuns: 500 },
    )
  })

  it("agrees with CipherSweet's planner: within its [min, max], at most one bit under its max", () => {
    // CipherSweet rounds its max up (coincidences in (1, 2]); we round down (always ≥ 2).
    for (const rows of [1e3, 5e4, 2 ** 16, 1e6, 123_456_789, 1e9, 2 ** 31 - 1]) {
      const cs = new FieldIndexPlanner().setEstimatedPopulation(rows).recommend()
      const ours = recommendIndexBits({ rows, distinctValues: rows }).bits
      expect(ours).toBeLessThanOrEqual(cs.max)
      expect(ours).toBeGreaterThanOrEqual(Math.max(cs.max - 1, cs.min))
    }
  })

  it('recommends a unique index only when asked for one', () => {
    const r = recommendIndexBits({ rows: 1e6, distinctValues: 1e6, requireUnique: true })
    expect(r).toMatchObject({
      bits: 256,
      kind: 'unique',
      expectedFalsePositivesPerQuery: 0,
      expectedRowsPerIndexValue: 1,
    })
    expect(r.leaks).toMatch(/equal/)
  })

  it('is frozen', () => {
    expect(Object.isFrozen(recommendIndexBits({ rows: 10, distinctValues: 10 }))).toBe(true)
  })

  it('rejects impossible inputs with CONFIG_INVALID', () => {
    for (const input of [
      { rows: 0, distinctValues: 1 },
      { rows: 10, distinctValues: 0 },
      { rows: Number.NaN, distinctValues: 1 },
      { rows: Number.POSITIVE_INFINITY, distinctValues: 1 },
      { rows: 10, distinctValues: 10, maxFalsePositivesPerQuery: 0 },
      { rows: 10, distinctValues: 10, maxFalsePositivesPerQuery: -1 },
    ]) {
      expect(() => recommendIndexBits(input)).toThrow(ConfigError)
      expect(() => recommendIndexBits(input)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }))
    }
  })
})
