import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { CodecError } from '../../../src/errors.js'
import { canonicalJson, MAX_JSON_DEPTH } from '../../../src/fields/canonical-json.js'
import { codecs } from '../../../src/fields/codecs.js'
import { decryptField, decryptValue, encryptValue, type FieldAad } from '../../../src/fields/field-cipher.js'
import { isJsonValue, jsonText } from '../../../src/fields/json-text.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'

const AAD: FieldAad = { table: 'users', column: 'profile' }
const key = () =>
  new KeyMaterial(
    { logicalTable: 'users', purpose: 'data', version: 1 },
    createHash('sha256').update('json text test key').digest(),
  )

/** The error `fn` throws (a CodecError), or undefined. */
function thrown(fn: () => unknown): CodecError | undefined {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(CodecError)
    return error as CodecError
  }
  return undefined
}

function nested(levels: number): unknown {
  let v: unknown = 'x'
  for (let i = 0; i < levels; i++) v = i % 2 === 0 ? [v] : { a: v }
  return v
}

/** Values the json codec refuses: every check canonicalJson makes. */
function refused(): Array<[string, unknown]> {
  const cyclic: Record<string, unknown> = {}
  cyclic.self = { back: cyclic }
  const symbolKeyed = { a: 1, [Symbol('s')]: 2 }
  class Point {
    x = 1
  }
  return [
    ['undefined', undefined],
    ['an undefined property', { a: 1, b: undefined }],
    ['an undefined element', [1, undefined]],
    ['a hole', Object.assign(new Array(3), { 0: 1, 2: 3 })],
    ['a function', { f: () => 1 }],
    ['an own toJSON function', { toJSON: () => 'x', a: 1 }],
    ['a bigint', { n: 10n }],
    ['a symbol', [Symbol('s')]],
    ['NaN', { n: Number.NaN }],
    ['Infinity', [Number.POSITIVE_INFINITY]],
    ['-Infinity', { deep: { n: Number.NEGATIVE_INFINITY } }],
    ['a Date (toJSON)', { d: new Date(0) }],
    ['a Map', new Map([['a', 1]])],
    ['a Buffer (toJSON)', { b: Buffer.from('x') }],
    ['a class instance', [new Point()]],
    ['a boxed string', { s: new String('x') }],
    ['symbol keys', symbolKeyed],
    ['a cycle', cyclic],
    ['nesting past the limit', nested(MAX_JSON_DEPTH + 1)],
  ]
}

describe('jsonText: the text a json ciphertext holds', () => {
  it('is JSON.stringify of the value, in its own key order, for every JSON value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(jsonText(v)).toBe(JSON.stringify(v))
        expect(isJsonValue(v)).toBe(true)
        // The same value as the canonical text, which is what older versions wrote.
        expect(JSON.parse(jsonText(v))).toEqual(JSON.parse(canonicalJson(v)))
      }),
      { numRuns: 500 },
    )
  })

  it('keeps the key order it is given (not canonical: blind indexes use canonicalJson)', () => {
    const v = { b: 1, a: [{ z: null, y: 'é' }] }
    expect(jsonText(v)).toBe('{"b":1,"a":[{"z":null,"y":"é"}]}')
    expect(canonicalJson(v)).toBe('{"a":[{"y":"é","z":null}],"b":1}')
    expect(codecs.json.ciphertextText?.(v)).toBe(jsonText(v))
    expect(codecs.json.encode(v).toString()).toBe(canonicalJson(v))
  })

  it.each(refused())('refuses %s as canonicalJson does, with the same error', (_name, v) => {
    const expected = thrown(() => canonicalJson(v))
    expect(expected?.code).toBe('CODEC_INVALID_VALUE')
    const error = thrown(() => jsonText(v))
    expect(error?.code).toBe('CODEC_INVALID_VALUE')
    expect(error?.message).toBe(expected?.message)
    expect(isJsonValue(v)).toBe(false)
    expect(codecs.json.is(v)).toBe(false)
    expect(thrown(() => encryptValue(codecs.json, v as never, key(), AAD))?.code).toBe('CODEC_INVALID_VALUE')
  })

  it('never calls a toJSON, own or inherited, and accepts what canonicalJson accepts', () => {
    // A toJSON that is not a function is data: both writers print it as a key.
    const data = { toJSON: 1, a: 2 }
    expect(JSON.parse(jsonText(data))).toEqual(data)
    // An array whose prototype has a toJSON: JSON.stringify would call it, canonicalJson does not.
    const arr = Object.setPrototypeOf(
      [1, 2],
      Object.assign(Object.create(Array.prototype), { toJSON: () => 'x' }),
    )
    expect(jsonText(arr)).toBe('[1,2]')
    const proto = Object.prototype as { toJSON?: unknown }
    proto.toJSON = () => 'polluted'
    try {
      expect(jsonText({ a: [1] })).toBe('{"a":[1]}')
    } finally {
      delete proto.toJSON
    }
    const bare = Object.assign(Object.create(null) as object, { b: 2, a: 1 })
    expect(jsonText(bare)).toBe('{"b":2,"a":1}')
    expect(jsonText(nested(MAX_JSON_DEPTH))).toBe(canonicalJson(nested(MAX_JSON_DEPTH)))
  })

  it('is what encryptValue encrypts for a json column, and reads back equal', () => {
    const k = key()
    const v = { z: 1, a: { y: [true, null, 'x'], b: -0 } }
    const ct = encryptValue(codecs.json, v, k, AAD)
    expect(decryptField(k, ct, AAD, codecs.json.tag).toString()).toBe(JSON.stringify(v))
    expect(decryptValue(codecs.json, ct, k, AAD)).toEqual({ z: 1, a: { y: [true, null, 'x'], b: 0 } })
  })
})
