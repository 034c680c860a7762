import { inspect } from 'node:util'
import { KeyError } from '../errors.js'
import { ActiveVersions } from './active-versions.js'
import { keyDestroyed } from './destroyed-key.js'
import { ForgetLog } from './forget-log.js'
import { KeyCache } from './key-cache.js'
import { isKeyNotFound, KeyCreation } from './key-creation.js'
import type { KeyMaterial } from './key-material.js'
import { findVersion, MetadataCache, requireVersion, SEARCHABLE, type TableMeta } from './key-metadata.js'
import type { KeyProvider, KeyPurpose, KeyRef } from './key-provider.js'
import { type KeyInitContext, proveActiveKeys } from './key-ring-init.js'
import { loadTableMeta, type MetadataLoadContext, unwrapUnforgotten } from './key-ring-load.js'
import {
  checkKeyRingOptions,
  type InitKeysResult,
  type KeyRingOptions,
  type KeyRingStats,
  ROLLBACK_MEMORY_FACTOR,
} from './key-ring-options.js'
import { describeKeyRef, KEY_PURPOSES as PURPOSES } from './key-row.js'
import type { KeyStore } from './key-store.js'
import { refOf, unwrapStoredKey } from './key-wrapping.js'
import type { StoredKey } from './stored-key.js'

export type { InitKeysResult, KeyEvent, KeyRingOptions, KeyRingStats } from './key-ring-options.js'

/** A reference to an unknown version reloads metadata at most this often, so bad input cannot cost O(rows) queries. */
const MIN_RELOAD_MS = 1000

/**
 * What the plugin asks for keys: the write key of a table, any version for reads, and every
 * searchable version for blind-index queries. Combines the {@link KeyStore} (wrapped keys,
 * versions, states), the providers (unwrap with failover, audit) and the {@link KeyCache}.
 *
 * Cost: provider calls are O(tables × purposes × versions) per cache TTL, never O(rows); the
 * key store is queried once per table per `metadataTtlMs`. Concurrent first uses of a table load
 * its metadata once and create its keys once per process (the primary key settles races between
 * processes).
 *
 * @example
 * ```ts
 * const ring = new KeyRing({ store: new KeyStore(db), providers: [localKeyProvider({ env: 'KEK' })] })
 * const key = await ring.activeKey('users', 'data')   // first use: creates users/data/v1 and users/index/v1
 * ```
 */
export class KeyRing {
  readonly #store: KeyStore
  readonly #providers: readonly KeyProvider[]
  readonly #cache: KeyCache
  readonly #creation: KeyCreation
  /** What the metadata load reads and updates (see {@link loadTableMeta}). */
  readonly #load: MetadataLoadContext
  readonly #activeVersions: ActiveVersions
  readonly #now: () => number
  readonly #meta: MetadataCache
  /** What unwrapping and creating keys need: providers, audit, counters, cache. */
  readonly #init: KeyInitContext
  readonly #readsInTransaction: (() => boolean) | undefined
  /** What was read before a key name was forgotten (shredded): never cached after it. */
  readonly #forgets = new ForgetLog()
  #providerCalls = 0
  #metadataLoads = 0
  #closed = false

  /**
   * @param options - store, providers, cache, metadata TTL, audit sink.
   * @throws ConfigError `CONFIG_INVALID` when no provider is given, two share an id, or an option
   *   is out of range.
   */
  constructor(options: KeyRingOptions) {
    const { metadataTtl, metadataMax } = checkKeyRingOptions(options)
    this.#store = options.store
    this.#readsInTransaction = options.readsInTransaction
    this.#providers = Object.freeze([...options.providers])
    this.#now = options.now ?? (() => performance.now())
    this.#cache = new KeyCache({ ...options.cache, now: options.cache?.now ?? this.#now })
    this.#meta = new MetadataCache(metadataTtl, this.#now, (table) => this.#loadMetadata(table), metadataMax)
    this.#activeVersions = new ActiveVersions(
      options.allowRollback ?? false,
      options.onKeyEvent,
      ROLLBACK_MEMORY_FACTOR * metadataMax,
    )
    this.#init = Object.freeze({
      store: this.#store,
      providers: this.#providers,
      audit: options.audit,
      cache: this.#cache,
      onCall: () => {
        this.#providerCalls++
      },
      unwrapTimeoutMs: this.#cache.unwrapTimeoutMs,
      isClosed: () => this.#closed,
      wasForgotten: (name: string) => this.#forgets.forgottenSince(name, 0),
    })
    this.#creation = new KeyCreation(this.#init, options, (name) => this.#meta.delete(name))
    this.#load = {
      store: this.#store,
      cache: this.#cache,
      creation: this.#creation,
      forgets: this.#forgets,
      activeVersions: this.#activeVersions,
      now: this.#now,
      readsInTransaction: this.#readsInTransaction,
      onRead: () => {
        this.#metadataLoads++
      },
    }
  }

  /**
   * The write key of a table: its single `active` version.
   * @returns the key; owned by the cache, use it synchronously.
   * @throws KeyError `KEY_NOT_FOUND` when the table has no active key (and `autoCreate` is off).
   * @throws KeyProviderError with the provider's code (`PROVIDER_UNAVAILABLE`, …) when every wrapping fails.
   * @throws KeyError `KEY_STORE_ERROR` when the key store fails.
   */
  async activeKey(logicalTable: string, purpose: KeyPurpose): Promise<KeyMaterial> {
    const keys = await this.versions(logicalTable, purpose)
    const meta = await this.#meta.get(logicalTable)
    // A corrupt row that may be the active one: writing with another version would be a guess.
    const suspect = meta.corrupt.find(
      (c) => (c.purpose ?? purpose) === purpose && (c.state === undefined || c.state === 'active'),
    )
    if (suspect !== undefined) throw suspect.error
    const active = keys.filter((k) => k.state === 'active')
    const only = active[0]
    if (only !== undefined && meta.rolledBack.has(purpose)) {
      const highest = this.#activeVersions.highest(logicalTable, purpose)
      throw new KeyError(
        'KEY_ROLLBACK',
        `The active ${purpose} key of ${logicalTable} is version ${only.version}, lower than version ${highest} this process already wrote with: a rollback. Writes are refused; if the rollback is deliberate, set allowRollback.`,
        { table: logicalTable },
      )
    }
    if (only === undefined) {
      throw new KeyError('KEY_NOT_FOUND', `No active ${purpose} key for ${logicalTable}.`, {
        table: logicalTable,
      })
    }
    if (active.length > 1) {
      throw new KeyError(
        'KEY_STORE_ERROR',
        `The key store lists several active ${purpose} keys for ${logicalTable}.`,
        {
          table: logicalTable,
        },
      )
    }
    return this.#keyOf(only)
  }

  /**
   * The write key of a table or tenant: {@link KeyRing.activeKey}, except that a tenant's first
   * write creates the tenant's keys when `createTenantKeys` is on (never over a tenant whose rows
   * hold ciphertext: `KEYS_MISSING`; never after its keys were destroyed: `KEY_DESTROYED`).
   * @param logicalTable - a table's logical name, or a tenant's key name (`orders#tenant_id=acme`).
   * @throws KeyError as {@link KeyRing.activeKey}, and `KEYS_MISSING` as {@link KeyRing.init}.
   */
  async writeKey(logicalTable: string, purpose: KeyPurpose): Promise<KeyMaterial> {
    try {
      return await this.activeKey(logicalTable, purpose)
    } catch (error) {
      if (!isKeyNotFound(error)) throw error
      this.#assertOpen()
      await this.#creation.tenantFirstWrite(logicalTable, error)
    }
    return this.activeKey(logicalTable, purpose)
  }

  /**
   * Any existing version of a key, whatever its state (reads of old rows).
   * @param ref - the version, usually read from a ciphertext.
   * @throws KeyError `KEY_NOT_FOUND` when that version does not exist.
   * @throws KeyProviderError when every wrapping fails.
   */
  async key(ref: KeyRef): Promise<KeyMaterial> {
    this.#assertOpen()
    if (!Number.isSafeInteger(ref.version) || ref.version < 1 || !PURPOSES.includes(ref.purpose)) {
      throw new KeyError('KEY_NOT_FOUND', `No key ${describeKeyRef(ref)}.`, { table: ref.logicalTable })
    }
    return this.#cache.get(ref, async () => {
      const stored = await this.#find(ref)
      return this.#unwrap(stored, this.#forgets.readOf(stored))
    })
  }

  /**
   * The key of a version the caller read from the key store itself (the jobs over per-tenant keys
   * read many tenants' versions in one query), through the cache like {@link KeyRing.key}.
   * @throws KeyError `KEY_DESTROYED` when the version is a tombstone.
   * @throws KeyProviderError when every wrapping fails.
   */
  async storedKey(stored: StoredKey): Promise<KeyMaterial> {
    this.#assertOpen()
    if (stored.state === 'destroyed') throw keyDestroyed(stored.logicalTable)
    return this.#keyOf(stored)
  }

  /**
   * Every key a blind-index search must cover: `staged`, `active` and `decrypt-only` versions,
   * newest first.
   * @throws KeyError `KEY_NOT_FOUND` when the table has no keys (and `autoCreate` is off).
   * @throws KeyProviderError when a version cannot be unwrapped.
   */
  async searchKeys(logicalTable: string, purpose: KeyPurpose): Promise<KeyMaterial[]> {
    const all = await this.versions(logicalTable, purpose)
    // A search that skipped a corrupt live version would silently miss its rows.
    const suspect = (await this.#meta.get(logicalTable)).corrupt.find(
      (c) => (c.purpose ?? purpose) === purpose && (c.state === undefined || SEARCHABLE.has(c.state)),
    )
    if (suspect !== undefined) throw suspect.error
    const keys = all.filter((k) => SEARCHABLE.has(k.state)).sort((a, b) => b.version - a.version)
    if (keys.length === 0) {
      throw new KeyError('KEY_NOT_FOUND', `No searchable ${purpose} key for ${logicalTable}.`, {
        table: logicalTable,
      })
    }
    return Promise.all(keys.map((k) => this.#keyOf(k)))
  }

  /**
   * Synchronous cache hit for {@link KeyRing.activeKey}: the write key when the table's metadata
   * and the key are both cached and fresh; `undefined` otherwise (then call the async method).
   */
  peekActiveKey(logicalTable: string, purpose: KeyPurpose): KeyMaterial | undefined {
    const active = this.#freshMeta(logicalTable)?.active[purpose]
    return active === undefined ? undefined : this.#cache.tryGet(active)
  }

  /** Synchronous cache hit for {@link KeyRing.searchKeys}; `undefined` when anything is not cached. */
  peekSearchKeys(logicalTable: string, purpose: KeyPurpose): KeyMaterial[] | undefined {
    const search = this.#freshMeta(logicalTable)?.search[purpose]
    if (search === undefined || search.length === 0) return undefined
    const out: KeyMaterial[] = []
    for (const stored of search) {
      const key = this.#cache.tryGet(stored)
      if (key === undefined) return undefined
      out.push(key)
    }
    return out
  }

  /** Synchronous cache hit for {@link KeyRing.key}; `undefined` when it is not cached and fresh. */
  peekKey(ref: KeyRef): KeyMaterial | undefined {
    return this.#closed ? undefined : this.#cache.tryGet(ref)
  }

  #freshMeta(logicalTable: string): TableMeta | undefined {
    if (this.#closed) return undefined
    return this.#meta.fresh(logicalTable)
  }

  /**
   * The stored versions of a table's key (from metadata cached for `metadataTtlMs`), by version.
   * Creates version 1 of both purposes on first use when `autoCreate` is on.
   * @throws KeyError `KEY_NOT_FOUND` when there are none and `autoCreate` is off.
   * @throws KeyError `KEYS_MISSING` when keys are missing for a table that holds ciphertext.
   * @throws KeyError `KEY_STORE_ERROR` when the key store fails.
   */
  async versions(logicalTable: string, purpose: KeyPurpose): Promise<readonly StoredKey[]> {
    this.#assertOpen()
    const meta = await this.#meta.get(logicalTable)
    const keys = meta.keys.filter((k) => k.purpose === purpose)
    if (keys.length > 0 && keys.every((k) => k.state === 'destroyed')) throw keyDestroyed(logicalTable)
    if (keys.length === 0) {
      const corrupt = meta.corrupt.find((c) => (c.purpose ?? purpose) === purpose)
      if (corrupt !== undefined) throw corrupt.error
      throw new KeyError(
        'KEY_NOT_FOUND',
        `No ${purpose} key exists for ${logicalTable}: keys are created only on purpose. Run \`kfe init\` or \`await encryption.init(db)\` once (or set autoCreateKeys in development).`,
        {
          table: logicalTable,
        },
      )
    }
    return keys
  }

  /**
   * Creates version 1 of the data and index keys of each table that has none: the explicit
   * step that replaces creation on first use. Idempotent: keys that exist are left as they are.
   * Tables are handled one after another, one query at a time (it may run on a single
   * connection).
   *
   * @param logicalTables - the logical tables to initialise.
   * @returns the key versions this call created and those that already existed.
   * @throws KeyError `KEYS_MISSING` when a table has a missing purpose but holds ciphertext:
   *   its keys were lost (key table dropped, edited or restored from another environment);
   *   restore the key table, never create keys over data.
   * @throws KeyProviderError when a provider cannot generate or wrap a key, and `UNWRAP_FAILED`
   *   when a new key's wrapping under a KEK does not unwrap to it (nothing is stored for that
   *   table) or an active key that was there already does not unwrap under the configured KEKs.
   * @throws KeyError `KEY_STORE_ERROR` when the key store fails.
   */
  async init(logicalTables: Iterable<string>): Promise<InitKeysResult> {
    this.#assertOpen()
    const result = await this.#creation.init(logicalTables)
    // Keys that were there already must unwrap under the configured KEKs: a key table of
    // another environment, or a KEK missing from the configuration, is said here, at deploy
    // time, and not by the first query (UNWRAP_FAILED). One unwrap per active key.
    for (const table of new Set(result.existing.map((k) => k.logicalTable)))
      await proveActiveKeys((t, purpose) => this.activeKey(t, purpose), table)
    return result
  }

  /** Counters since construction; never key material. */
  stats(): KeyRingStats {
    return {
      cache: this.#cache.stats(),
      providerCalls: this.#providerCalls,
      metadataLoads: this.#metadataLoads,
      metadataNames: this.#meta.size,
    }
  }

  /**
   * Drops one key name's cached metadata and zeroes its cached keys (after shredding: `KEY_DESTROYED`
   * next). A metadata load or an unwrap of the name already under way caches nothing it read
   * before this call: its key is zeroed and the read runs again from the key table, which refuses
   * a version shredded meanwhile with `KEY_DESTROYED` before any provider is asked (as it refuses
   * any forgotten version inside a transaction).
   */
  forget(logicalTable: string): void {
    this.#forgets.forget(logicalTable)
    this.#meta.delete(logicalTable)
    this.#cache.deleteTable(logicalTable)
  }

  /** Drops cached metadata (versions and states), so the next call re-reads the key store. Keeps unwrapped keys. */
  refresh(): void {
    this.#meta.clear()
  }

  /** Zeroes every cached key, refuses further use, and closes the providers. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#cache.close()
    this.#meta.clear()
    await Promise.allSettled(this.#providers.map(async (p) => p.close?.()))
  }

  toJSON(): unknown {
    return { type: 'KeyRing', providers: this.#providers.map((p) => p.id), ...this.stats() }
  }

  toString(): string {
    return `KeyRing(providers=${this.#providers.map((p) => p.id).join(',')}, ${this.#cache.toString()})`
  }

  [inspect.custom](): string {
    return this.toString()
  }

  #keyOf(stored: StoredKey): Promise<KeyMaterial> {
    const readAt = this.#forgets.readOf(stored)
    return this.#cache.get(refOf(stored), () => this.#unwrap(stored, readAt))
  }

  /** Unwraps `stored`, read by the metadata read numbered `readAt` (see {@link unwrapUnforgotten}). */
  #unwrap(stored: StoredKey, readAt: number): Promise<KeyMaterial> {
    return unwrapUnforgotten(
      {
        forgets: this.#forgets,
        inTransaction: this.#readsInTransaction?.() === true,
        unwrap: (s) => unwrapStoredKey(this.#init, s),
        reload: (table) => this.#loadMetadata(table),
      },
      stored,
      readAt,
    )
  }

  async #find(ref: KeyRef): Promise<StoredKey> {
    let meta = await this.#meta.get(ref.logicalTable)
    // A version staged by another process since our last load: reload, but rate-limited.
    if (findVersion(meta, ref) === undefined && this.#now() - meta.loadedAt >= MIN_RELOAD_MS) {
      meta = await this.#meta.get(ref.logicalTable, true)
    }
    return requireVersion(meta, ref)
  }

  async #loadMetadata(logicalTable: string): Promise<TableMeta> {
    const { meta, cacheable } = await loadTableMeta(this.#load, logicalTable)
    if (cacheable && !this.#closed) this.#meta.set(logicalTable, meta)
    return meta
  }

  #assertOpen(): void {
    if (this.#closed) throw new KeyError('KEY_NOT_FOUND', 'The key ring was closed.')
  }
}
