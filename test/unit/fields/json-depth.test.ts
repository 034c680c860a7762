import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { blindIndex } from '../../../src/blindindex/blind-index.js'
import { computeBlindIndex } from '../../../src/blindindex/compute-blind-index.js'
import { CodecError } from '../../../src/errors.js'
import { canonicalJson, MAX_JSON_DEPTH } from '../../../src/fields/canonical-json.js'
import { codecs } from '../../../src/fields/codecs.js'
import { decryptValue, encryptField, encryptValue, type FieldAad } from '../../../src/fields/field-cipher.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import { testKey } from '../blindindex/key-fixtures.js'

const SECRET = 'secret@example.com'
const AAD: FieldAad = { table: 'users', column: 'notes' }
const dataKey = () =>
  new KeyMaterial(
    { logicalTable: 'users', purpose: 'data', version: 1 },
    createHash('sha256').update('json depth test key').digest(),
  )

/** `levels` arrays nested in one another around a string that must never be printed. */
function deepArray(levels: number): unknown {
  let v: unknown = SECRET
  for (let i = 0; i < levels; i++) v = [v]
  return v
}

/** `levels` objects nested in one another, each keyed by plaintext (a map keyed by e-mail). */
function deepObject(levels: number): unknown {
  let v: unknown = SECRET
  for (let i = 0; i < levels; i++) v = { [SECRET]: v, a: i }
  return v
}

/** Runs `fn`, which must throw a CodecError (never a RangeError); returns it. */
function codecError(fn: () => unknown): CodecError {
  let thrown: unknown
  try {
    fn()
  } catch (error) {
    thrown = error
  }
  expect(thrown).toBeInstanceOf(CodecError)
  const error = thrown as CodecError
  expect(error.code).toBe('CODEC_INVALID_VALUE')
  expect(error.message).toContain(`at most ${MAX_JSON_DEPTH} levels`)
  expect(error.message).not.toContain('secret')
  expect(error.message.length).toBeLessThan(200)
  return error
}

describe('json nesting depth', () => {
  it('is documented as 1000 levels, a scalar being 0 and [x] being 1', () => {
    expect(MAX_JSON_DEPTH).toBe(1000)
    expect(canonicalJson(deepArray(1))).toBe(`["${SECRET}"]`)
  })

  for (const [shape, make] of [
    ['arrays', deepArray],
    ['objects', deepObject],
  ] as const) {
    it(`accepts ${shape} nested exactly ${MAX_JSON_DEPTH} levels deep, with the bytes of the careful writer`, () => {
      for (const levels of [127, 128, 129, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH]) {
        const value = make(levels)
        const text = canonicalJson(value)
        expect(JSON.parse(text)).toEqual(value)
        expect(codecs.json.is(value)).toBe(true)
        expect(codecs.json.encode(value as never).toString('utf8')).toBe(text)
      }
    })

    it(`refuses ${shape} nested ${MAX_JSON_DEPTH + 1} and 20,000 levels deep with CODEC_INVALID_VALUE`, () => {
      for (const levels of [MAX_JSON_DEPTH + 1, 20_000]) {
        const value = make(levels)
        codecError(() => canonicalJson(value))
        codecError(() => codecs.json.encode(value as never))
        expect(codecs.json.is(value)).toBe(false)
      }
    })

    it(`through encryptValue: ${MAX_JSON_DEPTH} levels of ${shape} round-trip, 20,000 are refused`, () => {
      const key = dataKey()
      const ok = make(MAX_JSON_DEPTH)
      const ciphertext = encryptValue(codecs.json, ok as never, key, AAD)
      expect(decryptValue(codecs.json, ciphertext, key, AAD)).toEqual(ok)
      codecError(() => encryptValue(codecs.json, make(MAX_JSON_DEPTH + 1) as never, key, AAD))
      codecError(() => encryptValue(codecs.json, make(20_000) as never, key, AAD))
    })

    it(`through the blind index path: ${MAX_JSON_DEPTH} levels of ${shape} are indexed, 20,000 are refused`, () => {
      const key = testKey()
      const spec = blindIndex({ name: 'notes_bidx' })
      const index = computeBlindIndex(key, 'users', spec, [codecs.json.encode(make(MAX_JSON_DEPTH) as never)])
      expect(index).toEqual(
        computeBlindIndex(key, 'users', spec, [codecs.json.encode(make(MAX_JSON_DEPTH) as never)]),
      )
      expect(index.length).toBe(32)
      codecError(() => computeBlindIndex(key, 'users', spec, [codecs.json.encode(make(20_000) as never)]))
    })
  }

  it('decrypts a stored value deeper than the limit (JSON.parse does not recurse): no RangeError', () => {
    const key = dataKey()
    const text = `${'['.repeat(20_000)}1${']'.repeat(20_000)}`
    const ciphertext = encryptField(key, codecs.json.tag, Buffer.from(text, 'utf8'), AAD)
    let v = decryptValue(codecs.json, ciphertext, key, AAD) as unknown
    let levels = 0
    while (Array.isArray(v)) {
      expect(v.length).toBe(1)
      v = v[0]
      levels++
    }
    expect(levels).toBe(20_000)
    expect(v).toBe(1)
  })
})
