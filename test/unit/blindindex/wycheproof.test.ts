import { createHmac, hkdfSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { truncateToBits } from '../../../src/blindindex/compute-blind-index.js'
import { loadWycheproof, wycheproofAvailable } from '../../support/wycheproof.js'

interface MacGroup {
  readonly keySize: number
  readonly tagSize: number
  readonly tests: ReadonlyArray<{ tcId: number; key: string; msg: string; tag: string; result: string }>
}
interface HkdfGroup {
  readonly tests: ReadonlyArray<{
    tcId: number
    ikm: string
    salt: string
    info: string
    size: number
    okm: string
    result: string
  }>
}

const hex = (s: string) => Buffer.from(s, 'hex')

describe.runIf(wycheproofAvailable)(
  'Wycheproof HMAC-SHA256 (node:crypto, truncated with truncateToBits)',
  () => {
    it('accepts every valid tag and rejects every modified one, at 256 and 128 bits', () => {
      const file = loadWycheproof<{ testGroups: MacGroup[] }>('hmac_sha256_test.json')
      let valid = 0
      let invalid = 0
      for (const group of file.testGroups) {
        for (const t of group.tests) {
          const mac = createHmac('sha256', hex(t.key)).update(hex(t.msg)).digest()
          // Our truncation keeps the leftmost bits, as Wycheproof (RFC 2104 §5) does.
          const tag = truncateToBits(mac, group.tagSize)
          const same = tag.equals(hex(t.tag))
          if (t.result === 'valid') {
            expect(same, `tcId ${t.tcId}`).toBe(true)
            valid++
          } else {
            expect(same, `tcId ${t.tcId}`).toBe(false)
            invalid++
          }
        }
      }
      expect(valid).toBeGreaterThan(0)
      expect(invalid).toBeGreaterThan(0)
    })
  },
)

describe.runIf(wycheproofAvailable)('Wycheproof HKDF-SHA256 (node:crypto hkdfSync)', () => {
  it('derives every valid okm and refuses every invalid size', () => {
    const file = loadWycheproof<{ testGroups: HkdfGroup[] }>('hkdf_sha256_test.json')
    let valid = 0
    let invalid = 0
    for (const group of file.testGroups) {
      for (const t of group.tests) {
        const derive = () => Buffer.from(hkdfSync('sha256', hex(t.ikm), hex(t.salt), hex(t.info), t.size))
        if (t.result === 'valid') {
          expect(derive().toString('hex'), `tcId ${t.tcId}`).toBe(t.okm)
          valid++
        } else {
          expect(derive, `tcId ${t.tcId}`).toThrow()
          invalid++
        }
      }
    }
    expect(valid).toBeGreaterThan(0)
    expect(invalid).toBeGreaterThan(0)
  })
})
