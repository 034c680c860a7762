import { describe, expect, it } from 'vitest'
import { type KeyRow, parseKeyRow } from '../../../src/keys/key-row.js'

const row = (state: string, wrappings: string): KeyRow => ({
  logical_table: 'orders#tenant_id=acme',
  purpose: 'data',
  version: 1,
  state,
  wrappings,
  created_at: new Date(0),
  check_value: null,
})
const wrapped = JSON.stringify([{ kekId: 'local:a', wrapped: 'AAAA' }])

describe('key rows of destroyed keys (crypto-shredding tombstones)', () => {
  it('a destroyed key has no wrapping, and only a destroyed key may have none', () => {
    expect(parseKeyRow(row('destroyed', '[]'))).toMatchObject({ state: 'destroyed', wrappings: [] })
    for (const [state, wrappings] of [
      ['destroyed', wrapped],
      ['active', '[]'],
      ['retired', '[]'],
    ] as const) {
      const parsed = parseKeyRow(row(state, wrappings))
      expect('error' in parsed && parsed.error.code).toBe('KEY_STORE_CORRUPT')
    }
  })
})
