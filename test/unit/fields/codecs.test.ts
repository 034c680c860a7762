import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CodecError } from '../../../src/errors.js'
import { canonicalJson } from '../../../src/fields/canonical-json.js'
import { type Codec, codecByTag, codecs } from '../../../src/fields/codecs.js'

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(CodecError)
    return (error as CodecError).code
  }
  return undefined
}

const hex = (b: Buffer) => b.toString('hex')

describe('codec registry', () => {
  it('tags are frozen forever: text=1 number=2 bigint=3 boolean=4 date=5 json=6 bytes=7 calendarDate=8', () => {
    expect(Object.values(codecs).map((c) => [c.kind, c.tag])).toEqual([
      ['text', 1],
      ['number', 2],
      ['bigint', 3],
      ['boolean', 4],
      ['date', 5],
      ['json', 6],
      ['bytes', 7],
      ['calendarDate', 8],
    ])
    for (const c of Object.values(codecs)) expect(codecByTag(c.tag)).toBe(c)
    expect(codecByTag(0)).toBeUndefined()
    expect(codecByTag(9)).toBeUndefined()
    expect(codecByTag(1.5)).toBeUndefined()
    expect(Object.isFrozen(codecs)).toBe(true)
    expect(Object.isFrozen(codecs.text)).toBe(true)
  })

  it('every codec rejects a wrong-typed value with CODEC_INVALID_VALUE naming the type, not the value', () => {
    const wrong: Record<string, unknown> = {
      text: 12345,
      number: 'secret-678',
      bigint: 5,
      boolean: 'secret-678',
      date: 'secret-678',
      json: () => 0,
      bytes: 'secret-678',
      calendarDate: 'secret-678',
    }
    for (const c of Object.values(codecs) as Codec<unknown>[]) {
      const value = wrong[c.kind]
      expect(c.is(value)).toBe(false)
      try {
        c.encode(value)
        expect.unreachable(`${c.kind} accepted a wrong-typed value`)
      } catch (error) {
        expect(error).toBeInstanceOf(CodecError)
        expect((error as CodecError).code).toBe('CODEC_INVALID_VALUE')
        expect((error as Error).message).toContain(c.kind)
        expect((error as Error).message).not.toContain('secret-678')
        expect((error as Error).message).not.toContain('12345')
      }
    }
  })
})

describe('text', () => {
  it('round-trips any well-formed string, astral code points included, as its UTF-8 bytes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const bytes = codecs.text.encode(s)
        expect(bytes.equals(Buffer.from(s, 'utf8'))).toBe(true)
        expect(codecs.text.decode(bytes)).toBe(s)
      }),
    )
    for (const s of ['', '😀𝄞', '\uFEFFbom kept', 'e\u0301'])
      expect(codecs.text.decode(codecs.text.encode(s))).toBe(s)
  })

  it('does not normalize: precomposed and decomposed é differ', () => {
    expect(hex(codecs.text.encode('\u00e9'))).not.toBe(hex(codecs.text.encode('e\u0301')))
  })

  it('rejects lone surrogates, which have no canonical UTF-8', () => {
    for (const s of ['\uD800', 'a\uDC00b', '\uDBFF']) {
      expect(codecs.text.is(s)).toBe(false)
      expect(codeOf(() => codecs.text.encode(s))).toBe('CODEC_INVALID_VALUE')
    }
  })

  it('rejects malformed UTF-8 on decode', () => {
    for (const b of [[0xff], [0xc3], [0xed, 0xa0, 0x80]]) {
      expect(codeOf(() => codecs.text.decode(Buffer.from(b)))).toBe('CODEC_INVALID_VALUE')
    }
  })
})

describe('number', () => {
  it('is 8-byte IEEE-754 big-endian and round-trips every non-NaN double', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true }), (n) => {
        const bytes = codecs.number.encode(n)
        expect(bytes.length).toBe(8)
        expect(codecs.number.decode(bytes)).toBe(n === 0 ? 0 : n)
      }),
    )
    expect(hex(codecs.number.encode(1))).toBe('3ff0000000000000')
    for (const n of [
      Number.MAX_SAFE_INTEGER,
      Number.MIN_SAFE_INTEGER,
      Infinity,
      -Infinity,
      Number.MIN_VALUE,
    ]) {
      expect(codecs.number.decode(codecs.number.encode(n))).toBe(n)
    }
  })

  it('encodes -0 as +0 and refuses to decode a -0 encoding', () => {
    expect(hex(codecs.number.encode(-0))).toBe('0000000000000000')
    expect(Object.is(codecs.number.decode(codecs.number.encode(-0)), 0)).toBe(true)
    expect(codeOf(() => codecs.number.decode(Buffer.from('8000000000000000', 'hex')))).toBe(
      'CODEC_INVALID_VALUE',
    )
  })

  it('rejects NaN (many bit patterns, never equal to itself) both ways', () => {
    expect(codecs.number.is(Number.NaN)).toBe(false)
    expect(codeOf(() => codecs.number.encode(Number.NaN))).toBe('CODEC_INVALID_VALUE')
    expect(codeOf(() => codecs.number.decode(Buffer.from('7ff8000000000001', 'hex')))).toBe(
      'CODEC_INVALID_VALUE',
    )
    expect(codeOf(() => codecs.number.decode(Buffer.alloc(7)))).toBe('CODEC_INVALID_VALUE')
  })
})

describe('bigint', () => {
  it('matches Java BigInteger.toByteArray (signed, minimal, big-endian)', () => {
    const known: Array<[bigint, string]> = [
      [0n, '00'],
      [1n, '01'],
      [127n, '7f'],
      [128n, '0080'],
      [255n, '00ff'],
      [256n, '0100'],
      [-1n, 'ff'],
      [-128n, '80'],
      [-129n, 'ff7f'],
      [-256n, 'ff00'],
      [-257n, 'feff'],
      [2n ** 63n, '008000000000000000'],
    ]
    for (const [n, h] of known) {
      expect(hex(codecs.bigint.encode(n))).toBe(h)
      expect(codecs.bigint.decode(Buffer.from(h, 'hex'))).toBe(n)
    }
  })

  it('round-trips huge and negative bigints', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(2n ** 2048n), max: 2n ** 2048n }), (n) => {
        expect(codecs.bigint.decode(codecs.bigint.encode(n))).toBe(n)
      }),
    )
  })

  it('rejects empty and non-minimal encodings', () => {
    for (const h of ['', '0000', '007f', 'ffff', 'ff80']) {
      expect(codeOf(() => codecs.bigint.decode(Buffer.from(h, 'hex')))).toBe('CODEC_INVALID_VALUE')
    }
  })
})

describe('boolean', () => {
  it('is one byte 00/01 and rejects anything else', () => {
    expect(hex(codecs.boolean.encode(false))).toBe('00')
    expect(hex(codecs.boolean.encode(true))).toBe('01')
    expect(codecs.boolean.decode(Buffer.from([1]))).toBe(true)
    expect(codecs.boolean.decode(Buffer.from([0]))).toBe(false)
    for (const b of [[2], [0xff], [], [0, 0]]) {
      expect(codeOf(() => codecs.boolean.decode(Buffer.from(b)))).toBe('CODEC_INVALID_VALUE')
    }
  })
})

describe('date', () => {
  it('is the signed 64-bit big-endian millisecond count, before 1970 included', () => {
    expect(hex(codecs.date.encode(new Date(0)))).toBe('0000000000000000')
    expect(hex(codecs.date.encode(new Date(-1)))).toBe('ffffffffffffffff')
    fc.assert(
      fc.property(fc.date({ noInvalidDate: true }), (d) => {
        expect(codecs.date.decode(codecs.date.encode(d)).getTime()).toBe(d.getTime())
      }),
    )
    const old = new Date('1900-01-01T00:00:00.123Z')
    expect(codecs.date.decode(codecs.date.encode(old)).toISOString()).toBe(old.toISOString())
  })

  it('rejects Invalid Date, and out-of-range encodings', () => {
    expect(codecs.date.is(new Date(Number.NaN))).toBe(false)
    expect(codeOf(() => codecs.date.encode(new Date('nope')))).toBe('CODEC_INVALID_VALUE')
    expect(codeOf(() => codecs.date.decode(Buffer.from('7fffffffffffffff', 'hex')))).toBe(
      'CODEC_INVALID_VALUE',
    )
  })
})

describe('json', () => {
  it('sorts keys recursively by UTF-16 code units, without whitespace', () => {
    const a = { b: 1, a: [{ z: null, y: 'x' }], é: true, Z: -0, '𝄞': 1, '\uffff': 2 }
    expect(canonicalJson(a)).toBe('{"Z":0,"a":[{"y":"x","z":null}],"b":1,"é":true,"𝄞":1,"\uffff":2}')
  })

  it('gives the same bytes for the same value whatever the key order, and round-trips', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const reordered = JSON.parse(JSON.stringify(v), (_k, val: unknown) =>
          val !== null && typeof val === 'object' && !Array.isArray(val)
            ? Object.fromEntries(Object.entries(val).reverse())
            : val,
        ) as unknown
        const bytes = codecs.json.encode(v as never)
        expect(codecs.json.encode(reordered as never).equals(bytes)).toBe(true)
        expect(codecs.json.decode(bytes)).toEqual(JSON.parse(JSON.stringify(v)))
      }),
    )
  })

  it('matches a plain reference writer, also for records that share keys in one or several orders', () => {
    // The reference: keys sorted by the default (UTF-16 code unit) order, leaves as JSON.stringify prints them.
    const reference = (v: unknown): string => {
      if (Array.isArray(v)) return `[${v.map(reference).join(',')}]`
      if (v !== null && typeof v === 'object') {
        const o = v as Record<string, unknown>
        const keys = Object.keys(o).sort()
        return `{${keys.map((k) => `${JSON.stringify(k)}:${reference(o[k])}`).join(',')}}`
      }
      return JSON.stringify(v)
    }
    // Records whose keys come from a small pool, in any order: neighbours often share a first key
    // and a length, or the whole key set in another order. The writer's key-order cache must never
    // hand one record the order of another whose keys differ.
    const key = fc.constantFrom('a', 'b', 'c', 'A', '10', '2', '𝄞', '\uffff')
    const record = fc.uniqueArray(key, { minLength: 1, maxLength: 4 }).chain((order) =>
      fc.tuple(...order.map(() => fc.jsonValue({ maxDepth: 1 }))).map((values) => {
        const r: Record<string, unknown> = {}
        order.forEach((k, i) => {
          r[k] = values[i]
        })
        return r
      }),
    )
    const records = fc.array(record, { minLength: 2, maxLength: 6 })
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), records, fc.array(fc.oneof(records, fc.jsonValue()))), (v) => {
        expect(canonicalJson(v)).toBe(reference(v))
      }),
      { numRuns: 500 },
    )
  })

  it('rejects what JSON cannot hold, naming the position but not the data', () => {
    const bad: unknown[] = [
      undefined,
      { a: undefined },
      [1, () => 2],
      { n: 10n },
      { n: Number.NaN },
      [Infinity],
      { d: new Date(0) },
      new Map(),
      Buffer.from('x'),
      Symbol('s'),
      new Array(3), // sparse: holes, not undefined
    ]
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    bad.push(cyclic)
    for (const v of bad) {
      expect(codecs.json.is(v)).toBe(false)
      expect(codeOf(() => codecs.json.encode(v as never))).toBe('CODEC_INVALID_VALUE')
    }
    try {
      codecs.json.encode({ 'secret@key': { n: Number.NaN } } as never)
    } catch (error) {
      expect((error as Error).message).toContain('value.<key #0>.<key #0>')
      expect((error as Error).message).not.toContain('secret')
    }
  })

  it('accepts null-prototype objects and decodes with JSON.parse', () => {
    const o = Object.assign(Object.create(null) as object, { b: 2, a: 1 })
    expect(codecs.json.encode(o as never).toString()).toBe('{"a":1,"b":2}')
    expect(codecs.json.decode(Buffer.from(' [1, 2] '))).toEqual([1, 2])
    expect(codeOf(() => codecs.json.decode(Buffer.from('{')))).toBe('CODEC_INVALID_VALUE')
  })
})

describe('bytes', () => {
  it('is the bytes as given, copied both ways', () => {
    fc.assert(
      fc.property(fc.uint8Array(), (u) => {
        const enc = codecs.bytes.encode(u)
        expect(enc.equals(Buffer.from(u))).toBe(true)
        expect(enc.buffer === u.buffer && u.length > 0).toBe(false)
        const dec = codecs.bytes.decode(enc)
        expect(Buffer.isBuffer(dec)).toBe(true)
        expect(Buffer.from(dec).equals(enc)).toBe(true)
        enc.fill(0)
        expect(Buffer.from(dec).equals(Buffer.from(u))).toBe(true)
      }),
    )
  })
})

describe('calendarDate', () => {
  const c = codecs.calendarDate

  it('encodes a day as its 10 ASCII bytes and reads the same string back', () => {
    expect(hex(c.encode('1990-05-17'))).toBe(Buffer.from('1990-05-17').toString('hex'))
    for (const day of ['0001-01-01', '2024-02-29', '2000-02-29', '9999-12-31', '1970-01-01']) {
      expect(c.is(day)).toBe(true)
      expect(c.decode(c.encode(day))).toBe(day)
    }
  })

  it('round-trips every existing day, whatever the process time zone (property)', () => {
    fc.assert(
      fc.property(
        fc.date({
          min: new Date('0001-01-01T00:00:00Z'),
          max: new Date('9999-12-31T00:00:00Z'),
          noInvalidDate: true,
        }),
        (d) => {
          const day = d.toISOString().slice(0, 10)
          expect(c.decode(c.encode(day))).toBe(day)
        },
      ),
    )
  })

  it('CODEC_INVALID_VALUE for a day that does not exist, another shape, or a Date, never echoing the value', () => {
    const bad: unknown[] = [
      '2023-02-29',
      '1900-02-29',
      '2024-04-31',
      '2024-13-01',
      '2024-00-10',
      '2024-01-00',
      '0000-01-01',
      '1990-5-17',
      '17/05/1990',
      '1990-05-17T00:00:00Z',
      ' 1990-05-17',
      '１９９０-05-17',
      new Date('1990-05-17'),
      19900517,
    ]
    for (const value of bad) {
      expect(c.is(value)).toBe(false)
      expect(codeOf(() => c.encode(value as string))).toBe('CODEC_INVALID_VALUE')
      try {
        c.encode(value as string)
      } catch (error) {
        expect((error as Error).message).not.toContain(String(value))
      }
    }
  })

  it('decoding rejects a wrong length or bytes that are not an existing day', () => {
    expect(codeOf(() => c.decode(Buffer.from('1990-05-1')))).toBe('CODEC_INVALID_VALUE')
    expect(codeOf(() => c.decode(Buffer.from('2023-02-29')))).toBe('CODEC_INVALID_VALUE')
    expect(codeOf(() => c.decode(Buffer.from('1990/05/17')))).toBe('CODEC_INVALID_VALUE')
  })
})
