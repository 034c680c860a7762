import { ConfigError } from '../errors.js'
import { optionKeys, refuseUnknownKeys } from '../option-keys.js'

/**
 * The options and counters of the unwrapped-key cache (key-cache.ts), each option with its cost.
 */

/** The keys of {@link KeyCacheOptions}. */
export const KEY_CACHE_OPTION_KEYS = optionKeys<KeyCacheOptions>()([
  'max',
  'ttlMs',
  'graceMs',
  'outageRetryMs',
  'unwrapTimeoutMs',
  'now',
])

/** Options of {@link KeyCache}. Each one costs something; the cost is stated beside it. */
export interface KeyCacheOptions {
  /**
   * Most unwrapped keys held at once (each 32 bytes plus its derived subkeys). The least recently
   * used key is evicted and zeroed beyond it. Must be a positive integer: an unbounded key cache
   * cannot be configured. Too small a value turns into provider calls (one unwrap per miss).
   * @default 1000
   */
  readonly max?: number
  /**
   * How long an unwrapped key is used before it is unwrapped again through its provider, in ms.
   *
   * This is also the **revocation latency**: a KEK disabled, deleted or denied in the KMS/HSM
   * keeps working in this process for up to `ttlMs`, never longer: the grace period below covers
   * outages only, not refusals. Lower it for faster revocation; each refresh costs one provider
   * call per cached key.
   * @default 300_000 (5 minutes)
   */
  readonly ttlMs?: number
  /**
   * After `ttlMs`, the key is reloaded; if that load fails with an **availability** error
   * (`PROVIDER_UNAVAILABLE`, `PROVIDER_THROTTLED`, `KEY_STORE_ERROR`: the keeper or the key store
   * did not answer), the stale key keeps serving until `ttlMs + graceMs`, then the load's error is
   * thrown. This keeps a short KMS/HSM outage from failing queries. Any other failure is an
   * answer, not an outage (`PROVIDER_KEY_DISABLED`, `PROVIDER_ACCESS_DENIED`,
   * `PROVIDER_INVALID_CIPHERTEXT`, `UNWRAP_FAILED`, `KEY_NOT_FOUND`, an untyped error…): the
   * expired key is dropped (zeroed) at once and the error thrown, so grace never delays a
   * revocation. Cost: during an outage, revoked-but-unreachable KEKs keep serving for the grace
   * period, since an unreachable keeper cannot say it revoked anything. `0` disables the grace.
   * @default 900_000 (15 minutes)
   */
  readonly graceMs?: number
  /**
   * During an outage, how long before the keeper is asked again for a key, in ms. A stale key
   * (within grace) keeps serving meanwhile. A key not in the cache whose load took a second or
   * more to fail (a hung keeper: timeouts, retries) fails its queries at once with the error that
   * load ended in, instead of each waiting out the keeper's retries and timeouts again; one that
   * failed at once is asked again by the next query. Bounds provider calls during an outage to
   * one per key per interval per process, instead of one per query. Cost: such a key stays
   * failed for up to this long after the keeper is back. `0`: every query asks again.
   * @default 5_000
   */
  readonly outageRetryMs?: number
  /**
   * How long one KEK's unwrap may take, in ms, before it counts as an outage of that KEK
   * (`PROVIDER_UNAVAILABLE`): the next KEK's wrapping is tried, and when none answers, a key
   * cached within grace is served stale (else the query fails). A provider call that never
   * returns (a hung HSM call, an SDK client without a request timeout) would otherwise hold every
   * query for that key, since the cache serves a stale key only once a reload fails. The call
   * itself runs on; a key it returns late is zeroed. Cost: an unwrap slower than this fails even
   * though its KEK would have answered. `0`: no deadline.
   * @default 10_000
   */
  readonly unwrapTimeoutMs?: number
  /** Clock in milliseconds, injectable for tests. @default performance.now */
  readonly now?: () => number
}

/** Counters of a {@link KeyCache}; no key material. */
export interface KeyCacheStats {
  /** `get` calls answered from a fresh entry. */
  readonly hits: number
  /** `get` calls that found no fresh entry (absent, or older than `ttlMs`). */
  readonly misses: number
  /** Calls of a `load` function: one per single-flight group, and one more per `deleteTable` of its name while it ran. */
  readonly loads: number
  /** `get` calls answered with a stale key during a provider outage (a reload failed with an availability error), within the grace period. */
  readonly staleServed: number
  /** `get` calls for a key not in the cache failed at once, within `outageRetryMs` of its load failing with an availability error. */
  readonly failedFast: number
  /** Keys currently held. */
  readonly size: number
}

/** Node's timers count to 2^31 - 1 ms, and past it fire every millisecond. */
const MAX_TIMER_MS = 2_147_483_647

/**
 * The options of a {@link KeyCacheOptions} with their defaults, checked.
 * @throws ConfigError `CONFIG_INVALID` for an unknown option, `max` or `ttlMs` not a positive
 *   integer, `graceMs`, `outageRetryMs` or `unwrapTimeoutMs` negative or fractional, or a
 *   duration a timer cannot hold (`ttlMs + graceMs`, `unwrapTimeoutMs`).
 */
export function checkedCacheOptions(options: KeyCacheOptions): {
  readonly max: number
  readonly ttlMs: number
  readonly graceMs: number
  readonly outageRetryMs: number
  readonly unwrapTimeoutMs: number
} {
  refuseUnknownKeys(options, KEY_CACHE_OPTION_KEYS, 'KeyCache')
  const checked = {
    max: positiveInt('max', options.max ?? 1000, false),
    ttlMs: positiveInt('ttlMs', options.ttlMs ?? 300_000, false),
    graceMs: positiveInt('graceMs', options.graceMs ?? 900_000, true),
    outageRetryMs: positiveInt('outageRetryMs', options.outageRetryMs ?? 5_000, true),
    unwrapTimeoutMs: positiveInt('unwrapTimeoutMs', options.unwrapTimeoutMs ?? 10_000, true),
  }
  // lru-cache drops expired keys on a timer set to ttlMs + graceMs.
  if (checked.ttlMs + checked.graceMs > MAX_TIMER_MS)
    throw new ConfigError(
      'CONFIG_INVALID',
      `ttlMs + graceMs must be at most ${MAX_TIMER_MS} ms (about 24.8 days), got ${checked.ttlMs + checked.graceMs}.`,
    )
  if (checked.unwrapTimeoutMs > MAX_TIMER_MS)
    throw new ConfigError(
      'CONFIG_INVALID',
      `unwrapTimeoutMs must be at most ${MAX_TIMER_MS} ms (about 24.8 days), got ${checked.unwrapTimeoutMs}.`,
    )
  return checked
}

function positiveInt(name: string, value: number, allowZero: boolean): number {
  if (!Number.isSafeInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `KeyCache option ${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${String(value)}.`,
    )
  }
  return value
}
