import { createHmac } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { blindIndex, indexLength } from '../../../src/blindindex/blind-index.js'
import {
  computeBlindIndex,
  computeTextBlindIndex,
  textInputIsZero,
  truncateToBits,
} from '../../../src/blindindex/compute-blind-index.js'
import { indexSubkey, indexSubkeyInfo } from '../../../src/blindindex/index-subkey.js'
import { BlindIndexError, KeyError } from '../../../src/errors.js'
import { testKey } from './key-fixtures.js'

const utf8 = (s: string) => Buffer.from(s, 'utf8')
const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((a) => Buffer.from(a))
const name = fc.stringMatching(/^[a-z_][a-z0-9_]{0,20}$/)
const bytes = fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a))

/** RFC 5869 HKDF-SHA256 from HMAC alone: a differential check of node's hkdfSync as we call it. */
function rfc5869(ikm: Buffer, salt: Buffer, info: Buffer, length: number): Buffer {
  const prk = createHmac('sha256', salt.length === 0 ? Buffer.alloc(32) : salt)
    .update(ikm)
    .digest()
  const blocks: Buffer[] = []
  let t = Buffer.alloc(0)
  for (let i = 1; blocks.length * 32 < length; i++) {
    t = createHmac('sha256', prk)
      .update(Buffer.concat([t, info, Buffer.from([i])]))
      .digest()
    blocks.push(t)
  }
  return Buffer.concat(blocks).subarray(0, length)
}

describe('computeBlindIndex()', () => {
  it('derives the subkey as HKDF-SHA256(key, empty salt, "kfe/v1/bidx" ‖ lp(table) ‖ lp(name), 32)', () => {
    fc.assert(
      fc.property(key32, name, name, (bytes32, table, index) => {
        const key = testKey({ bytes: bytes32 })
        const info = Buffer.concat([
          utf8('kfe/v1/bidx'),
          Buffer.from([0, table.length]),
          utf8(table),
          Buffer.from([0, index.length]),
          utf8(index),
        ])
        expect(indexSubkeyInfo(table, index).equals(info)).toBe(true)
        expect(indexSubkey(key, table, index).key.equals(rfc5869(bytes32, Buffer.alloc(0), info, 32))).toBe(
          true,
        )
      }),
      { numRuns: 50 },
    )
  })

  it('is HMAC(subkey, 0x01 ‖ value) for one column and count ‖ (len32 ‖ part)… for a compound index', () => {
    const key = testKey()
    const single = blindIndex({ name: 'email_bidx' })
    const subkey = Buffer.from(indexSubkey(key, 'users', 'email_bidx').key)
    const expected = createHmac('sha256', subkey)
      .update(Buffer.from([1]))
      .update(utf8('a@x.io'))
      .digest()
    expect(computeBlindIndex(key, 'users', single, [utf8('a@x.io')]).equals(expected)).toBe(true)

    const compound = blindIndex({ name: 'c_bidx', columns: ['a', 'b'] })
    const csub = Buffer.from(indexSubkey(key, 'users', 'c_bidx').key)
    const input = Buffer.from([2, 0, 0, 0, 2, 0x61, 0x62, 0, 0, 0, 1, 0x63])
    const cexpected = createHmac('sha256', csub).update(input).digest()
    expect(computeBlindIndex(key, 'users', compound, [utf8('ab'), utf8('c')]).equals(cexpected)).toBe(true)
  })

  it('is deterministic: same key, table, spec and value give the same bytes', () => {
    fc.assert(
      fc.property(key32, name, fc.integer({ min: 8, max: 256 }), bytes, (k, table, bits, value) => {
        const spec = blindIndex({ name: 'x_bidx', bits })
        const a = computeBlindIndex(testKey({ bytes: k }), table, spec, [value])
        const b = computeBlindIndex(testKey({ bytes: k }), table, spec, [Buffer.from(value)])
        expect(a.equals(b)).toBe(true)
        expect(a.length).toBe(indexLength(spec))
        expect(a.length).toBe(Math.ceil(bits / 8))
      }),
      { numRuns: 200 },
    )
  })

  it('differs (unique index) for another table, index name, key version or key', () => {
    fc.assert(
      fc.property(key32, key32, bytes, (k1, k2, value) => {
        fc.pre(!k1.equals(k2))
        const spec = blindIndex({ name: 'email_bidx' })
        const base = computeBlindIndex(testKey({ bytes: k1 }), 'users', spec, [value])
        const variants = [
          computeBlindIndex(testKey({ bytes: k1 }), 'customers', spec, [value]),
          computeBlindIndex(testKey({ bytes: k1 }), 'users', blindIndex({ name: 'email2_bidx' }), [value]),
          // A new key version is a newly generated key (key store), hence other bytes.
          computeBlindIndex(testKey({ bytes: k2, version: 2 }), 'users', spec, [value]),
          computeBlindIndex(testKey({ bytes: k2 }), 'users', spec, [value]),
        ]
        for (const v of variants) expect(v.equals(base)).toBe(false)
      }),
      { numRuns: 100 },
    )
  })

  it('differs for different values (unique index) and lengths cannot be shifted between compound parts', () => {
    const key = testKey()
    const compound = blindIndex({ name: 'c_bidx', columns: ['last_name', 'city'] })
    const abC = computeBlindIndex(key, 'users', compound, [utf8('ab'), utf8('c')])
    const aBc = computeBlindIndex(key, 'users', compound, [utf8('a'), utf8('bc')])
    const emptyAbc = computeBlindIndex(key, 'users', compound, [utf8(''), utf8('abc')])
    expect(abC.equals(aBc)).toBe(false)
    expect(abC.equals(emptyAbc)).toBe(false)
    expect(aBc.equals(emptyAbc)).toBe(false)
    fc.assert(
      fc.property(bytes, bytes, bytes, bytes, (a, b, c, d) => {
        fc.pre(!(a.equals(c) && b.equals(d)))
        const x = computeBlindIndex(key, 'users', compound, [a, b])
        const y = computeBlindIndex(key, 'users', compound, [c, d])
        expect(x.equals(y)).toBe(false)
      }),
      { numRuns: 200 },
    )
  })

  it('truncates to the first bits and zeroes the unused low bits of the last byte', () => {
    const key = testKey()
    fc.assert(
      fc.property(fc.integer({ min: 8, max: 255 }), bytes, (bits, value) => {
        const full = computeBlindIndex(key, 'users', blindIndex({ name: 't_bidx' }), [value])
        const cut = computeBlindIndex(key, 'users', blindIndex({ name: 't_bidx', bits }), [value])
        const length = Math.ceil(bits / 8)
        expect(cut.length).toBe(length)
        // Same subkey (same name): the search index is a prefix of the unique one.
        expect(cut.subarray(0, length - 1).equals(full.subarray(0, length - 1))).toBe(true)
        const spare = length * 8 - bits
        const mask = (0xff << spare) & 0xff
        expect(cut[length - 1]).toBe((full[length - 1] ?? 0) & mask)
        expect((cut[length - 1] ?? 0) & ~mask & 0xff).toBe(0)
      }),
      { numRuns: 300 },
    )
  })

  it('truncateToBits keeps the high bits and copies', () => {
    const mac = Buffer.from([0xff, 0xff, 0xff])
    expect(truncateToBits(mac, 13).toString('hex')).toBe('fff8')
    expect(truncateToBits(mac, 9).toString('hex')).toBe('ff80')
    expect(truncateToBits(mac, 16).toString('hex')).toBe('ffff')
    const out = truncateToBits(mac, 8)
    out[0] = 0
    expect(mac[0]).toBe(0xff)
  })

  it('refuses a data key with WRONG_KEY', () => {
    const spec = blindIndex({ name: 'email_bidx' })
    expect(() => computeBlindIndex(testKey({ purpose: 'data' }), 'users', spec, [utf8('a')])).toThrow(
      expect.objectContaining({ name: 'BlindIndexError', code: 'WRONG_KEY', table: 'users' }),
    )
  })

  it('refuses the wrong number of parts with INDEX_INVALID', () => {
    const key = testKey()
    const single = blindIndex({ name: 's_bidx' })
    const compound = blindIndex({ name: 'c_bidx', columns: ['a', 'b'] })
    for (const [spec, parts] of [
      [single, []],
      [single, [utf8('a'), utf8('b')]],
      [compound, [utf8('a')]],
      [compound, [utf8('a'), utf8('b'), utf8('c')]],
    ] as const) {
      let error: unknown
      try {
        computeBlindIndex(key, 'users', spec, parts)
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(BlindIndexError)
      expect((error as BlindIndexError).code).toBe('INDEX_INVALID')
    }
  })

  it('refuses an empty table name with INDEX_INVALID', () => {
    expect(() => computeBlindIndex(testKey(), '', blindIndex({ name: 'x' }), [utf8('a')])).toThrow(
      expect.objectContaining({ code: 'INDEX_INVALID' }),
    )
  })

  it('derives each subkey once per key and caches it on the key', () => {
    const key = testKey()
    const a = indexSubkey(key, 'users', 'email_bidx')
    expect(indexSubkey(key, 'users', 'email_bidx')).toBe(a)
    expect(indexSubkey(key, 'orders', 'email_bidx')).not.toBe(a)
    expect(indexSubkey(key, 'users', 'other_bidx')).not.toBe(a)
    expect(JSON.stringify(a)).toBe('"[redacted]"')
    expect(String(a)).not.toMatch(/[0-9a-f]{16}/)
  })
})

describe('zeroization', () => {
  it('destroying the index key zeroes every subkey derived from it, and later use fails closed', () => {
    const key = testKey()
    const spec = blindIndex({ name: 'email_bidx', bits: 32 })
    computeBlindIndex(key, 'users', spec, [utf8('a@x.io')])
    const held = indexSubkey(key, 'users', 'email_bidx')
    const buffer = held.key
    const other = indexSubkey(key, 'orders', 'email_bidx').key
    expect(buffer.some((b) => b !== 0)).toBe(true)

    key.destroy()

    expect(buffer.every((b) => b === 0)).toBe(true)
    expect(other.every((b) => b === 0)).toBe(true)
    expect(() => held.key).toThrow(KeyError)
    expect(() => computeBlindIndex(key, 'users', spec, [utf8('a@x.io')])).toThrow(
      expect.objectContaining({ code: 'KEY_NOT_FOUND' }),
    )
  })
})

describe('search index false positives', () => {
  it('with 8 bits, 20,000 distinct values fill 256 buckets evenly (≈ 20000/256 per probe)', () => {
    const key = testKey({ bytes: Buffer.alloc(32, 7) })
    const spec = blindIndex({ name: 'email_bidx', bits: 8 })
    const n = 20_000
    const buckets = new Array<number>(256).fill(0)
    const indexOf: number[] = []
    for (let i = 0; i < n; i++) {
      const idx = computeBlindIndex(key, 'users', spec, [utf8(`user${i}@example.com`)])
      expect(idx.length).toBe(1)
      const b = idx[0] ?? -1
      indexOf.push(b)
      buckets[b] = (buckets[b] ?? 0) + 1
    }
    // Rows sharing a probe's index value other than itself: Binomial(n − 1, 1/256).
    const mean = (n - 1) / 256
    const sigma = Math.sqrt((n - 1) * (1 / 256) * (255 / 256))
    for (const probe of [0, 1, 4242, 9999, 19_999]) {
      const sharing = (buckets[indexOf[probe] ?? -1] ?? 0) - 1
      expect(sharing).toBeGreaterThan(mean - 3 * sigma)
      expect(sharing).toBeLessThan(mean + 3 * sigma)
    }
    // Every bucket is used, and the spread passes a chi-square test (255 degrees of freedom:
    // mean 255, sd √510 ≈ 22.6; 5 sd is far beyond chance for a correct HMAC).
    expect(buckets.every((c) => c > 0)).toBe(true)
    const expected = n / 256
    const chi2 = buckets.reduce((s, c) => s + (c - expected) ** 2 / expected, 0)
    expect(chi2).toBeLessThan(255 + 5 * Math.sqrt(510))
    // The full-length index of the same values has no collision at all.
    const unique = blindIndex({ name: 'email_bidx' })
    const seen = new Set<string>()
    for (let i = 0; i < 2000; i++) {
      seen.add(computeBlindIndex(key, 'users', unique, [utf8(`user${i}@example.com`)]).toString('hex'))
    }
    expect(seen.size).toBe(2000)
  })
})

describe('computeTextBlindIndex()', () => {
  it('hashes the same bytes as computeBlindIndex over the UTF-8 encoding, at every length and bit width', () => {
    const key = testKey()
    // Around the 16 KiB scratch (16,383 bytes after the prefix), in 1- to 4-byte characters.
    const long = [
      'x'.repeat(16 * 1024 - 1),
      'x'.repeat(16 * 1024),
      'é'.repeat(8191),
      `${'é'.repeat(8191)}x`,
      `${'é'.repeat(8191)}xx`,
      '€'.repeat(5461),
      '€'.repeat(5462),
      `${'😀'.repeat(4095)}xxx`,
      `${'😀'.repeat(4095)}xxxx`,
      'é'.repeat(9000),
      'a\ud800b', // a lone surrogate: both paths write U+FFFD (the codecs refuse it before)
    ]
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: 'grapheme' })),
        fc.constantFrom(8, 13, 64, 256),
        (s, bits) => {
          const spec = blindIndex({ name: 'email_bidx', bits })
          expect(computeTextBlindIndex(key, 'users', spec, s)).toEqual(
            computeBlindIndex(key, 'users', spec, [utf8(s)]),
          )
        },
      ),
    )
    const spec = blindIndex({ name: 'email_bidx' })
    for (const s of long) {
      expect(computeTextBlindIndex(key, 'users', spec, s)).toEqual(
        computeBlindIndex(key, 'users', spec, [utf8(s)]),
      )
    }
    expect(textInputIsZero()).toBe(true)
  })

  it('refuses what computeBlindIndex refuses, and leaves no input behind', () => {
    const spec = blindIndex({ name: 'email_bidx' })
    expect(() => computeTextBlindIndex(testKey({ purpose: 'data' }), 'users', spec, 'a secret')).toThrow(
      BlindIndexError,
    )
    const compound = blindIndex({ name: 'pair_bidx', columns: ['a', 'b'] })
    expect(() => computeTextBlindIndex(testKey(), 'users', compound, 'a secret')).toThrow(BlindIndexError)
    expect(textInputIsZero()).toBe(true)
  })
})
