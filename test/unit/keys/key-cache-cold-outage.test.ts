import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { KeyError, KeyProviderError } from '../../../src/errors.js'
import { KeyCache } from '../../../src/keys/key-cache.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import type { KeyRef } from '../../../src/keys/key-provider.js'
import { manualClock } from '../../support/manual-clock.js'

/**
 * A key that is not in the cache, during an outage: each query for it used to call the keeper
 * again and wait out its retries and timeouts (seconds each with the AWS SDK's defaults). The
 * cache now remembers an outage whose load took a second or more to fail for `outageRetryMs`,
 * and fails such queries at once with the same kind of error; a load that failed at once is
 * asked again, and a refusal is never remembered (it is an answer, and a fast one).
 */

const ref = (version = 1, logicalTable = 'users'): KeyRef => ({ logicalTable, purpose: 'data', version })

/** A keeper whose answer the test sets: `down` (unavailable, after `hang` ms), `refusing`, or a key. */
function keeper(clock?: { advance: (ms: number) => void }, hang = 1000) {
  let calls = 0
  let state: 'down' | 'refusing' | 'up' = 'down'
  const load = (r: KeyRef) => async () => {
    calls++
    if (state === 'down') clock?.advance(hang)
    if (state === 'down')
      throw new KeyProviderError('PROVIDER_UNAVAILABLE', 'KMS down (test)', { providerId: 'local:t' })
    if (state === 'refusing') throw new KeyProviderError('PROVIDER_KEY_DISABLED', 'disabled (test)')
    return new KeyMaterial(r, randomBytes(32))
  }
  const set = (next: typeof state) => {
    state = next
  }
  return { load, calls: () => calls, set }
}

describe('KeyCache: a key not in the cache during an outage', () => {
  it('a load that took a second to fail: queries within outageRetryMs fail at once (same code and provider, their own error), then it is asked again', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ outageRetryMs: 5000, now: clock.now })
    const k = keeper(clock, 1000)
    const first = await cache.get(ref(), k.load(ref())).catch((e: unknown) => e)
    expect(first).toMatchObject({ code: 'PROVIDER_UNAVAILABLE', providerId: 'local:t' })
    expect(k.calls()).toBe(1)

    clock.advance(4999)
    const again = await cache.get(ref(), k.load(ref())).catch((e: unknown) => e)
    expect(again).toBeInstanceOf(KeyProviderError)
    expect(again).toMatchObject({ code: 'PROVIDER_UNAVAILABLE', providerId: 'local:t', cause: first })
    expect(again).not.toBe(first)
    expect((again as Error).message).toMatch(/remembered/)
    expect(k.calls()).toBe(1) // not asked again
    expect(cache.stats()).toMatchObject({ failedFast: 1, misses: 1, loads: 1 })

    clock.advance(1) // outageRetryMs since the failure: asked again, and it answers
    k.set('up')
    const key = await cache.get(ref(), k.load(ref()))
    expect(key.destroyed).toBe(false)
    expect(k.calls()).toBe(2)
    expect(await cache.get(ref(), k.load(ref()))).toBe(key)
  })

  it('a load that failed at once is asked again by the next query; so is another key version', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ now: clock.now })
    const quick = keeper(clock, 999)
    await expect(cache.get(ref(), quick.load(ref()))).rejects.toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
    await expect(cache.get(ref(), quick.load(ref()))).rejects.toThrow(/^KMS down \(test\)$/)
    expect(quick.calls()).toBe(2)
    const slow = keeper(clock, 1000)
    await expect(cache.get(ref(2), slow.load(ref(2)))).rejects.toThrow(/^KMS down \(test\)$/)
    await expect(cache.get(ref(2), slow.load(ref(2)))).rejects.toThrow(/remembered/)
    await expect(cache.get(ref(3), slow.load(ref(3)))).rejects.toThrow(/^KMS down \(test\)$/)
    expect(slow.calls()).toBe(2)
  })

  it('KEY_STORE_ERROR and PROVIDER_THROTTLED are remembered alike; refusals never are', async () => {
    for (const error of [
      new KeyError('KEY_STORE_ERROR', 'key store down (test)'),
      new KeyProviderError('PROVIDER_THROTTLED', 'throttled (test)'),
    ]) {
      const clock = manualClock()
      const cache = new KeyCache({ now: clock.now })
      let calls = 0
      const failing = async (): Promise<KeyMaterial> => {
        calls++
        clock.advance(2000)
        throw error
      }
      await expect(cache.get(ref(), failing)).rejects.toBe(error)
      const again = await cache.get(ref(), failing).catch((e: unknown) => e)
      expect(again).toBeInstanceOf(error.constructor)
      expect(again).toMatchObject({ code: error.code })
      expect(calls).toBe(1)
    }
    const clock = manualClock()
    const cache = new KeyCache({ now: clock.now })
    const k = keeper(clock, 2000)
    k.set('refusing')
    await expect(cache.get(ref(), k.load(ref()))).rejects.toMatchObject({ code: 'PROVIDER_KEY_DISABLED' })
    await expect(cache.get(ref(), k.load(ref()))).rejects.toMatchObject({ code: 'PROVIDER_KEY_DISABLED' })
    expect(k.calls()).toBe(2)
  })

  it('outageRetryMs: 0 asks every time; delete, deleteTable and clear forget the outage', async () => {
    const clock = manualClock()
    const off = new KeyCache({ outageRetryMs: 0, now: clock.now })
    const k = keeper(clock)
    await expect(off.get(ref(), k.load(ref()))).rejects.toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
    await expect(off.get(ref(), k.load(ref()))).rejects.toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
    expect(k.calls()).toBe(2)

    const cache = new KeyCache({ now: clock.now })
    const forget: Array<(c: KeyCache) => void> = [
      (c) => c.delete(ref()),
      (c) => c.deleteTable('users'),
      (c) => c.clear(),
    ]
    for (const drop of forget) {
      const j = keeper(clock)
      await expect(cache.get(ref(), j.load(ref()))).rejects.toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
      drop(cache)
      await expect(cache.get(ref(), j.load(ref()))).rejects.toThrow(/^KMS down \(test\)$/)
      expect(j.calls()).toBe(2)
      cache.clear()
    }
    // deleteTable of another key name keeps this one's outage.
    const j = keeper(clock)
    await expect(cache.get(ref(1, 'users:a'), j.load(ref(1, 'users:a')))).rejects.toThrow()
    cache.deleteTable('users')
    await expect(cache.get(ref(1, 'users:a'), j.load(ref(1, 'users:a')))).rejects.toThrow(/remembered/)
    expect(j.calls()).toBe(1)
  })

  it('concurrent queries share the first load; those after it fail fast', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ now: clock.now })
    const k = keeper(clock)
    const results = await Promise.allSettled([1, 2, 3].map(() => cache.get(ref(), k.load(ref()))))
    expect(results.every((r) => r.status === 'rejected')).toBe(true)
    expect(k.calls()).toBe(1)
    await expect(cache.get(ref(), k.load(ref()))).rejects.toThrow(/remembered/)
    expect(k.calls()).toBe(1)
  })
})
