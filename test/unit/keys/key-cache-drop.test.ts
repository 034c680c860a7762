import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { KeyProviderError } from '../../../src/errors.js'
import { KeyCache } from '../../../src/keys/key-cache.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import type { KeyRef } from '../../../src/keys/key-provider.js'
import { manualClock } from '../../support/manual-clock.js'

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
      if (got.length === 1) {
        cache.deleteTable(ref().logicalTable)
        cache.close()
      }
      return key
    }
    await expect(cache.get(ref(), load)).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' })
    expect(got).toHaveLength(1)
    expect(got[0]!.destroyed).toBe(true)
  })

  it('a load that hands back the object a drop zeroed (a seed of a created key) caches nothing', async () => {
    const cache = new KeyCache()
    const material = new KeyMaterial(ref(), randomBytes(32))
    let calls = 0
    const load = async () => {
      if (++calls === 1) cache.deleteTable(ref().logicalTable)
      return material
    }
    await expect(cache.get(ref(), load)).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' })
    expect(material.destroyed).toBe(true)
    expect(cache.stats().size).toBe(0)
  })

  it('a load that fails slowly in an outage after its name was dropped is not remembered as one: the next get loads', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ now: clock.now })
    let calls = 0
    const load = async (): Promise<KeyMaterial> => {
      if (++calls === 1) {
        cache.deleteTable(ref().logicalTable)
        clock.advance(5_000) // a hung keeper: slow enough to be remembered, were it not dropped
        throw new KeyProviderError('PROVIDER_UNAVAILABLE', 'KMS down (test)', { providerId: 'local:t' })
      }
      return new KeyMaterial(ref(), randomBytes(32))
    }
    await expect(cache.get(ref(), load)).rejects.toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
    const key = await cache.get(ref(), load)
    expect(calls).toBe(2)
    expect(cache.stats().failedFast).toBe(0)
    expect(cache.peek(ref())).toBe(key)
  })

  it('a load run while its own name is dropped during it fails after 8 runs instead of looping', async () => {
    const cache = new KeyCache()
    const got: KeyMaterial[] = []
    const load = async () => {
      cache.deleteTable(ref().logicalTable)
      const key = new KeyMaterial(ref(), randomBytes(32))
      got.push(key)
      return key
    }
    await expect(cache.get(ref(), load)).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' })
    expect(got).toHaveLength(8)
    expect(got.every((k) => k.destroyed)).toBe(true)
    expect(cache.stats().size).toBe(0)
  })
})
