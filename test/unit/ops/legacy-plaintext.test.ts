import { describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema } from '../../../src/index.js'
import { legacyPlan } from '../../../src/ops/legacy-plaintext.js'

/** Which in-place plaintext `kfe reencrypt` encrypts, and why it leaves the rest. */
describe('legacyPlan', () => {
  const schema = encryptedSchema({
    t: {
      note: encrypted.text({ migratingFromPlaintext: true }),
      short: encrypted.text({ migratingFromPlaintext: true, maxBytes: 4 }),
      doc: encrypted.json({ migratingFromPlaintext: true }),
      blob: encrypted.bytes({ migratingFromPlaintext: true }),
    },
  })
  const column = (name: string) => schema.table('t')!.column(name)!
  const bytes = (s: string) => Buffer.from(s)

  it('text: UTF-8 as it is, a leading U+FEFF kept; tabs and newlines first are text', () => {
    expect(legacyPlan(column('note'), bytes('\uFEFFhé'), 'postgres')).toEqual({ value: '\uFEFFhé' })
    expect(legacyPlan(column('note'), bytes('\tx\n'), 'postgres')).toEqual({ value: '\tx\n' })
  })

  it('not text: invalid UTF-8, or a control character first (a v1 header starts 0x11..0x18)', () => {
    expect(legacyPlan(column('note'), Buffer.from([0x61, 0xc3]), 'postgres')).toEqual({
      problem: 'LEGACY_NOT_TEXT',
    })
    expect(legacyPlan(column('note'), Buffer.from([0x11, 0x01, 0x41]), 'postgres')).toEqual({
      problem: 'LEGACY_NOT_TEXT',
    })
  })

  it('too long: over maxBytes anywhere; without maxBytes on MySQL/MariaDB (the width is not known)', () => {
    expect(legacyPlan(column('short'), bytes('abcd'), 'mysql')).toEqual({ value: 'abcd' })
    expect(legacyPlan(column('short'), bytes('abcde'), 'postgres')).toEqual({ problem: 'LEGACY_TOO_LONG' })
    expect(legacyPlan(column('note'), bytes('abc'), 'mysql')).toEqual({ problem: 'LEGACY_TOO_LONG' })
  })

  it('other codecs are not guessed at: their stored bytes could be a damaged or future ciphertext', () => {
    expect(legacyPlan(column('doc'), bytes('{"a":1}'), 'postgres')).toEqual({ problem: 'LEGACY_UNSUPPORTED' })
    expect(legacyPlan(column('blob'), Buffer.from([0x21, 0x01]), 'postgres')).toEqual({
      problem: 'LEGACY_UNSUPPORTED',
    })
    expect(legacyPlan(column('note'), 'a string', 'postgres')).toEqual({ problem: 'LEGACY_UNSUPPORTED' })
  })
})
