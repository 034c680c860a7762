import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { ColumnKeys, READER_CACHE_MAX } from '../../../src/fields/column-keys.js'

const salt = (n: number) => Buffer.from([n >> 8, n & 0xff])

describe('ColumnKeys: the reader cache', () => {
  it('holds at most READER_CACHE_MAX subkeys and zeroes the least recently used one it drops', () => {
    const keys = new ColumnKeys(randomBytes(32), 'users', 'email')
    const first = keys.subkeyFor(salt(0))
    const firstBytes = Buffer.from(first)
    const second = keys.subkeyFor(salt(1))
    for (let n = 2; n < READER_CACHE_MAX; n++) keys.subkeyFor(salt(n))
    expect(keys.stats().subkeysDerived).toBe(READER_CACHE_MAX)
    expect(keys.heldKeyBuffers()).toHaveLength(1 + READER_CACHE_MAX) // the column key, the subkeys
    // Full: salt 0 is served from the cache (nothing derived) and becomes the most recently used.
    expect(keys.subkeyFor(salt(0))).toBe(first)
    expect(keys.stats().subkeysDerived).toBe(READER_CACHE_MAX)
    // One more salt: salt 1, now the least recently used, is dropped and zeroed; salt 0 stays.
    keys.subkeyFor(salt(READER_CACHE_MAX))
    expect(keys.heldKeyBuffers()).toHaveLength(1 + READER_CACHE_MAX)
    expect(second.equals(Buffer.alloc(32))).toBe(true)
    expect(first.equals(firstBytes)).toBe(true)
    // Salt 1 again is derived again, to the same subkey as any reader derives.
    const again = keys.subkeyFor(salt(1))
    expect(keys.stats().subkeysDerived).toBe(READER_CACHE_MAX + 2)
    expect(again.equals(Buffer.alloc(32))).toBe(false)
    keys.destroy()
    expect(again.equals(Buffer.alloc(32))).toBe(true)
  })
})
