import { type CipherGCMTypes, createCipheriv, createDecipheriv, hkdfSync } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { hkdfSha256 } from '../../../src/fields/hkdf.js'
import { loadWycheproof, wycheproofAvailable } from '../../support/wycheproof.js'

interface AeadTest {
  readonly tcId: number
  readonly key: string
  readonly iv: string
  readonly aad: string
  readonly msg: string
  readonly ct: string
  readonly tag: string
  readonly result: 'valid' | 'invalid' | 'acceptable'
}
interface AeadGroup {
  readonly ivSize: number
  readonly keySize: number
  readonly tagSize: number
  readonly tests: readonly AeadTest[]
}
interface HkdfTest {
  readonly tcId: number
  readonly ikm: string
  readonly salt: string
  readonly info: string
  readonly size: number
  readonly okm: string
  readonly result: 'valid' | 'invalid' | 'acceptable'
}

const h = (s: string) => Buffer.from(s, 'hex')

// The same primitive src/fields/field-cipher.ts calls: node:crypto's aes-*-gcm, 96-bit IVs, 128-bit tags.
describe.runIf(wycheproofAvailable)('Wycheproof aes_gcm_test.json through node:crypto', () => {
  it('every 96-bit-IV vector for 128/192/256-bit keys', () => {
    const groups = loadWycheproof<{ testGroups: readonly AeadGroup[] }>('aes_gcm_test.json').testGroups
    let valid = 0
    let invalid = 0
    for (const group of groups) {
      if (group.ivSize !== 96 || ![128, 192, 256].includes(group.keySize)) continue
      expect(group.tagSize).toBe(128)
      const algorithm = `aes-${group.keySize}-gcm` as CipherGCMTypes
      for (const t of group.tests) {
        const open = () => {
          const d = createDecipheriv(algorithm, h(t.key), h(t.iv), { authTagLength: 16 })
          d.setAAD(h(t.aad))
          d.setAuthTag(h(t.tag))
          return Buffer.concat([d.update(h(t.ct)), d.final()])
        }
        if (t.result === 'invalid') {
          expect(open, `tcId ${t.tcId}`).toThrow()
          invalid++
          continue
        }
        expect(open().toString('hex'), `tcId ${t.tcId}`).toBe(t.msg)
        const c = createCipheriv(algorithm, h(t.key), h(t.iv), { authTagLength: 16 })
        c.setAAD(h(t.aad))
        const ct = Buffer.concat([c.update(h(t.msg)), c.final()])
        expect(ct.toString('hex') + c.getAuthTag().toString('hex'), `tcId ${t.tcId}`).toBe(t.ct + t.tag)
        valid++
      }
    }
    // Counted, so a filter that silently matches nothing fails here.
    expect(valid).toBeGreaterThan(100)
    expect(invalid).toBeGreaterThan(50)
    expect(valid + invalid).toBe(197)
  })
})

describe.runIf(wycheproofAvailable)('Wycheproof hkdf_sha256_test.json through hkdfSha256', () => {
  it('every valid vector with an output of at most 32 bytes', () => {
    const groups = loadWycheproof<{ testGroups: ReadonlyArray<{ tests: readonly HkdfTest[] }> }>(
      'hkdf_sha256_test.json',
    ).testGroups
    let run = 0
    for (const group of groups) {
      for (const t of group.tests) {
        if (t.result !== 'valid' || t.size > 32) continue
        expect(hkdfSha256(h(t.ikm), h(t.salt), h(t.info), t.size).toString('hex'), `tcId ${t.tcId}`).toBe(
          t.okm,
        )
        run++
      }
    }
    expect(run).toBe(30)
  })
})

describe('hkdfSha256', () => {
  it('equals node:crypto hkdfSync wherever hkdfSync accepts the input', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        fc.uint8Array({ maxLength: 64 }),
        fc.uint8Array({ maxLength: 1024 }),
        fc.integer({ min: 1, max: 32 }),
        (ikm, salt, info, length) => {
          const ours = hkdfSha256(Buffer.from(ikm), salt, info, length)
          const node = Buffer.from(hkdfSync('sha256', ikm, salt, info, length))
          expect(ours.equals(node)).toBe(true)
        },
      ),
    )
  })

  it('accepts info longer than the 1024 bytes hkdfSync allows, and rejects lengths outside 1..32', () => {
    expect(hkdfSha256(Buffer.alloc(32), Buffer.alloc(0), Buffer.alloc(70_000), 32).length).toBe(32)
    expect(() => hkdfSha256(Buffer.alloc(32), Buffer.alloc(0), Buffer.alloc(0), 33)).toThrow(RangeError)
    expect(() => hkdfSha256(Buffer.alloc(32), Buffer.alloc(0), Buffer.alloc(0), 0)).toThrow(RangeError)
  })
})
