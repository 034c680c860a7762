import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { describe, expect, it } from 'vitest'
import { ConfigError, KeyError, KeyProviderError } from '../../../src/errors.js'
import { KeyCache } from '../../../src/keys/key-cache.js'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import type { KeyRef } from '../../../src/keys/key-provider.js'
import { manualClock } from '../../support/manual-clock.js'

const ref = (version = 1, logicalTable = 'users'): KeyRef => ({ logicalTable, purpose: 'data', version })

function loaderOf(bytes: Buffer, r: KeyRef = ref()) {
  let calls = 0
  const load = async () => {
    calls++
    return new KeyMaterial(r, Buffer.from(bytes))
  }
  return { load, calls: () => calls }
}

const unavailable = () =>
  new KeyProviderError('PROVIDER_UNAVAILABLE', 'KMS down (test)', { providerId: 'local:t' })

describe('KeyCache TTL and grace', () => {
  it('fresh → hit; past ttl → reload; failing reload within grace → stale; past ttl+grace → error', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ ttlMs: 1000, graceMs: 5000, now: clock.now })
    const bytes = randomBytes(32)
    const { load, calls } = loaderOf(bytes)

    const first = await cache.get(ref(), load)
    expect(calls()).toBe(1)
    clock.advance(999)
    expect(await cache.get(ref(), load)).toBe(first) // fresh → hit
    expect(calls()).toBe(1)

    clock.advance(1) // exactly ttl → reload
    expect(await cache.get(ref(), load)).toBe(first) // same bytes: the held object is kept
    expect(calls()).toBe(2)
    expect(first.destroyed).toBe(false)

    clock.advance(1500) // past ttl since the reload; the provider now fails
    const failing = async (): Promise<KeyMaterial> => {
      throw unavailable()
    }
    expect(await cache.get(ref(), failing)).toBe(first) // stale served
    expect(cache.stats().staleServed).toBe(1)

    clock.advance(4499) // 5999 ms since the last good load: still within ttl + grace
    expect(await cache.get(ref(), failing)).toBe(first)
    expect(cache.stats().staleServed).toBe(2)

    clock.advance(1) // 6000 ms = ttl + grace: the stale key is gone and zeroed
    await expect(cache.get(ref(), failing)).rejects.toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
    expect(first.destroyed).toBe(true)
    expect(cache.stats().size).toBe(0)
  })

  it('graceMs: 0 disables the grace period', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ ttlMs: 1000, graceMs: 0, now: clock.now })
    const { load } = loaderOf(randomBytes(32))
    await cache.get(ref(), load)
    clock.advance(1000)
    await expect(
      cache.get(ref(), async () => {
        throw unavailable()
      }),
    ).rejects.toBeInstanceOf(KeyProviderError)
  })

  it('propagates the loader error unchanged when nothing is cached', async () => {
    const cache = new KeyCache()
    const error = unavailable()
    await expect(
      cache.get(ref(), async () => {
        throw error
      }),
    ).rejects.toBe(error)
  })

  it('a reload that returns different bytes replaces (and zeroes) the old key', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ ttlMs: 1000, now: clock.now })
    const old = await cache.get(ref(), loaderOf(randomBytes(32)).load)
    const held = old.bytes
    clock.advance(1000)
    const next = await cache.get(ref(), loaderOf(randomBytes(32)).load)
    expect(next).not.toBe(old)
    expect(old.destroyed).toBe(true)
    expect(held.every((b) => b === 0)).toBe(true)
  })

  it('peek returns only fresh keys and does not load', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ ttlMs: 1000, now: clock.now })
    expect(cache.peek(ref())).toBeUndefined()
    const key = await cache.get(ref(), loaderOf(randomBytes(32)).load)
    expect(cache.peek(ref())).toBe(key)
    clock.advance(1000)
    expect(cache.peek(ref())).toBeUndefined()
  })
})

describe('KeyCache: grace covers outages, never revocation', () => {
  /** Loads one good key, then moves the clock past ttl (within grace). */
  async function expiredWithinGrace() {
    const clock = manualClock()
    const cache = new KeyCache({ ttlMs: 1000, graceMs: 60_000, now: clock.now })
    const key = await cache.get(ref(), loaderOf(randomBytes(32)).load)
    const held = key.bytes
    clock.advance(1500)
    return { cache, key, held, clock }
  }
  const failingWith = (error: unknown) => async (): Promise<KeyMaterial> => {
    throw error
  }

  it.each([
    ['PROVIDER_UNAVAILABLE', new KeyProviderError('PROVIDER_UNAVAILABLE', 'down (test)')],
    ['PROVIDER_THROTTLED', new KeyProviderError('PROVIDER_THROTTLED', 'throttled (test)')],
    ['KEY_STORE_ERROR', new KeyError('KEY_STORE_ERROR', 'key store down (test)')],
  ])('an availability error (%s) within grace serves the stale key', async (_, error) => {
    const { cache, key } = await expiredWithinGrace()
    expect(await cache.get(ref(), failingWith(error))).toBe(key)
    expect(key.destroyed).toBe(false)
    expect(cache.stats()).toMatchObject({ staleServed: 1, size: 1 })
  })

  it.each([
    'PROVIDER_KEY_DISABLED',
    'PROVIDER_ACCESS_DENIED',
    'PROVIDER_INVALID_CIPHERTEXT',
    'UNWRAP_FAILED',
    'PROVIDER_ERROR',
    'CONFIG_INVALID',
  ] as const)('a refusal (%s) past ttl drops and zeroes the key at once, within grace', async (code) => {
    const { cache, key, held } = await expiredWithinGrace()
    const error = new KeyProviderError(code, 'refused (test)')
    await expect(cache.get(ref(), failingWith(error))).rejects.toBe(error)
    expect(key.destroyed).toBe(true)
    expect(held.every((b) => b === 0)).toBe(true)
    expect(cache.stats()).toMatchObject({ staleServed: 0, size: 0 })
  })

  it('KEY_NOT_FOUND (the stored key was deleted) and untyped errors are refusals too', async () => {
    for (const error of [new KeyError('KEY_NOT_FOUND', 'gone (test)'), new TypeError('bug (test)')]) {
      const { cache, key } = await expiredWithinGrace()
      await expect(cache.get(ref(), failingWith(error))).rejects.toBe(error)
      expect(key.destroyed).toBe(true)
    }
  })

  it('after a refusal nothing stale remains: an outage right after it fails instead of serving', async () => {
    const { cache } = await expiredWithinGrace()
    await expect(
      cache.get(ref(), failingWith(new KeyProviderError('PROVIDER_KEY_DISABLED', 'disabled (test)'))),
    ).rejects.toMatchObject({ code: 'PROVIDER_KEY_DISABLED' })
    await expect(cache.get(ref(), failingWith(unavailable()))).rejects.toMatchObject({
      code: 'PROVIDER_UNAVAILABLE',
    })
    expect(cache.stats().staleServed).toBe(0)
  })

  it('an outage then a refusal: stale serves during the outage, the refusal ends it before ttl + grace', async () => {
    const { cache, key, clock } = await expiredWithinGrace()
    expect(await cache.get(ref(), failingWith(unavailable()))).toBe(key)
    clock.advance(10_000)
    expect(await cache.get(ref(), failingWith(unavailable()))).toBe(key)
    await new Promise((resolve) => setTimeout(resolve, 0)) // that reload (in the background) fails
    clock.advance(5000) // outageRetryMs (default 5 s): the keeper is asked again, in the background
    let answer: (error: unknown) => void = () => undefined
    const refusal = new Promise<KeyMaterial>((_, reject) => {
      answer = reject
    })
    // The caller does not wait for the keeper (a hung KMS would hold every query for its timeouts).
    expect(await cache.get(ref(), () => refusal)).toBe(key)
    answer(new KeyProviderError('PROVIDER_ACCESS_DENIED', 'denied (test)'))
    await new Promise((resolve) => setTimeout(resolve, 0))
    // The refusal, when it comes, drops the key: the next caller asks again and is refused.
    expect(key.destroyed).toBe(true)
    await expect(
      cache.get(ref(), failingWith(new KeyProviderError('PROVIDER_ACCESS_DENIED', 'denied (test)'))),
    ).rejects.toMatchObject({ code: 'PROVIDER_ACCESS_DENIED' })
  })

  it('during an outage, a caller past outageRetryMs gets the stale key at once while one reload runs', async () => {
    const { cache, key, clock } = await expiredWithinGrace()
    expect(await cache.get(ref(), failingWith(unavailable()))).toBe(key)
    clock.advance(5000)
    let calls = 0
    const hung = () => {
      calls++
      return new Promise<KeyMaterial>(() => undefined)
    }
    for (let i = 0; i < 5; i++) expect(await cache.get(ref(), hung)).toBe(key)
    expect(calls).toBe(1)
  })

  it('revocation latency is ttl: a fresh key is not reloaded, so a refusal is seen only at ttl', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ ttlMs: 1000, graceMs: 60_000, now: clock.now })
    const key = await cache.get(ref(), loaderOf(randomBytes(32)).load)
    let refusals = 0
    const refusing = async (): Promise<KeyMaterial> => {
      refusals++
      throw new KeyProviderError('PROVIDER_KEY_DISABLED', 'disabled (test)')
    }
    clock.advance(999)
    expect(await cache.get(ref(), refusing)).toBe(key) // still fresh: the keeper is not asked
    expect(refusals).toBe(0)
    clock.advance(1)
    await expect(cache.get(ref(), refusing)).rejects.toMatchObject({ code: 'PROVIDER_KEY_DISABLED' })
    expect(refusals).toBe(1)
    expect(key.destroyed).toBe(true)
  })

  it('concurrent callers of a refused reload all get the error, and the key is zeroed once', async () => {
    const { cache, key } = await expiredWithinGrace()
    let calls = 0
    const refusing = async (): Promise<KeyMaterial> => {
      calls++
      throw new KeyProviderError('PROVIDER_KEY_DISABLED', 'disabled (test)')
    }
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => cache.get(ref(), refusing)))
    expect(results.every((r) => r.status === 'rejected')).toBe(true)
    expect(calls).toBe(1)
    expect(key.destroyed).toBe(true)
  })
})

describe('KeyCache single-flight', () => {
  it('100 concurrent misses → 1 load, same object', async () => {
    const cache = new KeyCache()
    let calls = 0
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    const load = async () => {
      calls++
      await gate
      return new KeyMaterial(ref(), randomBytes(32))
    }
    const all = Array.from({ length: 100 }, () => cache.get(ref(), load))
    release()
    const keys = await Promise.all(all)
    expect(calls).toBe(1)
    expect(new Set(keys).size).toBe(1)
    expect(cache.stats()).toMatchObject({ misses: 100, loads: 1, hits: 0, size: 1 })
  })

  it('concurrent misses share one rejection, and the next call retries', async () => {
    const cache = new KeyCache()
    let calls = 0
    const failing = async (): Promise<KeyMaterial> => {
      calls++
      throw unavailable()
    }
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => cache.get(ref(), failing)))
    expect(results.every((r) => r.status === 'rejected')).toBe(true)
    expect(calls).toBe(1)
    await cache.get(ref(), loaderOf(randomBytes(32)).load)
    expect(cache.stats().loads).toBe(2)
  })

  it('different refs load separately', async () => {
    const cache = new KeyCache()
    const a = await cache.get(ref(1), loaderOf(randomBytes(32), ref(1)).load)
    const b = await cache.get(ref(2), loaderOf(randomBytes(32), ref(2)).load)
    const c = await cache.get(ref(1, 'orders'), loaderOf(randomBytes(32), ref(1, 'orders')).load)
    expect(new Set([a, b, c]).size).toBe(3)
    expect(cache.stats().loads).toBe(3)
  })
})

describe('KeyCache zeroization', () => {
  function derivedSpy() {
    let destroyed = false
    return {
      destroy: (): void => {
        destroyed = true
      },
      destroyed: () => destroyed,
    }
  }

  it('evicting past max zeroes the key bytes and destroys derived objects', async () => {
    const cache = new KeyCache({ max: 2 })
    const first = await cache.get(ref(1), loaderOf(randomBytes(32), ref(1)).load)
    const held = first.bytes
    const spy = derivedSpy()
    first.derived('hkdf:users.email', () => spy)
    await cache.get(ref(2), loaderOf(randomBytes(32), ref(2)).load)
    await cache.get(ref(3), loaderOf(randomBytes(32), ref(3)).load) // evicts v1 (least recently used)
    expect(cache.stats().size).toBe(2)
    expect(first.destroyed).toBe(true)
    expect(held.every((b) => b === 0)).toBe(true)
    expect(spy.destroyed()).toBe(true)
    expect(() => first.bytes).toThrow(expect.objectContaining({ code: 'KEY_NOT_FOUND' }))
  })

  it('delete and clear zero the keys', async () => {
    const cache = new KeyCache()
    const a = await cache.get(ref(1), loaderOf(randomBytes(32), ref(1)).load)
    const b = await cache.get(ref(2), loaderOf(randomBytes(32), ref(2)).load)
    const heldA = a.bytes
    const heldB = b.bytes
    cache.delete(ref(1))
    expect(heldA.every((x) => x === 0)).toBe(true)
    expect(heldB.some((x) => x !== 0)).toBe(true)
    cache.clear()
    expect(heldB.every((x) => x === 0)).toBe(true)
    expect(cache.stats().size).toBe(0)
  })

  it('close() zeroes keys, refuses further gets and wipes keys that in-flight loads deliver later', async () => {
    const cache = new KeyCache()
    const a = await cache.get(ref(1), loaderOf(randomBytes(32), ref(1)).load)
    let release: () => void = () => {}
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    const late = new KeyMaterial(ref(2), randomBytes(32))
    const pending = cache.get(ref(2), async () => {
      await gate
      return late
    })
    cache.close()
    expect(a.destroyed).toBe(true)
    release()
    await expect(pending).rejects.toMatchObject({ code: 'KEY_NOT_FOUND' })
    expect(late.destroyed).toBe(true)
    await expect(cache.get(ref(1), loaderOf(randomBytes(32)).load)).rejects.toMatchObject({
      code: 'KEY_NOT_FOUND',
    })
  })
})

describe('KeyCache bounds, stats and redaction', () => {
  it('counts hits, misses, loads and size', async () => {
    const cache = new KeyCache()
    const { load } = loaderOf(randomBytes(32))
    await cache.get(ref(), load)
    await cache.get(ref(), load)
    await cache.get(ref(), load)
    expect(cache.stats()).toEqual({ hits: 2, misses: 1, loads: 1, staleServed: 0, failedFast: 0, size: 1 })
  })

  it('stays bounded by max', async () => {
    const cache = new KeyCache({ max: 10 })
    for (let v = 1; v <= 50; v++) await cache.get(ref(v), loaderOf(randomBytes(32), ref(v)).load)
    expect(cache.stats().size).toBe(10)
  })

  it('refuses an unbounded or invalid configuration', () => {
    for (const options of [
      { max: 0 },
      { max: Number.POSITIVE_INFINITY },
      { max: 1.5 },
      { ttlMs: 0 },
      { graceMs: -1 },
    ]) {
      expect(() => new KeyCache(options)).toThrow(ConfigError)
    }
  })

  it('redacts itself: counts only, never key bytes', async () => {
    const cache = new KeyCache()
    const key = await cache.get(ref(), loaderOf(randomBytes(32)).load)
    const hex = key.bytes.toString('hex')
    for (const shown of [JSON.stringify(cache), inspect(cache), String(cache)]) {
      expect(shown).not.toContain(hex)
      expect(shown).toContain('size')
    }
  })
})

describe('KeyCache: provider calls during an outage', () => {
  it('asks a failing keeper again at most once per outageRetryMs, serving the stale key meanwhile', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ ttlMs: 1000, graceMs: 60_000, outageRetryMs: 5000, now: clock.now })
    const first = await cache.get(ref(), loaderOf(randomBytes(32)).load)
    clock.advance(1000) // expired: the next get reloads
    let attempts = 0
    const failing = async (): Promise<KeyMaterial> => {
      attempts++
      throw unavailable()
    }
    for (let i = 0; i < 50; i++) expect(await cache.get(ref(), failing)).toBe(first)
    expect(attempts).toBe(1) // 50 queries, one call to the keeper
    clock.advance(4999)
    await cache.get(ref(), failing)
    expect(attempts).toBe(1)
    clock.advance(1) // the retry interval has passed
    await cache.get(ref(), failing)
    expect(attempts).toBe(2)
    expect(cache.stats().staleServed).toBe(52)
  })

  it('a successful reload ends the outage mode', async () => {
    const clock = manualClock()
    const cache = new KeyCache({ ttlMs: 1000, graceMs: 60_000, outageRetryMs: 5000, now: clock.now })
    const bytes = randomBytes(32)
    const first = await cache.get(ref(), loaderOf(bytes).load)
    clock.advance(1000)
    await cache.get(ref(), async () => {
      throw unavailable()
    })
    clock.advance(5000)
    const good = loaderOf(bytes)
    expect(await cache.get(ref(), good.load)).toBe(first)
    expect(good.calls()).toBe(1)
    clock.advance(999)
    expect(await cache.get(ref(), good.load)).toBe(first) // fresh again: a plain hit
    expect(good.calls()).toBe(1)
  })
})
