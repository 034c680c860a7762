import { createDecipheriv } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { decryptValue, encryptFieldWithFixedNonceForVectors } from '../../../src/fields/field-cipher.js'
import { readHeader } from '../../../src/fields/format.js'
import { hkdfSha256 } from '../../../src/fields/hkdf.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import {
  codecOf,
  type FormatV1File,
  type FormatV1Vector,
  vectorValue,
} from '../../vectors/format-v1-vectors.js'

const load = (name: string) =>
  JSON.parse(readFileSync(new URL(`../../vectors/${name}`, import.meta.url), 'utf8')) as FormatV1File
const file = load('format-v1.json')
// Codec tag 8 was added after 0.1.0, in a file of its own: format-v1.json is never touched.
const calendarDateFile = load('format-v1-calendar-date.json')
const h = (s: string) => Buffer.from(s, 'hex')

function keyOf(v: FormatV1Vector): KeyMaterial {
  return new KeyMaterial({ logicalTable: v.table, purpose: 'data', version: v.keyVersion }, h(v.keyHex))
}

describe('frozen format v1 vectors (test/vectors/format-v1.json)', () => {
  it('is the frozen file, with one vector per codec, one with context and one with key version 200', () => {
    expect(file.note).toMatch(/^frozen: never regenerate/)
    const codecsCovered = new Set(file.vectors.map((v) => v.codec))
    expect([...codecsCovered].sort()).toEqual([
      'bigint',
      'boolean',
      'bytes',
      'date',
      'json',
      'number',
      'text',
    ])
    expect(file.vectors.some((v) => v.context.length > 0)).toBe(true)
    expect(file.vectors.some((v) => v.keyVersion === 200)).toBe(true)
  })
})

describe('frozen format v1 vectors of codec tag 8 (test/vectors/format-v1-calendar-date.json)', () => {
  it('is a frozen file of calendarDate vectors, one with context, all with type byte 0x18', () => {
    expect(calendarDateFile.note).toMatch(/^frozen: never regenerate/)
    expect(calendarDateFile.vectors.length).toBe(3)
    expect(new Set(calendarDateFile.vectors.map((v) => v.codec))).toEqual(new Set(['calendarDate']))
    expect(calendarDateFile.vectors.some((v) => v.context.length > 0)).toBe(true)
    for (const v of calendarDateFile.vectors) expect(v.ciphertextHex.slice(0, 2)).toBe('18')
  })
})

describe.each([
  ['format-v1.json', file],
  ['format-v1-calendar-date.json', calendarDateFile],
] as const)('vectors of %s', (_fileName, file) => {
  describe.each(file.vectors.map((v) => [v.name, v] as const))('%s', (_name, v) => {
    const codec = codecOf(v.codec)
    const aad = { table: v.table, column: v.column, context: v.context }

    it('decrypts to the expected value', () => {
      const ct = h(v.ciphertextHex)
      expect(readHeader(ct)).toMatchObject({
        formatVersion: 1,
        codecTag: codec.tag,
        keyVersion: v.keyVersion,
      })
      const value = decryptValue(codec, ct, keyOf(v), aad)
      const expected = vectorValue(v.codec, v.value)
      if (v.codec === 'date') expect((value as Date).toISOString()).toBe(v.value)
      else if (v.codec === 'bytes') expect(Buffer.from(value as Uint8Array).toString('hex')).toBe(v.value)
      else expect(value).toEqual(expected)
      expect(codec.encode(value).toString('hex')).toBe(v.plaintextHex)
    })

    it('encrypts to the same bytes with the same salt and nonce', () => {
      const ct = encryptFieldWithFixedNonceForVectors(keyOf(v), codec.tag, h(v.plaintextHex), aad, {
        salt: h(v.saltHex),
        nonce: h(v.nonceHex),
      })
      expect(ct.toString('hex')).toBe(v.ciphertextHex)
    })

    // Text and json only (the codecs encryptValue hands to the cipher as a string): registered
    // for those vectors alone, not skipped for the others.
    if (codec.ciphertextText !== undefined)
      it('encrypts to the same bytes from the text, as encryptValue hands text and JSON to the cipher', () => {
        const text = h(v.plaintextHex).toString('utf8')
        const ct = encryptFieldWithFixedNonceForVectors(keyOf(v), codec.tag, text, aad, {
          salt: h(v.saltHex),
          nonce: h(v.nonceHex),
        })
        expect(ct.toString('hex')).toBe(v.ciphertextHex)
      })

    it('has the documented intermediates', () => {
      const lp = (s: string) => {
        const b = Buffer.from(s)
        return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b])
      }
      const columnKey = hkdfSha256(
        h(v.keyHex),
        Buffer.alloc(0),
        Buffer.concat([Buffer.from('kfe/v1/column'), lp(v.table), lp(v.column)]),
        32,
      )
      expect(columnKey.toString('hex')).toBe(v.columnKeyHex)
      expect(hkdfSha256(columnKey, h(v.saltHex), Buffer.from('kfe/v1/record'), 32).toString('hex')).toBe(
        v.subkeyHex,
      )
      const headerLength = readHeader(h(v.ciphertextHex)).headerLength
      expect(v.aadHex.slice(0, headerLength * 2)).toBe(v.ciphertextHex.slice(0, headerLength * 2))
      // By hand, as docs/format.md shows: subkey, nonce, AAD and tag open the body with plain node:crypto.
      const ct = h(v.ciphertextHex)
      const d = createDecipheriv('aes-256-gcm', h(v.subkeyHex), h(v.nonceHex))
      d.setAAD(h(v.aadHex))
      d.setAuthTag(ct.subarray(ct.length - 16))
      const body = ct.subarray(headerLength + 12, ct.length - 16)
      expect(Buffer.concat([d.update(body), d.final()]).toString('hex')).toBe(v.plaintextHex)
    })
  })
})
