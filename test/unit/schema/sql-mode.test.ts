import { describe, expect, it } from 'vitest'
import { zeroGeneratesId } from '../../../src/schema/sql-mode.js'

describe('zeroGeneratesId', () => {
  it('MySQL generates an AUTO_INCREMENT value for 0 unless the sql_mode holds NO_AUTO_VALUE_ON_ZERO', () => {
    expect(zeroGeneratesId('STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION')).toBe(true)
    expect(zeroGeneratesId('')).toBe(true)
    expect(zeroGeneratesId('STRICT_TRANS_TABLES,NO_AUTO_VALUE_ON_ZERO')).toBe(false)
    expect(zeroGeneratesId('no_auto_value_on_zero')).toBe(false)
  })

  it('PostgreSQL (no sql_mode) stores the 0 written', () => {
    expect(zeroGeneratesId(undefined)).toBe(false)
  })
})
