import { timingSafeEqual } from 'node:crypto'
import { inspect } from 'node:util'
import { LRUCache } from 'lru-cache'
import { type FieldEncryptionError, KeyError } from '../errors.js'
import { checkedCacheOptions, type KeyCacheOptions, type KeyCacheStats } from './key-cache-options.js'
import { type Failure, isAvailabilityError, remembered, SLOW_FAILURE_MS } from './key-cache-outage.js'
import type { KeyMaterial } from './key-material.js'
import type { KeyRef } from './key-provider.js'

export type { KeyCacheOptions, KeyCacheStats } from './key-cache-options.js'

interface Entry {
  readonly material: KeyMaterial
  /** When the material was last (re)loaded successfully, per the cache clock. */
  loadedAt: number
  /** During an outage: serve this stale entry without reloading until then. */
  retryAfter?: number
}

/** One load under way, marked when its key name is dropped ({@link KeyCache.deleteTable}) meanwhile. */
interface Loading {
  dropped: boolean
}

interface LoadResult {
  readonly material: KeyMaterial
  readonly stale: boolean
}

/**
 * How many runs in a row of one load a {@link KeyCache.deleteTable} of its name may drop before
 * the load fails: a guard against a load that itself drops its name.
 */
const MAX_DROPPED_RUNS = 8

/** Canonical cache key of a ref; JSON of an array cannot collide across fields. */
function cacheKey(ref: KeyRef): string {
  // purpose and version contain no ':', so the table (last) cannot make two refs collide.
  return `${ref.purpose}:${ref.version}:${ref.logicalTable}`
}

/** The logical key name of a {@link cacheKey} (after purpose and version, which hold no ':'). */
function tableOfKey(k: string): string {
  return k.slice(k.indexOf(':', k.indexOf(':') + 1) + 1)
}

/**
 * The in-process cache of unwrapped keys (DESIGN.md §2), built on lru-cache: bounded count, TTL,
 * single-flight loading (N concurrent misses of one key = 1 load), a bounded grace period
 * when the provider is unavailable (never when it refuses), and zeroization of every key it drops.
 *
 * Ownership: the cache owns every {@link KeyMaterial} it returns and destroys (zeroes) it when the
 * key is evicted (`max`), expires (`ttlMs + graceMs`), is refused by its provider on reload (past
 * `ttlMs`), is deleted, cleared, or replaced by a reload that produced different bytes. A reload that produces the same bytes (the normal case: a key
 * version never changes) keeps the existing object and discards the new one, so a refresh never
 * wipes a key a caller still holds. Callers must still use a key only synchronously, right after
 * `get` resolves: across an `await`, an eviction may wipe it (its `bytes` then throws
 * `KEY_NOT_FOUND` rather than returning zeros).
 *
 * @example
 * ```ts
 * const cache = new KeyCache({ ttlMs: 60_000 })
 * const key = await cache.get(ref, () => unwrapSomehow(ref))
 * ```
 */
export class KeyCache {
  readonly #lru: LRUCache<string, Entry>
  readonly #inflight = new Map<string, Promise<LoadResult>>()
  /** The loads under way of each key name (cache key's name), for {@link KeyCache.deleteTable}. */
  readonly #loading = new Map<string, Set<Loading>>()
  /** Keys not in the cache whose last load failed in an outage (at most `max`, oldest dropped). */
  readonly #failed: LRUCache<string, Failure>

  readonly #ttl: number
  readonly #grace: number
  readonly #outageRetry: number
  /** {@link KeyCacheOptions.unwrapTimeoutMs}: applied by the key ring's loads, validated here. */
  readonly unwrapTimeoutMs: number
  readonly #now: () => number
  #closed = false
  #hits = 0
  #misses = 0
  #loads = 0
  #staleServed = 0
  #failedFast = 0

  /**
   * @param options - bounds, TTL, grace and clock; see {@link KeyCacheOptions}.
   * @throws ConfigError `CONFIG_INVALID` as {@link checkedCacheOptions}: an unknown option, a
   *   bound or duration out of range.
   */
  constructor(options: KeyCacheOptions = {}) {
    const { max, ttlMs, graceMs, outageRetryMs, unwrapTimeoutMs } = checkedCacheOptions(options)
    this.#ttl = ttlMs
    this.#grace = graceMs
    this.#outageRetry = outageRetryMs
    this.unwrapTimeoutMs = unwrapTimeoutMs
    const now = options.now ?? (() => performance.now())
    this.#now = now
    this.#lru = new LRUCache<string, Entry>({
      max,
      // The hard limit: past ttl + grace a key is never served. Our own check below is the
      // authority (lru-cache treats a start time of 0 as "no TTL"); lru-cache's TTL makes sure
      // expired keys are dropped, and zeroed, even when nobody asks for them again.
      ttl: this.#ttl + this.#grace,
      ttlAutopurge: true,
      // No debounce of the clock: an injected clock must be seen exactly.
      ttlResolution: 0,
      perf: { now },
      dispose: (entry) => entry.material.destroy(),
    })
    this.#failed = new LRUCache<string, Failure>({ max })
  }

  /**
   * Returns the key for `ref`, calling `load` when it is absent or older than `ttlMs`.
   * Concurrent calls for the same ref share one `load`. If a reload fails with an availability
   * error (`PROVIDER_UNAVAILABLE`, `PROVIDER_THROTTLED`, `KEY_STORE_ERROR`) while the cached key
   * is younger than `ttlMs + graceMs`, the cached key is returned instead (counted in
   * `staleServed`); from then on the cached key is returned at once (also counted) and the reload
   * tried again in the background, at most once per `outageRetryMs`. If it fails with any other error (a refusal such as `PROVIDER_KEY_DISABLED`),
   * the expired key is dropped and zeroed, and the error thrown: revocation latency is `ttlMs`.
   *
   * @param ref - the key version.
   * @param load - unwraps the key; its rejection propagates unchanged (typed provider errors).
   * @returns the cached key; do not destroy it, the cache owns it.
   * @throws whatever `load` throws (e.g. KeyProviderError `PROVIDER_KEY_DISABLED`,
   *   `PROVIDER_UNAVAILABLE`), when no key usable within grace is cached.
   * @throws KeyError `KEY_NOT_FOUND` after {@link KeyCache.close}.
   */
  async get(ref: KeyRef, load: () => Promise<KeyMaterial>): Promise<KeyMaterial> {
    this.#assertOpen()
    const k = cacheKey(ref)
    const entry = this.#current(k)
    if (entry !== undefined && this.#now() - entry.loadedAt < this.#ttl) {
      this.#hits++
      return entry.material
    }
    if (entry?.retryAfter !== undefined) {
      // The keeper did not answer when last asked (an outage): serve the stale key (within
      // grace) at once, and ask again in the background once `outageRetryMs` has passed, so
      // that no query waits out a hung provider's timeouts for a key it holds. A refusal there
      // still drops the key when it comes.
      if (this.#now() >= entry.retryAfter) void this.#pending(k, load).catch(() => undefined)
      this.#staleServed++
      return entry.material
    }
    const failed = this.#failed.get(k)
    if (failed !== undefined && entry === undefined && !this.#inflight.has(k)) {
      if (this.#now() < failed.until) {
        // An outage seen less than `outageRetryMs` ago, and no key to serve: fail at once rather
        // than wait out the keeper's retries and timeouts again.
        this.#failedFast++
        throw remembered(failed.error)
      }
      this.#failed.delete(k)
    }
    this.#misses++
    const result = await this.#pending(k, load)
    if (result.stale) this.#staleServed++
    return result.material
  }

  /**
   * The cached key for `ref` if it is fresh (younger than `ttlMs`), counted as a hit; `undefined`
   * otherwise (not counted: the caller then goes through {@link KeyCache.get}). The synchronous
   * fast path of the plugin: no promise, no provider call.
   */
  tryGet(ref: KeyRef): KeyMaterial | undefined {
    if (this.#closed) return undefined
    const entry = this.#lru.get(cacheKey(ref))
    if (entry === undefined || this.#now() - entry.loadedAt >= this.#ttl) return undefined
    this.#hits++
    return entry.material
  }

  /**
   * The cached key for `ref` if it is fresh (younger than `ttlMs`), without loading, without
   * counting and without touching recency. Lets a synchronous caller use a key it knows is cached.
   * @returns the key, or `undefined` when absent, stale or the cache is closed.
   */
  peek(ref: KeyRef): KeyMaterial | undefined {
    if (this.#closed) return undefined
    const entry = this.#lru.peek(cacheKey(ref))
    if (entry === undefined || this.#now() - entry.loadedAt >= this.#ttl) return undefined
    return entry.material
  }

  /**
   * Drops (and zeroes) the key for `ref`. An in-flight load for it still completes and caches its
   * result ({@link KeyCache.deleteTable} is the one that stops it).
   */
  delete(ref: KeyRef): void {
    this.#lru.delete(cacheKey(ref))
    this.#failed.delete(cacheKey(ref))
  }

  /**
   * Drops (and zeroes) every key of one logical key name, whatever its purpose and version. A load
   * of the name under way caches nothing it got before this call: a key it gets is zeroed and the
   * load run again (the key ring's load then checks the key table after its forget), for its
   * callers to get what that run gives; an error it ends in reaches its callers as it is, and is
   * not remembered as an outage.
   */
  deleteTable(logicalTable: string): void {
    for (const loading of this.#loading.get(logicalTable) ?? []) loading.dropped = true
    for (const entry of [...this.#lru.values()]) {
      if (entry.material.ref.logicalTable === logicalTable) this.delete(entry.material.ref)
    }
    for (const [k, failure] of [...this.#failed.entries()])
      if (failure.table === logicalTable) this.#failed.delete(k)
  }

  /** Drops (and zeroes) every key. */
  clear(): void {
    this.#lru.clear()
    this.#failed.clear()
  }

  /**
   * Clears the cache and refuses further use. Keys that in-flight loads deliver afterwards are
   * zeroed at once. Idempotent.
   */
  close(): void {
    this.#closed = true
    this.#lru.clear()
    this.#failed.clear()
  }

  /** Counters since construction; never key material. */
  stats(): KeyCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      loads: this.#loads,
      staleServed: this.#staleServed,
      failedFast: this.#failedFast,
      size: this.#lru.size,
    }
  }

  toJSON(): unknown {
    return { type: 'KeyCache', ...this.stats() }
  }

  toString(): string {
    const s = this.stats()
    return `KeyCache(size=${s.size}, hits=${s.hits}, misses=${s.misses}, loads=${s.loads}, staleServed=${s.staleServed}, failedFast=${s.failedFast})`
  }

  [inspect.custom](): string {
    return this.toString()
  }

  /** The load of `k` in flight, or a new one (single flight: concurrent callers share it). */
  #pending(k: string, load: () => Promise<KeyMaterial>): Promise<LoadResult> {
    let pending = this.#inflight.get(k)
    if (pending === undefined) {
      pending = this.#load(k, load)
      this.#inflight.set(k, pending)
      const settle = (): void => {
        if (this.#inflight.get(k) === pending) this.#inflight.delete(k)
      }
      void pending.then(settle, settle)
    }
    return pending
  }

  /** The entry for `k` if it is within ttl + grace; drops (zeroes) it if it is past that. */
  #current(k: string): Entry | undefined {
    const entry = this.#lru.get(k)
    if (entry !== undefined && this.#now() - entry.loadedAt >= this.#ttl + this.#grace) {
      this.#lru.delete(k)
      return undefined
    }
    return entry
  }

  /**
   * Runs {@link KeyCache.#loadOnce} until a run ends with no {@link KeyCache.deleteTable} of its
   * name meanwhile: a key got before a drop is zeroed, never cached. At most
   * {@link MAX_DROPPED_RUNS} runs in a row are dropped; then the load fails.
   */
  async #load(k: string, load: () => Promise<KeyMaterial>): Promise<LoadResult> {
    const table = tableOfKey(k)
    for (let run = 1; ; run++) {
      const loading: Loading = { dropped: false }
      const ofTable = this.#loading.get(table) ?? new Set<Loading>()
      this.#loading.set(table, ofTable)
      ofTable.add(loading)
      try {
        const result = await this.#loadOnce(k, load, loading)
        if (!loading.dropped) return result.stale ? result : this.#keep(k, result.material)
        // A stale result is the cached entry, which the drop removed (and zeroed).
        if (!result.stale) result.material.destroy()
        this.#assertOpen()
        if (run === MAX_DROPPED_RUNS)
          throw new KeyError(
            'KEY_NOT_FOUND',
            `The key was dropped from the key cache ${run} times while it was loaded; not loaded.`,
            { table },
          )
      } finally {
        ofTable.delete(loading)
        if (ofTable.size === 0) this.#loading.delete(table)
      }
    }
  }

  /**
   * One run of `load`: the key it returned (not cached yet), or on an availability error the
   * cached entry within grace, marked stale.
   */
  async #loadOnce(k: string, load: () => Promise<KeyMaterial>, loading: Loading): Promise<LoadResult> {
    this.#loads++
    const started = this.#now()
    let loaded: KeyMaterial
    try {
      loaded = await load()
    } catch (error) {
      if (this.#closed) throw error
      if (isAvailabilityError(error)) {
        // The keeper did not answer: an outage, not a decision. Serve the stale key within grace.
        const stale = this.#current(k)
        if (stale !== undefined && this.#grace > 0) {
          stale.retryAfter = this.#now() + this.#outageRetry
          return { material: stale.material, stale: true }
        }
        // Only a keeper that took long to fail (a hang, timeouts, retries with backoff) is
        // remembered: one that fails at once costs the next query nothing to ask again.
        // Nor one of a name dropped meanwhile: the next load is the key table's to answer.
        if (this.#outageRetry > 0 && !loading.dropped && this.#now() - started >= SLOW_FAILURE_MS)
          this.#failed.set(k, {
            error: error as FieldEncryptionError,
            until: this.#now() + this.#outageRetry,
            table: tableOfKey(k),
          })
      } else {
        // The keeper answered "no" (disabled, denied, bad wrapping…): revocation must not wait for
        // grace. Drop (and zero) the expired key. Only an entry older than ttl is dropped; under
        // single-flight no fresher one can be there, the check just keeps this exact.
        const expired = this.#lru.peek(k)
        if (expired !== undefined && this.#now() - expired.loadedAt >= this.#ttl) this.#lru.delete(k)
      }
      throw error
    }
    return { material: loaded, stale: false }
  }

  /** Caches `loaded`, just loaded for `k`, or keeps the cached object if it holds the same bytes. */
  #keep(k: string, loaded: KeyMaterial): LoadResult {
    // A load may hand back an object it handed out before (the key ring's seed of a key it
    // created), which a drop zeroed since: never cached.
    if (loaded.destroyed)
      throw new KeyError('KEY_NOT_FOUND', 'The loaded key was zeroed before it was cached.')
    if (this.#closed) {
      loaded.destroy()
      this.#assertOpen()
    }
    this.#failed.delete(k)
    const now = this.#now()
    const existing = this.#lru.peek(k)
    if (existing !== undefined && sameBytes(existing.material, loaded)) {
      // Same key version, same bytes: keep the object callers may hold, drop the duplicate.
      loaded.destroy()
      existing.loadedAt = now
      existing.retryAfter = undefined
      this.#lru.set(k, existing) // same value: restarts its TTL, no dispose
      return { material: existing.material, stale: false }
    }
    this.#lru.set(k, { material: loaded, loadedAt: now }) // disposes (zeroes) a replaced entry
    return { material: loaded, stale: false }
  }

  #assertOpen(): void {
    if (this.#closed) throw new KeyError('KEY_NOT_FOUND', 'The key cache was closed.')
  }
}

function sameBytes(a: KeyMaterial, b: KeyMaterial): boolean {
  if (a.destroyed || b.destroyed) return false
  return a.bytes.length === b.bytes.length && timingSafeEqual(a.bytes, b.bytes)
}
