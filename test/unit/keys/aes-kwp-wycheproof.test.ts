import { createCipheriv, createDecipheriv } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { loadWycheproof, wycheproofAvailable } from '../../support/wycheproof.js'

/**
 * RFC 5649 (AES key wrap with padding, NIST SP 800-38F KWP) through node:crypto, checked against
 * the Wycheproof vectors. The PKCS#11 provider's AES_KEY_WRAP_PAD mode is compared with this same
 * node implementation byte for byte (test/integration/pkcs11-provider.test.ts), so these vectors
 * pin down what the HSM computes too.
 */

interface KwpTest {
  readonly tcId: number
  readonly comment: string
  readonly flags: string[]
  readonly key: string
  readonly msg: string
  readonly ct: string
  readonly result: 'valid' | 'invalid' | 'acceptable'
}

interface KwpFile {
  readonly algorithm: string
  readonly testGroups: ReadonlyArray<{ readonly keySize: number; readonly tests: readonly KwpTest[] }>
}

// RFC 5649 §3: the 32-bit alternative initial value; node appends the 32-bit message length itself.
const AIV = Buffer.from('A65959A6', 'hex')

function wrap(keySize: number, key: Buffer, msg: Buffer): Buffer {
  const c = createCipheriv(`id-aes${keySize}-wrap-pad`, key, AIV)
  return Buffer.concat([c.update(msg), c.final()])
}

function unwrap(keySize: number, key: Buffer, ct: Buffer): Buffer {
  const d = createDecipheriv(`id-aes${keySize}-wrap-pad`, key, AIV)
  return Buffer.concat([d.update(ct), d.final()])
}

describe.runIf(wycheproofAvailable)(
  'AES-KWP (RFC 5649) in node:crypto against Wycheproof aes_kwp_test.json',
  () => {
    it('wraps and unwraps every valid vector, and refuses every invalid one', () => {
      const file = loadWycheproof<KwpFile>('aes_kwp_test.json')
      expect(file.algorithm).toBe('AES-KWP')
      const run = { valid: 0, invalid: 0 }
      const sizes = new Set<number>()
      for (const group of file.testGroups) {
        sizes.add(group.keySize)
        for (const t of group.tests) {
          const key = Buffer.from(t.key, 'hex')
          const msg = Buffer.from(t.msg, 'hex')
          const ct = Buffer.from(t.ct, 'hex')
          if (t.result === 'valid') {
            expect(unwrap(group.keySize, key, ct).toString('hex'), `tcId ${t.tcId}`).toBe(t.msg)
            expect(wrap(group.keySize, key, msg).toString('hex'), `tcId ${t.tcId}`).toBe(t.ct)
            run.valid += 1
          } else if (t.result === 'invalid') {
            expect(() => unwrap(group.keySize, key, ct), `tcId ${t.tcId} (${t.comment})`).toThrow()
            run.invalid += 1
          }
        }
      }
      expect([...sizes].sort()).toEqual([128, 192, 256])
      expect(run.valid).toBeGreaterThan(0)
      expect(run.invalid).toBeGreaterThan(0)
    })
  },
)
