import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { KeyCache } from '../../../src/keys/key-cache.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import type { KeyRef } from '../../../src/keys/key-provider.js'

const ref = (logicalTable = 'orders#tenant_id=acme', version = 1): KeyRef => ({
  logicalTable,
  purpose: 'data',
  version,
})

/**
 * A key name dropped (deleteTable: the key ring forgot it, after a shred) while a load of it is
 * under way: what that load got before the drop must not be cached, however late in the load the
 * drop lands, even after the loader's own checks have passed.
 */
describe('KeyCache: deleteTable during a load of the name', () => {
  it('a drop that lands as the loader returns: that key is zeroed, the load runs again, and its result is cached', async () => {
    const cache = new KeyCache()
    const got: KeyMaterial[] = []
    const load = async () => {
      const key = new KeyMaterial(ref(), randomBytes(32))
      got.push(key)
      // The drop comes after whatever the loader checked, in the same turn as its return.
      if (got.length === 1) cache.deleteTable(ref().logicalTable)
      return key
    }
    const key = await cache.get(ref(), load)
    expect(got).toHaveLength(2)
    expect(got[0]!.destroyed).toBe(true)
    expect(key).toBe(got[1])
    expect(key.destroyed).toBe(false)
    expect(cache.peek(ref())).toBe(key)
    expect(cache.stats()).toMatchObject({ loads: 2, size: 1 })
  })

  it('concurrent callers of the dropped load all get the run after the drop; the rejection of that run reaches them all', async () => {
    const cache = new KeyCache()
    let calls = 0
    const load = async () => {
      calls++
      if (calls === 1) {
        cache.deleteTable(ref().logicalTable)
        return new KeyMaterial(ref(), randomBytes(32))
      }
      throw new Error('shredded (test)')
    }
    const results = await Promise.allSettled([cache.get(ref(), load), cache.get(ref(), load)])
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected'])
    expect(calls).toBe(2)
    expect(cache.stats().size).toBe(0)
  })

  it('a drop of another name, or delete of one ref, leaves the load alone (cached once)', async () => {
    const cache = new KeyCache()
    let calls = 0
    const load = async () => {
      calls++
      cache.deleteTable('orders#tenant_id=other')
      cache.delete(ref())
      return new KeyMaterial(ref(), randomBytes(32))
    }
    const key = await cache.get(ref(), load)
    expect(calls).toBe(1)
    expect(cache.peek(ref())).toBe(key)
  })

  it('a drop before the load started is no reason to run it again', async () => {
    const cache = new KeyCache()
    cache.deleteTable(ref().logicalTable)
    let calls = 0
    const key = await cache.get(ref(), async () => {
      calls++
      return new KeyMaterial(ref(), randomBytes(32))
    })
    expect(calls).toBe(1)
    expect(cache.peek(ref())).toBe(key)
  })

  it('a cache closed during a dropped load refuses, and zeroes what the load got', async () => {
    const cache = new KeyCache()
    const got: KeyMaterial[] = []
    const load = async () => {
      const key = new KeyMaterial(ref(), randomBytes(32))
      got.push(key)
      cache.deleteTable(ref().logicalTable)
      cache.close()
      return key
    }
    await expect(cache.get(ref(), load)).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' })
    expect(got).toHaveLength(1)
    expect(got[0]!.destroyed).toBe(true)
  })
})
