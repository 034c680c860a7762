import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ConfigError, DecryptionError } from '../../../src/errors.js'
import {
  ciphertextLength,
  encodeContext,
  FORMAT_V1_OVERHEAD,
  lengthPrefixed,
  looksLikeCiphertext,
  readHeader,
  varintLength,
  writeVarint,
} from '../../../src/fields/format.js'

function header(hexHead: string, bodyLength = 0): Buffer {
  return Buffer.concat([Buffer.from(hexHead, 'hex'), Buffer.alloc(12 + bodyLength + 16, 0xaa)])
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(DecryptionError)
    return (error as DecryptionError).code
  }
  return undefined
}

describe('key version varint (unsigned LEB128)', () => {
  it('encodes 1..127 in one byte, 128..16383 in two, 2^32-1 in five', () => {
    const enc = (n: number) => {
      const out = Buffer.alloc(varintLength(n))
      expect(writeVarint(out, 0, n)).toBe(out.length)
      return out.toString('hex')
    }
    expect(enc(1)).toBe('01')
    expect(enc(127)).toBe('7f')
    expect(enc(128)).toBe('8001')
    expect(enc(200)).toBe('c801')
    expect(enc(16383)).toBe('ff7f')
    expect(enc(16384)).toBe('808001')
    expect(enc(0xffff_ffff)).toBe('ffffffff0f')
  })

  it('round-trips through readHeader for every valid version', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0xffff_ffff }), fc.integer({ min: 1, max: 8 }), (v, tag) => {
        const vb = Buffer.alloc(varintLength(v))
        writeVarint(vb, 0, v)
        const ct = Buffer.concat([Buffer.from([0x10 | tag]), vb, Buffer.alloc(2 + 12 + 16)])
        expect(readHeader(ct)).toEqual({
          formatVersion: 1,
          codecTag: tag,
          keyVersion: v,
          headerLength: 1 + vb.length + 2,
        })
        expect(ct.length).toBe(ciphertextLength(0, v))
      }),
    )
  })
})

describe('readHeader', () => {
  it('reads the type byte and key version', () => {
    expect(readHeader(header('1101abcd'))).toEqual({
      formatVersion: 1,
      codecTag: 1,
      keyVersion: 1,
      headerLength: 4,
    })
    expect(readHeader(header('17c801abcd', 3))).toEqual({
      formatVersion: 1,
      codecTag: 7,
      keyVersion: 200,
      headerLength: 5,
    })
  })

  it('FORMAT_TRUNCATED: empty, inside the varint, or shorter than header + nonce + tag', () => {
    expect(codeOf(() => readHeader(Buffer.alloc(0)))).toBe('FORMAT_TRUNCATED')
    expect(codeOf(() => readHeader(Buffer.from('11', 'hex')))).toBe('FORMAT_TRUNCATED')
    expect(codeOf(() => readHeader(Buffer.from('1180', 'hex')))).toBe('FORMAT_TRUNCATED')
    expect(codeOf(() => readHeader(header('1101abcd').subarray(0, 31)))).toBe('FORMAT_TRUNCATED')
  })

  it('FORMAT_UNKNOWN_VERSION when the high nibble is not 1', () => {
    for (const b of ['01', '21', 'f1', '00']) {
      expect(codeOf(() => readHeader(header(`${b}01abcd`)))).toBe('FORMAT_UNKNOWN_VERSION')
    }
  })

  it('FORMAT_INVALID: unknown codec tag, key version 0, non-minimal or over-long varint, > 2^32-1', () => {
    for (const h of [
      '1001abcd',
      '1901abcd',
      '1f01abcd',
      '1100abcd',
      '118100abcd',
      '1180808080800100',
      '1180808080100000',
    ]) {
      expect(codeOf(() => readHeader(header(h)))).toBe('FORMAT_INVALID')
    }
  })

  it('carries table and column into the error, and never echoes bytes', () => {
    try {
      readHeader(Buffer.from('9f', 'hex'), { table: 'users', column: 'email' })
      expect.unreachable()
    } catch (error) {
      expect(error).toMatchObject({ code: 'FORMAT_UNKNOWN_VERSION', table: 'users', column: 'email' })
      expect((error as Error).message).toContain('users.email')
      expect((error as Error).message).not.toMatch(/9f|159/i)
    }
  })
})

describe('looksLikeCiphertext', () => {
  it('is true exactly when readHeader accepts', () => {
    expect(looksLikeCiphertext(header('1101abcd'))).toBe(true)
    expect(looksLikeCiphertext(Buffer.from('alice@example.com'))).toBe(false)
    expect(looksLikeCiphertext(new Uint8Array(0))).toBe(false)
    expect(looksLikeCiphertext('1101' as unknown as Uint8Array)).toBe(false)
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (u) => {
        let ok = true
        try {
          readHeader(u)
        } catch {
          ok = false
        }
        expect(looksLikeCiphertext(u)).toBe(ok)
      }),
    )
  })
})

describe('lengths', () => {
  it('overhead is 32 bytes below key version 128, one more per further 7 bits', () => {
    expect(FORMAT_V1_OVERHEAD).toBe(32)
    expect(ciphertextLength(0)).toBe(32)
    expect(ciphertextLength(10, 127)).toBe(42)
    expect(ciphertextLength(10, 128)).toBe(43)
    expect(ciphertextLength(10, 0xffff_ffff)).toBe(46)
    for (const bad of [
      () => ciphertextLength(-1),
      () => ciphertextLength(1.5),
      () => ciphertextLength(1, 0),
    ]) {
      expect(bad).toThrow(ConfigError)
    }
  })

  it('lp() is a 2-byte big-endian length and UTF-8, up to 65535 bytes', () => {
    expect(lengthPrefixed('users', 'table name', {}).toString('hex')).toBe('00057573657273')
    expect(lengthPrefixed('é', 'table name', {}).toString('hex')).toBe('0002c3a9')
    expect(lengthPrefixed('x'.repeat(65535), 'table name', {}).length).toBe(65537)
    expect(() => lengthPrefixed('x'.repeat(65536), 'table name', {})).toThrow(ConfigError)
    expect(() => lengthPrefixed('\uD800', 'table name', {})).toThrow(ConfigError)
  })

  it('context is a 2-byte count then lp(each)', () => {
    expect(encodeContext(undefined, {}).toString('hex')).toBe('0000')
    expect(encodeContext([], {}).toString('hex')).toBe('0000')
    expect(encodeContext(['a', ''], {}).toString('hex')).toBe('0002000161' + '0000')
    expect(() => encodeContext([1 as unknown as string], {})).toThrow(ConfigError)
  })
})
