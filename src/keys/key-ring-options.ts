import { ConfigError } from '../errors.js'
import { optionKeys, refuseUnknownKeys } from '../option-keys.js'
import type { KeyCacheOptions, KeyCacheStats } from './key-cache.js'
import type { AuditSink, KeyProvider, KeyPurpose, KeyRef } from './key-provider.js'
import type { KeyStore } from './key-store.js'
import { checkProviders } from './provider-call.js'

/** How many more key names rollback protection remembers than metadata holds (`metadataMax`). */
export const ROLLBACK_MEMORY_FACTOR = 10

/** Default of `metadataMax`. */
export const DEFAULT_METADATA_MAX = 1000

/** The keys of {@link KeyRingOptions}. */
export const KEY_RING_OPTION_KEYS = optionKeys<KeyRingOptions>()([
  'store',
  'providers',
  'cache',
  'metadataTtlMs',
  'metadataMax',
  'audit',
  'autoCreate',
  'createTenantKeys',
  'holdsCiphertext',
  'allowRollback',
  'onKeyEvent',
  'now',
  'readsInTransaction',
])

/** Options of {@link KeyRing}. */
export interface KeyRingOptions {
  /** Where wrapped keys live. */
  readonly store: KeyStore
  /**
   * The KEKs. `providers[0]` generates new keys; every provider in the list wraps each new key
   * (several KEKs per key, for availability and disaster recovery), so creating a key needs all
   * of them up. Unwrapping tries a key's wrappings in this order and fails over to the next on
   * any error.
   */
  readonly providers: readonly KeyProvider[]
  /** Bounds, TTL (= revocation latency) and grace of the unwrapped-key cache. */
  readonly cache?: KeyCacheOptions
  /**
   * How long the list of key versions and states of a table is cached, in ms. A version staged or
   * activated elsewhere is seen by this process within this delay, so activating a staged version
   * must wait at least `metadataTtlMs` (plus the key cache `ttlMs` when a KEK wrapping was removed)
   * after staging. Each reload costs one key-store query per table.
   * @default 30_000
   */
  readonly metadataTtlMs?: number
  /**
   * Most key names whose versions and states are held at once: each table, and each tenant of a
   * table with per-tenant keys (`keyScope`), is one name (its key rows, a few hundred bytes). The
   * least recently used name is dropped beyond it and read again from the key store when next
   * needed: one key-store query, no provider call (unwrapped keys are in the key cache, bounded
   * by `cache.max`). Too small a value for the tenants a process serves at once turns into one
   * key-store query per tenant switch; a large one costs memory only.
   *
   * Rollback protection (`allowRollback` off) remembers the highest active version of up to
   * {@link ROLLBACK_MEMORY_FACTOR} × `metadataMax` key names (two numbers each); a name forgotten
   * beyond that is protected again from the next version this process sees, as after a restart.
   * Must be a positive integer: the metadata of a process serving tenants cannot grow without bound.
   * @default 1000
   */
  readonly metadataMax?: number
  /** Receives one event per provider call (never key bytes). Exceptions it throws are swallowed. */
  readonly audit?: AuditSink
  /**
   * Development mode: a table with no keys at all gets version 1 of both its data and index keys
   * on first use. Off (the default), keys are created only by {@link KeyRing.init} (`kfe init`,
   * `encryption.init(db)`), and a table without keys fails with `KEY_NOT_FOUND`.
   *
   * Even on, keys are never created for a table that already holds ciphertext (see
   * `holdsCiphertext`) or that has keys of the other purpose: that is a dropped, edited or
   * foreign key table, and fresh keys would hide it (`KEYS_MISSING`).
   * @default false
   */
  readonly autoCreate?: boolean
  /**
   * Per-tenant keys (`keyScope`): a tenant without keys gets version 1 of its data and index keys
   * on its first write ({@link KeyRing.writeKey}); reads and searches never create keys. Never for
   * a tenant whose rows hold ciphertext (`KEYS_MISSING`: its keys were lost) or whose keys were
   * destroyed (`KEY_DESTROYED`). Off, tenants get keys from `kfe init --tenant` or
   * `encryption.initTenant` only. `autoCreate` does not create tenants' keys. A function is asked
   * at each creation: false refuses it now (`KEY_NOT_FOUND`), e.g. inside a transaction, whose
   * rollback would remove keys that already encrypted data.
   * @default false
   */
  readonly createTenantKeys?: boolean | (() => boolean)
  /**
   * Tells whether a logical table holds this library's ciphertext (a cheap sample of its
   * encrypted columns). Asked only when a table's keys are missing, before any key is created
   * for it. Without it, only the key store's own record (keys of the other purpose) protects a
   * table from fresh keys.
   */
  readonly holdsCiphertext?: (logicalTable: string) => Promise<boolean>
  /**
   * Allows writing with an active version lower than the highest active version this process
   * has seen (a deliberate rollback of a rotation). Off, such a version is refused for writes
   * with `KEY_ROLLBACK`: a database writer could otherwise make an old (perhaps leaked) key the
   * write key again. Reads and searches are unaffected.
   * @default false
   */
  readonly allowRollback?: boolean
  /**
   * Receives an event each time this process sees the active version of a table's key change
   * (rotation, rollback, refused rollback). Never key bytes. Exceptions it throws are swallowed.
   */
  readonly onKeyEvent?: (event: KeyEvent) => void
  /** Clock in ms for metadata TTL (and the key cache unless `cache.now` is given). @default performance.now */
  readonly now?: () => number
  /**
   * True while the key store is read inside a transaction (the wrapper borrows a query's
   * connection): what such a read returns is used, not cached. Under REPEATABLE READ (PostgreSQL's
   * on request, MySQL's by default) it is the transaction's snapshot, which may be older than
   * `metadataTtlMs`: cached, a rotation's new index version would stay unseen for another TTL, and
   * searches would miss the rows written with it. @default never
   */
  readonly readsInTransaction?: () => boolean
}

/** Counters of a {@link KeyRing}; no key material. */
export interface KeyRingStats {
  readonly cache: KeyCacheStats
  /** Calls made to any provider (generateDataKey, unwrap, rewrap). */
  readonly providerCalls: number
  /** Queries of the key store for a table's versions. */
  readonly metadataLoads: number
  /** Key names whose versions are held now (at most `metadataMax`). */
  readonly metadataNames: number
}

/** A change of a table's active key version, as one process saw it. Never carries key bytes. */
export interface KeyEvent {
  /**
   * `active-version-changed`: a higher version became active (a rotation), or a lower one with
   * `allowRollback`; `rollback-refused`: a lower version than the highest seen is active, and
   * writes with it are refused.
   */
  readonly type: 'active-version-changed' | 'rollback-refused'
  readonly logicalTable: string
  readonly purpose: KeyPurpose
  /** The active version this process saw before. */
  readonly from: number
  /** The active version the key store now names. */
  readonly to: number
  /** The highest active version this process has seen. */
  readonly highest: number
  readonly time: Date
}

/** What {@link KeyRing.init} did. */
export interface InitKeysResult {
  /** Key versions this call created (version 1 of each missing purpose). */
  readonly created: readonly KeyRef[]
  /** Key versions that already existed and were left as they are. */
  readonly existing: readonly KeyRef[]
}

/**
 * Checks a key ring's options before anything is built: no unknown key, providers with distinct
 * ids, and the metadata bounds in range.
 * @returns the metadata TTL and bound, defaults applied
 * @throws ConfigError `CONFIG_INVALID`
 */
export function checkKeyRingOptions(options: KeyRingOptions): { metadataTtl: number; metadataMax: number } {
  refuseUnknownKeys(options, KEY_RING_OPTION_KEYS, 'KeyRing')
  checkProviders(options.providers, 'KeyRing')
  const metadataTtl = options.metadataTtlMs ?? 30_000
  if (!Number.isSafeInteger(metadataTtl) || metadataTtl < 0)
    throw new ConfigError(
      'CONFIG_INVALID',
      `metadataTtlMs must be a non-negative integer, got ${metadataTtl}.`,
    )
  const metadataMax = options.metadataMax ?? DEFAULT_METADATA_MAX
  if (!Number.isSafeInteger(metadataMax) || metadataMax < 1)
    throw new ConfigError('CONFIG_INVALID', `metadataMax must be a positive integer, got ${metadataMax}.`)
  return { metadataTtl, metadataMax }
}
