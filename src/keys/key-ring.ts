import { inspect } from 'node:util'
import { ConfigError, KeyError } from '../errors.js'
import { ownKeyBuffer as copyKey } from '../fields/key-bytes.js'
import { KeyCache, type KeyCacheOptions, type KeyCacheStats } from './key-cache.js'
import { keyCheckValue, matchesKeyCheck } from './key-check.js'
import { KeyMaterial } from './key-material.js'
import type { AuditSink, KeyProvider, KeyPurpose, KeyRef, WrappedKey } from './key-provider.js'
import type { CorruptKey, KeyStore, StoredKey } from './key-store.js'
import { auditedCall, checkProviders, unwrapWithFailover } from './provider-call.js'

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
}

/** Counters of a {@link KeyRing}; no key material. */
export interface KeyRingStats {
  readonly cache: KeyCacheStats
  /** Calls made to any provider (generateDataKey, unwrap, rewrap). */
  readonly providerCalls: number
  /** Queries of the key store for a table's versions. */
  readonly metadataLoads: number
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

interface TableMeta {
  readonly keys: readonly StoredKey[]
  /** Rows that could not be parsed: only what needs them is refused. */
  readonly corrupt: readonly CorruptKey[]
  /** Purposes whose active version is a refused rollback. */
  readonly rolledBack: ReadonlySet<KeyPurpose>
  readonly loadedAt: number
  /** The single active version per purpose (absent when there is none, or several). */
  readonly active: Readonly<Partial<Record<KeyPurpose, StoredKey>>>
  /** Searchable versions per purpose, newest first. */
  readonly search: Readonly<Record<KeyPurpose, readonly StoredKey[]>>
}

const PURPOSES: readonly KeyPurpose[] = ['data', 'index']
const SEARCHABLE = new Set(['staged', 'active', 'decrypt-only'])
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
  readonly #metadataTtl: number
  readonly #audit: AuditSink | undefined
  readonly #autoCreate: boolean
  readonly #holdsCiphertext: ((logicalTable: string) => Promise<boolean>) | undefined
  readonly #allowRollback: boolean
  readonly #onKeyEvent: ((event: KeyEvent) => void) | undefined
  /** The active version last seen, and the highest ever seen, per `table/purpose`. */
  readonly #seenActive = new Map<string, { last: number; highest: number }>()
  readonly #now: () => number
  readonly #meta = new Map<string, TableMeta>()
  readonly #metaInflight = new Map<string, Promise<TableMeta>>()
  #providerCalls = 0
  #metadataLoads = 0
  #closed = false

  /**
   * @param options - store, providers, cache, metadata TTL, audit sink.
   * @throws ConfigError `CONFIG_INVALID` when no provider is given, two share an id, or an option
   *   is out of range.
   */
  constructor(options: KeyRingOptions) {
    checkProviders(options.providers, 'KeyRing')
    const metadataTtl = options.metadataTtlMs ?? 30_000
    if (!Number.isSafeInteger(metadataTtl) || metadataTtl < 0) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `metadataTtlMs must be a non-negative integer, got ${metadataTtl}.`,
      )
    }
    this.#store = options.store
    this.#providers = Object.freeze([...options.providers])
    this.#now = options.now ?? (() => performance.now())
    this.#cache = new KeyCache({ ...options.cache, now: options.cache?.now ?? this.#now })
    this.#metadataTtl = metadataTtl
    this.#audit = options.audit
    this.#autoCreate = options.autoCreate ?? false
    this.#holdsCiphertext = options.holdsCiphertext
    this.#allowRollback = options.allowRollback ?? false
    this.#onKeyEvent = options.onKeyEvent
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
    const meta = await this.#metadata(logicalTable)
    // A corrupt row that may be the active one: writing with another version would be a guess.
    const suspect = meta.corrupt.find(
      (c) => (c.purpose ?? purpose) === purpose && (c.state === undefined || c.state === 'active'),
    )
    if (suspect !== undefined) throw suspect.error
    const active = keys.filter((k) => k.state === 'active')
    const only = active[0]
    if (only !== undefined && meta.rolledBack.has(purpose)) {
      const highest = this.#seenActive.get(`${logicalTable}/${purpose}`)?.highest
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
   * Any existing version of a key, whatever its state (reads of old rows).
   * @param ref - the version, usually read from a ciphertext.
   * @throws KeyError `KEY_NOT_FOUND` when that version does not exist.
   * @throws KeyProviderError when every wrapping fails.
   */
  async key(ref: KeyRef): Promise<KeyMaterial> {
    this.#assertOpen()
    if (!Number.isSafeInteger(ref.version) || ref.version < 1 || !PURPOSES.includes(ref.purpose)) {
      throw new KeyError('KEY_NOT_FOUND', `No key ${describe(ref)}.`, { table: ref.logicalTable })
    }
    return this.#cache.get(ref, async () => this.#unwrap(await this.#find(ref)))
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
    const suspect = (await this.#metadata(logicalTable)).corrupt.find(
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
    const meta = this.#meta.get(logicalTable)
    return meta !== undefined && this.#now() - meta.loadedAt < this.#metadataTtl ? meta : undefined
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
    const meta = await this.#metadata(logicalTable)
    const keys = meta.keys.filter((k) => k.purpose === purpose)
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
   * @throws KeyProviderError when a provider cannot generate or wrap a key.
   * @throws KeyError `KEY_STORE_ERROR` when the key store fails.
   */
  async init(logicalTables: Iterable<string>): Promise<InitKeysResult> {
    this.#assertOpen()
    const created: KeyRef[] = []
    const existing: KeyRef[] = []
    for (const logicalTable of new Set(logicalTables)) {
      const keys = await this.#store.list(logicalTable)
      const missing = PURPOSES.filter((p) => !keys.some((k) => k.purpose === p))
      for (const k of keys) existing.push(refOf(k))
      if (missing.length === 0) continue
      await this.#refuseOverCiphertext(logicalTable, missing, keys.length > 0 && !this.#canProbe())
      const made = await this.#createInitial(logicalTable, missing)
      for (const purpose of missing) {
        const ref = { logicalTable, purpose, version: 1 }
        if (made.some((r) => r.purpose === purpose)) created.push(ref)
        else existing.push(ref)
      }
      this.#meta.delete(logicalTable)
    }
    return { created, existing }
  }

  /** Counters since construction; never key material. */
  stats(): KeyRingStats {
    return {
      cache: this.#cache.stats(),
      providerCalls: this.#providerCalls,
      metadataLoads: this.#metadataLoads,
    }
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
    const ref: KeyRef = {
      logicalTable: stored.logicalTable,
      purpose: stored.purpose,
      version: stored.version,
    }
    return this.#cache.get(ref, () => this.#unwrap(stored))
  }

  async #find(ref: KeyRef): Promise<StoredKey> {
    const match = (meta: TableMeta) =>
      meta.keys.find((k) => k.purpose === ref.purpose && k.version === ref.version)
    let meta = await this.#metadata(ref.logicalTable)
    let found = match(meta)
    // A version staged by another process since our last load: reload, but rate-limited.
    if (found === undefined && this.#now() - meta.loadedAt >= MIN_RELOAD_MS) {
      meta = await this.#metadata(ref.logicalTable, true)
      found = match(meta)
    }
    if (found === undefined) {
      const corrupt = meta.corrupt.find(
        (c) => (c.purpose ?? ref.purpose) === ref.purpose && (c.version ?? ref.version) === ref.version,
      )
      if (corrupt !== undefined) throw corrupt.error
      throw new KeyError('KEY_NOT_FOUND', `No key ${describe(ref)} in the key store.`, {
        table: ref.logicalTable,
      })
    }
    return found
  }

  async #unwrap(stored: StoredKey): Promise<KeyMaterial> {
    const ref: KeyRef = {
      logicalTable: stored.logicalTable,
      purpose: stored.purpose,
      version: stored.version,
    }
    const plaintext = await unwrapWithFailover(stored.wrappings, ref, {
      providers: this.#providers,
      audit: this.#audit,
      onCall: () => {
        this.#providerCalls++
      },
    })
    if (stored.checkValue !== undefined && !matchesKeyCheck(plaintext, ref, stored.checkValue)) {
      plaintext.fill(0)
      throw new KeyError(
        'KEY_CHECK_FAILED',
        `The key unwrapped for ${describe(ref)} does not match its check value: its wrapping holds another key (replaced, swapped from another row, or restored from another environment). Restore the row from the key table's backup.`,
        { table: ref.logicalTable },
      )
    }
    return new KeyMaterial(ref, plaintext)
  }

  /** Single-flight per table: concurrent callers share one load (and one creation). */
  #metadata(logicalTable: string, force = false): Promise<TableMeta> {
    const cached = this.#meta.get(logicalTable)
    if (!force && cached !== undefined && this.#now() - cached.loadedAt < this.#metadataTtl) {
      return Promise.resolve(cached)
    }
    let pending = this.#metaInflight.get(logicalTable)
    if (pending === undefined) {
      pending = this.#loadMetadata(logicalTable)
      this.#metaInflight.set(logicalTable, pending)
      const settle = (): void => {
        if (this.#metaInflight.get(logicalTable) === pending) this.#metaInflight.delete(logicalTable)
      }
      void pending.then(settle, settle)
    }
    return pending
  }

  async #loadMetadata(logicalTable: string): Promise<TableMeta> {
    this.#metadataLoads++
    let { keys, corrupt } = await this.#store.read(logicalTable)
    // A purpose with only corrupt rows is not missing: it must never get fresh keys.
    const present = (p: KeyPurpose) =>
      keys.some((k) => k.purpose === p) || corrupt.some((c) => (c.purpose ?? p) === p)
    const missing = PURPOSES.filter((p) => !present(p))
    if (missing.length > 0) {
      // Keys of one purpose without the other: the store's own record says this table was
      // initialised, so the missing rows were deleted. Never paper over that with fresh keys.
      await this.#refuseOverCiphertext(logicalTable, missing, keys.length > 0)
      if (this.#autoCreate) {
        // One after the other: this may run on the application's connection (one query at a time).
        await this.#createInitial(logicalTable, missing)
        this.#metadataLoads++
        ;({ keys, corrupt } = await this.#store.read(logicalTable))
      }
    }
    const active: Partial<Record<KeyPurpose, StoredKey>> = {}
    const search = { data: [] as StoredKey[], index: [] as StoredKey[] }
    const rolledBack = new Set<KeyPurpose>()
    for (const purpose of PURPOSES) {
      const doubtful = corrupt.filter((c) => (c.purpose ?? purpose) === purpose)
      const actives = keys.filter((k) => k.purpose === purpose && k.state === 'active')
      const only = actives.length === 1 ? actives[0] : undefined
      if (only !== undefined && !this.#acceptActive(logicalTable, purpose, only.version))
        rolledBack.add(purpose)
      // The synchronous fast path serves only what no corrupt row or rollback puts in doubt.
      const activeDoubt = doubtful.some((c) => c.state === undefined || c.state === 'active')
      if (only !== undefined && !activeDoubt && !rolledBack.has(purpose)) active[purpose] = only
      const searchDoubt = doubtful.some((c) => c.state === undefined || SEARCHABLE.has(c.state))
      search[purpose] = searchDoubt
        ? []
        : keys
            .filter((k) => k.purpose === purpose && SEARCHABLE.has(k.state))
            .sort((a, b) => b.version - a.version)
    }
    const meta: TableMeta = Object.freeze({
      keys: Object.freeze(keys),
      corrupt: Object.freeze(corrupt),
      rolledBack,
      loadedAt: this.#now(),
      active,
      search,
    })
    // A table without keys is not cached: keys created by `kfe init` in another process are seen
    // at the next query (each such query costs one key-store read until then).
    const complete = PURPOSES.every((p) => present(p))
    if (!this.#closed && complete) this.#meta.set(logicalTable, meta)
    return meta
  }

  /**
   * Records the active version seen for (table, purpose) and reports a change.
   * @returns false when it is lower than the highest seen and rollbacks are not allowed.
   */
  #acceptActive(logicalTable: string, purpose: KeyPurpose, version: number): boolean {
    const id = `${logicalTable}/${purpose}`
    const seen = this.#seenActive.get(id)
    if (seen === undefined) {
      this.#seenActive.set(id, { last: version, highest: version })
      return true
    }
    if (seen.last === version && version >= seen.highest) return true
    const rollback = version < seen.highest
    const refused = rollback && !this.#allowRollback
    if (seen.last !== version) {
      this.#report({
        type: refused ? 'rollback-refused' : 'active-version-changed',
        logicalTable,
        purpose,
        from: seen.last,
        to: version,
        highest: seen.highest,
        time: new Date(),
      })
    }
    if (refused) {
      // Remember it was reported, but keep the highest: writes stay refused.
      this.#seenActive.set(id, { last: version, highest: seen.highest })
      return false
    }
    this.#seenActive.set(id, { last: version, highest: Math.max(seen.highest, version) })
    return true
  }

  #report(event: KeyEvent): void {
    try {
      this.#onKeyEvent?.(Object.freeze(event))
    } catch {
      // An audit hook must never change the outcome of a key operation.
    }
  }

  #canProbe(): boolean {
    return this.#holdsCiphertext !== undefined
  }

  /**
   * Throws `KEYS_MISSING` when keys of `missing` purposes must not be created for the table: it
   * holds ciphertext, or (`recorded`) the key store itself shows it was initialised.
   */
  async #refuseOverCiphertext(
    logicalTable: string,
    missing: readonly KeyPurpose[],
    recorded: boolean,
  ): Promise<void> {
    const holds = recorded ? false : ((await this.#holdsCiphertext?.(logicalTable)) ?? false)
    if (!recorded && !holds) return
    const what = missing.map((p) => `${p} key`).join(' and ')
    const evidence = recorded
      ? `its keys of the other purpose are in the key store, so it was initialised`
      : `its encrypted columns hold ciphertext`
    throw new KeyError(
      'KEYS_MISSING',
      `The key store has no ${what} for ${logicalTable}, but ${evidence}. The key table was likely dropped, edited, or restored from another environment. No key was created: fresh keys would make the stored data unreadable and its searches silently empty. Restore the key table from its backup (docs/keys.md).`,
      { table: logicalTable },
    )
  }

  /**
   * Generates version 1 of each purpose under providers[0], wraps each under every other
   * provider, and stores them in one statement (no process sees one without the other).
   * @returns the refs this call created (others were created first by another process).
   */
  async #createInitial(logicalTable: string, purposes: readonly KeyPurpose[]): Promise<KeyRef[]> {
    const generated: { ref: KeyRef; plaintext: Buffer; wrappings: WrappedKey[] }[] = []
    try {
      for (const purpose of purposes) {
        const ref: KeyRef = { logicalTable, purpose, version: 1 }
        generated.push({ ref, ...(await this.#generate(ref)) })
      }
      const results = await this.#store.createInitialKeys(
        logicalTable,
        generated.map((g) => ({
          purpose: g.ref.purpose,
          wrappings: g.wrappings,
          checkValue: keyCheckValue(g.plaintext, g.ref),
        })),
      )
      const created: KeyRef[] = []
      results.forEach((result, i) => {
        const g = generated[i]
        if (g === undefined || !result.created) return
        created.push(g.ref)
        if (this.#closed) return
        // Seed the cache with the key we already hold: saves one unwrap on first use.
        // Not awaited: a read of this very version (ring.key) may be in flight and waiting for
        // this creation, and joining its single-flight entry here would deadlock.
        const material = new KeyMaterial(g.ref, copyKey(g.plaintext))
        void this.#cache
          .get(g.ref, async () => material)
          .then(
            (cached) => {
              if (cached !== material) material.destroy()
            },
            () => material.destroy(),
          )
      })
      return created
    } finally {
      for (const g of generated) g.plaintext.fill(0)
    }
  }

  /** A new key for `ref`: generated under providers[0], wrapped under every provider. */
  async #generate(ref: KeyRef): Promise<{ plaintext: Buffer; wrappings: WrappedKey[] }> {
    const [primary, ...others] = this.#providers
    if (primary === undefined) throw new ConfigError('CONFIG_INVALID', 'KeyRing needs a key provider.')
    this.#providerCalls++
    const generated = await auditedCall(this.#audit, 'generateDataKey', primary.id, ref, () =>
      primary.generateDataKey(ref),
    )
    const plaintext = generated.plaintext
    try {
      const wrappings: WrappedKey[] = [generated.wrapped]
      for (const provider of others) {
        const copies: Buffer[] = []
        this.#providerCalls++
        try {
          const wrapped = await auditedCall(this.#audit, 'rewrap', provider.id, ref, () =>
            provider.rewrap(
              {
                wrapped: generated.wrapped,
                plaintext: async () => {
                  const copy = copyKey(plaintext)
                  copies.push(copy)
                  return copy
                },
              },
              ref,
            ),
          )
          wrappings.push(wrapped)
        } finally {
          for (const copy of copies) copy.fill(0)
        }
      }
      return { plaintext, wrappings }
    } catch (error) {
      plaintext.fill(0)
      throw error
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new KeyError('KEY_NOT_FOUND', 'The key ring was closed.')
  }
}

function refOf(k: StoredKey): KeyRef {
  return { logicalTable: k.logicalTable, purpose: k.purpose, version: k.version }
}

function describe(ref: KeyRef): string {
  return `${ref.logicalTable}/${ref.purpose}/v${ref.version}`
}
