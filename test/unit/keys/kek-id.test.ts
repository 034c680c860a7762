import { describe, expect, it } from 'vitest'
import { encrypted, encryptedSchema, fieldEncryption } from '../../../src/index.js'
import type { KeyProvider } from '../../../src/keys/key-provider.js'
import { encodeWrappings, type KeyRow, parseKeyRow } from '../../../src/keys/key-row.js'
import { checkProviders } from '../../../src/keys/provider-call.js'
import { rewrapAll } from '../../../src/keys/rewrap.js'

const row = (wrappings: string): KeyRow => ({
  logical_table: 'orders',
  purpose: 'data',
  version: 1,
  state: 'active',
  wrappings,
  created_at: new Date(0),
  check_value: null,
})

describe('KEK ids, named in errors', () => {
  it('a key row whose kekId could write lines into a log is corrupt, and the id is not echoed', () => {
    for (const kekId of ['local:a\nERROR forged log line', 'x\u2028y', '', 'k'.repeat(2049), 7]) {
      const parsed = parseKeyRow(row(JSON.stringify([{ kekId, wrapped: 'AAAA' }])))
      if (!('error' in parsed)) throw new Error('the row was not refused')
      expect(parsed.error.code).toBe('KEY_STORE_CORRUPT')
      const cause = parsed.error.cause as Error
      expect(`${parsed.error.message} ${cause.message}`).not.toContain('forged')
      expect(cause.message).toContain('a kekId is not text of 1 to 2048 characters')
    }
    expect(
      parseKeyRow(row(JSON.stringify([{ kekId: 'k'.repeat(2048), wrapped: 'AAAA' }]))),
    ).not.toHaveProperty('error')
  })

  it('a key provider whose id is no KEK id is refused when configured, without echoing it', () => {
    const provider = (id: string) => ({ id }) as unknown as KeyProvider
    expect(() => checkProviders([provider('local:a'), provider('kms\r\nforged')], 'KeyRing')).toThrow(
      /^KeyRing: the id of key provider 2 of 2 is not text of 1 to 2048 characters without control characters or line separators\.$/,
    )
    expect(() =>
      checkProviders([provider('arn:aws:kms:eu-west-1:111122223333:key/ü-1')], 'KeyRing'),
    ).not.toThrow()
  })

  it('the library writes no wrapping under such an id: rewrapAll checks its target, and so does every stored row', async () => {
    const provider = (id: string) =>
      ({ id, generateDataKey() {}, unwrap() {}, rewrap() {} }) as unknown as KeyProvider
    await expect(
      rewrapAll({ store: {} as never, from: [provider('local:a')], to: provider('kms:new\nERROR forged') }),
    ).rejects.toThrow(/^rewrapAll: the id of its 'to' key provider is not text of 1 to 2048 characters/)
    expect(() => encodeWrappings([{ kekId: 'kms:a\rforged', wrapped: new Uint8Array(1) }])).toThrow(
      /^A wrapping's KEK id is not text of 1 to 2048 characters/,
    )
    const schema = encryptedSchema({ users: { email: encrypted.text() } })
    expect(() => fieldEncryption({ schema, keyProvider: provider('kms:a\u2029forged') })).toThrow(
      /^fieldEncryption: option keyProvider.id must be text of 1 to 2048 characters/,
    )
  })

  it("a key row's logical table with a line break is corrupt, and named only quoted", () => {
    const parsed = parseKeyRow({
      ...row(JSON.stringify([{ kekId: 'local:a', wrapped: 'AAAA' }])),
      logical_table: 'zz\n2025-01-01 ERROR forged line',
    })
    if (!('error' in parsed)) throw new Error('the row was not refused')
    expect(parsed.error.code).toBe('KEY_STORE_CORRUPT')
    expect(parsed.error.message).not.toContain('\n')
    expect(parsed.error.message).toContain(
      'Corrupt key-store row "zz\\n2025-01-01 ERROR forged line"/data/v1',
    )
    expect(parsed.logicalTable).toBe('"zz\\n2025-01-01 ERROR forged line"')
  })
})
