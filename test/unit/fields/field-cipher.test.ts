import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  CodecError,
  ConfigError,
  DecryptionError,
  FieldEncryptionError,
  KeyError,
} from '../../../src/errors.js'
import { MAX_SLAB_ITEM, SLAB_SIZE } from '../../../src/fields/ciphertext-slab.js'
import { type Codec, codecs } from '../../../src/fields/codecs.js'
import { EPOCH_MESSAGES } from '../../../src/fields/column-keys.js'
import {
  columnKeyBuffers,
  columnKeyStats,
  decryptField,
  decryptValue,
  encryptField,
  encryptValue,
  type FieldAad,
} from '../../../src/fields/field-cipher.js'
import { ciphertextLength, readHeader } from '../../../src/fields/format.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import type { KeyPurpose } from '../../../src/keys/key-provider.js'

const KEY_BYTES = createHash('sha256').update('field-cipher test key').digest()

function makeKey(version = 1, purpose: KeyPurpose = 'data', bytes: Buffer = KEY_BYTES): KeyMaterial {
  return new KeyMaterial({ logicalTable: 'users', purpose, version }, Buffer.from(bytes))
}

const AAD: FieldAad = { table: 'users', column: 'email' }

/** Runs `fn`, which must throw a DecryptionError; returns its code. */
function decryptionCode(fn: () => unknown): string {
  let result: unknown
  try {
    result = fn()
  } catch (error) {
    expect(error).toBeInstanceOf(FieldEncryptionError)
    expect(error).toBeInstanceOf(DecryptionError)
    return (error as DecryptionError).code
  }
  return expect.unreachable(`decryption returned a value: ${typeof result}`)
}

describe('round trips through encryptValue/decryptValue', () => {
  const key = makeKey()
  function roundTrip<T>(codec: Codec<T>, value: T, aad: FieldAad = AAD): T {
    const ct = encryptValue(codec, value, key, aad)
    expect(ct.length).toBe(ciphertextLength(codec.encode(value).length))
    expect(readHeader(ct)).toMatchObject({ formatVersion: 1, codecTag: codec.tag, keyVersion: 1 })
    return decryptValue(codec, ct, key, aad)
  }

  it('text, including empty and astral strings', () => {
    for (const s of ['', '😀 𝄞 astral', '\uFEFF', 'x'.repeat(10_000)])
      expect(roundTrip(codecs.text, s)).toBe(s)
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        expect(roundTrip(codecs.text, s)).toBe(s)
      }),
    )
  })

  it('number, including -0 (read back as +0), ±Infinity and the safe-integer limits', () => {
    const edge = [-0, Infinity, -Infinity, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, Number.MIN_VALUE]
    fc.assert(
      fc.property(fc.oneof(fc.constantFrom(...edge), fc.double({ noNaN: true })), (n) => {
        expect(Object.is(roundTrip(codecs.number, n), n === 0 ? 0 : n)).toBe(true)
      }),
    )
  })

  it('bigint, huge and negative', () => {
    const edge = [0n, -1n, 2n ** 64n, -(2n ** 64n) - 1n, 10n ** 300n]
    fc.assert(
      fc.property(
        fc.oneof(fc.constantFrom(...edge), fc.bigInt({ min: -(2n ** 1024n), max: 2n ** 1024n })),
        (n) => {
          expect(roundTrip(codecs.bigint, n)).toBe(n)
        },
      ),
    )
  })

  it('boolean', () => {
    expect(roundTrip(codecs.boolean, true)).toBe(true)
    expect(roundTrip(codecs.boolean, false)).toBe(false)
  })

  it('date, before 1970 included', () => {
    const edge = [new Date(-8.64e15), new Date(8.64e15), new Date('1969-07-20T20:17:40.001Z')]
    fc.assert(
      fc.property(fc.oneof(fc.constantFrom(...edge), fc.date({ noInvalidDate: true })), (d) => {
        expect(roundTrip(codecs.date, d).getTime()).toBe(d.getTime())
      }),
    )
  })

  it('json, nested, with reordered keys giving the same plaintext bytes', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(roundTrip(codecs.json, v as never)).toEqual(JSON.parse(JSON.stringify(v)))
      }),
    )
    const a = { outer: { b: [1, { y: 2, x: 1 }], a: 'z' }, id: 7 }
    const b = { id: 7, outer: { a: 'z', b: [1, { x: 1, y: 2 }] } }
    expect(codecs.json.encode(a).equals(codecs.json.encode(b))).toBe(true)
    expect(roundTrip(codecs.json, a)).toEqual(b)
  })

  it('bytes, returned as a Buffer', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (u) => {
        const out = roundTrip(codecs.bytes, u)
        expect(Buffer.isBuffer(out)).toBe(true)
        expect(Buffer.from(out).equals(Buffer.from(u))).toBe(true)
      }),
    )
  })

  it('long texts, with 2-, 3- and 4-byte UTF-8 characters', () => {
    // 'é' is 2 UTF-8 bytes, '😀' 4 bytes in 2 code units: lengths are of bytes, not units.
    for (const s of [
      'é'.repeat(32_768),
      `${'x'.repeat(65_535)}é`,
      '€'.repeat(40_000),
      '😀'.repeat(16_384),
      '😀'.repeat(16_385),
    ])
      expect(roundTrip(codecs.text, s)).toBe(s)
    const json = { note: 'é'.repeat(40_000), list: ['😀'.repeat(100)] }
    expect(roundTrip(codecs.json, json)).toEqual(json)
  })

  it("allocates ciphertexts from a slab of ciphertexts only, outside Buffer's pool", () => {
    // A pooled buffer that would sit next to a ciphertext if ciphertexts came from Buffer's pool.
    const neighbour = Buffer.from('pooled plaintext neighbour')
    const cts = ['first secret', 'second secret', 'third secret'].map((s) =>
      encryptValue(codecs.text, s, key, AAD),
    )
    const slab = cts[0]?.buffer as ArrayBuffer
    expect(slab.byteLength).toBe(SLAB_SIZE)
    expect(slab).not.toBe(neighbour.buffer)
    const bytes = Buffer.from(slab)
    for (const needle of ['secret', 'pooled plaintext neighbour']) expect(bytes.includes(needle)).toBe(false)
    // The slab is zeroed: nothing past the last ciphertext handed out (earlier tests' ciphertexts
    // may come before these three).
    for (const ct of cts) expect(ct.buffer).toBe(slab)
    const end = Math.max(...cts.map((ct) => ct.byteOffset + ct.length))
    expect(bytes.subarray(end).every((b) => b === 0)).toBe(true)
    // Untransferable: a transfer list naming the slab never detaches the other ciphertexts.
    const { port1, port2 } = new MessageChannel()
    try {
      port1.postMessage(slab, [slab])
    } catch {
      // Newer Node throws for an untransferable buffer in a transfer list; Node 20 copies it.
    } finally {
      port1.close()
      port2.close()
    }
    expect(slab.byteLength).toBe(SLAB_SIZE)
    expect(cts.map((ct) => decryptValue(codecs.text, ct, key, AAD))).toEqual([
      'first secret',
      'second secret',
      'third secret',
    ])
    // A ciphertext longer than a slab item gets a buffer of its own.
    const long = encryptValue(codecs.text, 'z'.repeat(MAX_SLAB_ITEM), key, AAD)
    expect(long.buffer.byteLength).toBe(long.length)
  })

  it('a context whose getter encrypts another value leaves the outer ciphertext whole', () => {
    // Caller code (a getter of the context array) runs before the header scratch, subkey and
    // nonce are taken: an encryption inside it cannot overwrite them.
    const context = ['tenant-1', 'row-9']
    Object.defineProperty(context, 0, {
      enumerable: true,
      get: () => {
        encryptValue(codecs.number, 7, makeKey(2), { table: 'other', column: 'n' })
        return 'tenant-1'
      },
    })
    const ct = encryptValue(codecs.text, 'outer', key, { ...AAD, context })
    expect(decryptValue(codecs.text, ct, key, { ...AAD, context: ['tenant-1', 'row-9'] })).toBe('outer')
  })

  it('with context values', () => {
    expect(roundTrip(codecs.text, 'a@x.io', { ...AAD, context: ['tenant-1', 'row-9'] })).toBe('a@x.io')
  })

  it('accepts a plain Uint8Array at an offset, as drivers return', () => {
    const ct = encryptValue(codecs.text, 'hello', key, AAD)
    const backing = new Uint8Array(ct.length + 10)
    backing.set(ct, 7)
    expect(decryptValue(codecs.text, backing.subarray(7, 7 + ct.length), key, AAD)).toBe('hello')
  })

  it('rejects NaN and Invalid Date with CODEC_INVALID_VALUE before encrypting', () => {
    for (const [codec, value] of [
      [codecs.number, Number.NaN],
      [codecs.date, new Date('invalid')],
    ] as Array<[Codec<unknown>, unknown]>) {
      try {
        encryptValue(codec, value, key, AAD)
        expect.unreachable()
      } catch (error) {
        expect(error).toBeInstanceOf(CodecError)
        expect((error as CodecError).code).toBe('CODEC_INVALID_VALUE')
      }
    }
  })

  it('never encrypts the same value to the same bytes, and never repeats a nonce', () => {
    const nonces = new Set<string>()
    for (let i = 0; i < 5000; i++) {
      const ct = encryptValue(codecs.text, 'same', key, AAD)
      nonces.add(ct.subarray(4, 16).toString('hex'))
    }
    expect(nonces.size).toBe(5000)
  })
})

describe('tampering and misuse give typed errors, never plaintext', () => {
  const key = makeKey()
  const TAMPER_CODES = [
    'FORMAT_UNKNOWN_VERSION',
    'FORMAT_INVALID',
    'FORMAT_TRUNCATED',
    'CODEC_MISMATCH',
    'WRONG_KEY',
    'DECRYPT_AUTH_FAILED',
  ]

  it('every single-bit flip of a ciphertext is rejected with a DecryptionError', () => {
    const samples: Array<[FieldAad, Buffer]> = [
      [AAD, encryptValue(codecs.text, 'alice@example.com', key, AAD)],
      [AAD, encryptValue(codecs.text, '', key, AAD)],
      [{ ...AAD, context: ['t1'] }, encryptValue(codecs.number, 42, key, { ...AAD, context: ['t1'] })],
    ]
    const v200 = makeKey(200)
    let flips = 0
    for (const [aad, ct] of samples) {
      for (let bit = 0; bit < ct.length * 8; bit++) {
        const bad = Buffer.from(ct)
        bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7))
        const tag = readHeader(ct).codecTag
        expect(TAMPER_CODES).toContain(decryptionCode(() => decryptField(key, bad, aad, tag)))
        flips++
      }
    }
    const ct200 = encryptValue(codecs.bigint, -5n, v200, AAD)
    for (let bit = 0; bit < ct200.length * 8; bit++) {
      const bad = Buffer.from(ct200)
      bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7))
      expect(TAMPER_CODES).toContain(decryptionCode(() => decryptValue(codecs.bigint, bad, v200, AAD)))
      flips++
    }
    expect(flips).toBe((49 + 32 + 40 + 34) * 8)
  })

  it('a random bit flip of a random value is rejected (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat(), (u, n) => {
        const ct = encryptValue(codecs.bytes, u, key, AAD)
        const bit = n % (ct.length * 8)
        ct[bit >> 3] = (ct[bit >> 3] as number) ^ (1 << (bit & 7))
        expect(TAMPER_CODES).toContain(decryptionCode(() => decryptValue(codecs.bytes, ct, key, AAD)))
      }),
    )
  })

  it('every truncation is rejected', () => {
    const ct = encryptValue(codecs.text, 'alice@example.com', key, AAD)
    const seen = new Set<string>()
    for (let n = 0; n < ct.length; n++) {
      seen.add(decryptionCode(() => decryptValue(codecs.text, ct.subarray(0, n), key, AAD)))
    }
    expect([...seen].sort()).toEqual(['DECRYPT_AUTH_FAILED', 'FORMAT_TRUNCATED'])
  })

  it('another table, column or context: DECRYPT_AUTH_FAILED', () => {
    const ctx = { ...AAD, context: ['tenant-1', 'row-9'] }
    const ct = encryptValue(codecs.text, 'a@x.io', key, ctx)
    const others: FieldAad[] = [
      { ...ctx, table: 'admins' },
      { ...ctx, column: 'email2' },
      { ...AAD },
      { ...AAD, context: [] },
      { ...AAD, context: ['tenant-1'] },
      { ...AAD, context: ['tenant-2', 'row-9'] },
      { ...AAD, context: ['row-9', 'tenant-1'] },
      { ...AAD, context: ['tenant-1row-9'] },
      { ...AAD, context: ['tenant-1', 'row-9', ''] },
      // lp() keeps name boundaries: "users"+"email" ≠ "user"+"semail"
      { table: 'user', column: 'semail', context: ctx.context },
    ]
    for (const aad of others) {
      expect(decryptionCode(() => decryptValue(codecs.text, ct, key, aad))).toBe('DECRYPT_AUTH_FAILED')
    }
    expect(decryptValue(codecs.text, ct, key, ctx)).toBe('a@x.io')
  })

  it('another key version: WRONG_KEY; same version, other bytes: DECRYPT_AUTH_FAILED; index key: WRONG_KEY', () => {
    const ct = encryptValue(codecs.text, 'a@x.io', key, AAD)
    expect(decryptionCode(() => decryptValue(codecs.text, ct, makeKey(2), AAD))).toBe('WRONG_KEY')
    expect(decryptionCode(() => decryptValue(codecs.text, ct, makeKey(1, 'index'), AAD))).toBe('WRONG_KEY')
    const other = makeKey(1, 'data', createHash('sha256').update('other').digest())
    expect(decryptionCode(() => decryptValue(codecs.text, ct, other, AAD))).toBe('DECRYPT_AUTH_FAILED')
    expect(() => encryptValue(codecs.text, 'x', makeKey(1, 'index'), AAD)).toThrow(KeyError)
  })

  it('wrong codec: CODEC_MISMATCH naming both codecs', () => {
    const ct = encryptValue(codecs.text, '42', key, AAD)
    try {
      decryptValue(codecs.number, ct, key, AAD)
      expect.unreachable()
    } catch (error) {
      expect(error).toBeInstanceOf(DecryptionError)
      expect(error).toMatchObject({ code: 'CODEC_MISMATCH', table: 'users', column: 'email' })
      expect((error as Error).message).toMatch(/text.*number/)
    }
  })

  it('errors carry table/column and no plaintext or ciphertext bytes', () => {
    const secret = 'very-secret-plaintext'
    const ct = encryptValue(codecs.text, secret, key, AAD)
    ct[ct.length - 1] = (ct[ct.length - 1] as number) ^ 1
    try {
      decryptValue(codecs.text, ct, key, AAD)
      expect.unreachable()
    } catch (error) {
      const e = error as DecryptionError
      expect(e).toMatchObject({ code: 'DECRYPT_AUTH_FAILED', table: 'users', column: 'email' })
      const text = `${e.message} ${JSON.stringify(e)} ${String(e.cause)}`
      expect(text).not.toContain(secret)
      expect(text).not.toContain(ct.toString('hex').slice(8, 40))
      expect(text).not.toContain(ct.toString('base64').slice(4, 24))
    }
  })

  it('a missing or empty table/column and bad codec tags are configuration errors', () => {
    expect(() => encryptValue(codecs.text, 'x', key, { table: '', column: 'c' })).toThrow(ConfigError)
    expect(() => encryptField(key, 9, Buffer.alloc(1), AAD)).toThrow(ConfigError)
    expect(() => encryptValue(codecs.text, 'x', key, { ...AAD, context: ['\uDC00'] })).toThrow(ConfigError)
    expect(decryptionCode(() => decryptField(key, 'abc' as unknown as Uint8Array, AAD, 1))).toBe(
      'NOT_CIPHERTEXT',
    )
  })
})

describe('hot path: epochs and subkey caching', () => {
  it(`draws exactly 4 salts for 3×2^16+1 encryptions under one column`, () => {
    const key = makeKey()
    const one = Buffer.from([1])
    let first: Buffer | undefined
    let last: Buffer | undefined
    const n = 3 * EPOCH_MESSAGES + 1
    for (let i = 0; i < n; i++) {
      const ct = encryptField(key, codecs.boolean.tag, one, AAD)
      if (i === 0) first = ct
      last = ct
    }
    expect(EPOCH_MESSAGES).toBe(2 ** 16)
    expect(columnKeyStats(key, AAD)).toEqual({ saltsDrawn: 4, subkeysDerived: 4 })
    // Another column has its own epochs.
    encryptField(key, codecs.boolean.tag, one, { ...AAD, column: 'other' })
    expect(columnKeyStats(key, { ...AAD, column: 'other' })).toEqual({ saltsDrawn: 1, subkeysDerived: 1 })
    // Retired epochs move to the reader cache: reading a value of the first epoch derives nothing.
    expect(decryptField(key, first as Buffer, AAD, codecs.boolean.tag).equals(one)).toBe(true)
    expect(decryptField(key, last as Buffer, AAD, codecs.boolean.tag).equals(one)).toBe(true)
    expect(columnKeyStats(key, AAD).subkeysDerived).toBe(4)
  })

  it('a reader derives one subkey to decrypt 1000 values of one epoch', () => {
    const writer = makeKey()
    const cts = Array.from({ length: 1000 }, (_, i) => encryptValue(codecs.number, i, writer, AAD))
    expect(columnKeyStats(writer, AAD).saltsDrawn).toBe(1)
    const reader = makeKey()
    cts.forEach((ct, i) => {
      expect(decryptValue(codecs.number, ct, reader, AAD)).toBe(i)
    })
    expect(columnKeyStats(reader, AAD)).toEqual({ saltsDrawn: 0, subkeysDerived: 1 })
  })
})

describe('zeroization', () => {
  it('key.destroy() zeroes the column key and every subkey held, and the key is unusable after', () => {
    const key = makeKey()
    const writerCts: Buffer[] = []
    for (let i = 0; i < EPOCH_MESSAGES + 1; i++) writerCts.push(encryptField(key, 4, Buffer.from([1]), AAD))
    // A value from another writer (another salt) puts a derived subkey in the reader cache.
    const other = encryptValue(codecs.text, 'x', makeKey(), { ...AAD, context: ['c'] })
    expect(decryptValue(codecs.text, other, key, { ...AAD, context: ['c'] })).toBe('x')
    const held = columnKeyBuffers(key, AAD)
    expect(held.length).toBeGreaterThanOrEqual(3) // column key, current epoch, retired epoch (+ reader)
    for (const b of held) expect(b.equals(Buffer.alloc(b.length))).toBe(false)

    key.destroy()
    for (const b of held) expect(b.equals(Buffer.alloc(32))).toBe(true)
    expect(() => encryptValue(codecs.text, 'x', key, AAD)).toThrow(KeyError)
    expect(() => decryptField(key, writerCts[0] as Buffer, AAD, 4)).toThrow(KeyError)
  })
})
