/**
 * A key ring's view of one table's key versions: the rows read from the key store, turned into
 * what each question needs (the write key, the searchable versions), cached for `metadataTtlMs`
 * and loaded once when several callers ask at the same time.
 */
import { LRUCache } from 'lru-cache'
import { KeyError } from '../errors.js'
import { keyDestroyed } from './destroyed-key.js'
import type { KeyPurpose, KeyRef } from './key-provider.js'
import { describeKeyRef, KEY_PURPOSES } from './key-row.js'
import type { CorruptKey, StoredKey } from './stored-key.js'

/** The states a blind-index search covers. */
export const SEARCHABLE: ReadonlySet<string> = new Set(['staged', 'active', 'decrypt-only'])

/** What a key ring knows of one table's keys. */
export interface TableMeta {
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

/**
 * Builds a table's metadata from its rows.
 * @param acceptActive - records each purpose's single active version; false when it is a refused rollback.
 */
export function buildTableMeta(
  keys: readonly StoredKey[],
  corrupt: readonly CorruptKey[],
  acceptActive: (purpose: KeyPurpose, version: number) => boolean,
  now: () => number,
): TableMeta {
  const active: Partial<Record<KeyPurpose, StoredKey>> = {}
  const search = { data: [] as StoredKey[], index: [] as StoredKey[] }
  const rolledBack = new Set<KeyPurpose>()
  for (const purpose of KEY_PURPOSES) {
    const doubtful = corrupt.filter((c) => (c.purpose ?? purpose) === purpose)
    const actives = keys.filter((k) => k.purpose === purpose && k.state === 'active')
    const only = actives.length === 1 ? actives[0] : undefined
    if (only !== undefined && !acceptActive(purpose, only.version)) rolledBack.add(purpose)
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
  return Object.freeze({
    keys: Object.freeze(keys),
    corrupt: Object.freeze(corrupt),
    rolledBack,
    loadedAt: now(),
    active,
    search,
  })
}

/** The stored version `ref` names (a tombstone included), if `meta` has it. */
export function findVersion(meta: TableMeta, ref: Omit<KeyRef, 'logicalTable'>): StoredKey | undefined {
  return meta.keys.find((k) => k.purpose === ref.purpose && k.version === ref.version)
}

/**
 * The stored version `ref` names, usable for reads.
 * @throws KeyError `KEY_DESTROYED` for a tombstone; a corrupt row's own error; `KEY_NOT_FOUND`.
 */
export function requireVersion(meta: TableMeta, ref: KeyRef): StoredKey {
  const found = findVersion(meta, ref)
  if (found?.state === 'destroyed') throw keyDestroyed(ref.logicalTable)
  if (found !== undefined) return found
  const corrupt = meta.corrupt.find(
    (c) => (c.purpose ?? ref.purpose) === ref.purpose && (c.version ?? ref.version) === ref.version,
  )
  if (corrupt !== undefined) throw corrupt.error
  throw new KeyError('KEY_NOT_FOUND', `No key ${describeKeyRef(ref)} in the key store.`, {
    table: ref.logicalTable,
  })
}

/**
 * Key-name metadata cached for a TTL, with single-flight loads: concurrent callers share one load
 * (and so one key creation). The loader decides what is kept ({@link MetadataCache.set}).
 *
 * Bounded: at most `max` key names (tables, and tenants of tables with per-tenant keys) are held;
 * the least recently used is dropped beyond it and read again from the key store when next
 * needed (one query, no provider call: unwrapped keys live in the key cache). With per-tenant
 * keys an unbounded map would grow with every tenant a process ever touched.
 */
export class MetadataCache {
  readonly #ttl: number
  readonly #now: () => number
  readonly #load: (logicalTable: string) => Promise<TableMeta>
  readonly #meta: LRUCache<string, TableMeta>
  /** Loads in flight: bounded by the concurrent callers, each removed when it settles. */
  readonly #inflight = new Map<string, Promise<TableMeta>>()

  /**
   * @param ttl - how long a key name's metadata is fresh, in ms.
   * @param now - clock in ms.
   * @param load - reads a key name's metadata (and caches it with {@link MetadataCache.set}).
   * @param max - most key names held (a positive integer).
   */
  constructor(
    ttl: number,
    now: () => number,
    load: (logicalTable: string) => Promise<TableMeta>,
    max: number,
  ) {
    this.#ttl = ttl
    this.#now = now
    this.#load = load
    // Freshness is checked against `loadedAt` with the ring's clock, not lru-cache's TTL.
    this.#meta = new LRUCache<string, TableMeta>({ max })
  }

  /** Key names whose metadata is held (fresh or not). */
  get size(): number {
    return this.#meta.size
  }

  /** The table's metadata: cached when fresh (unless `force`), else loaded once for all callers. */
  get(logicalTable: string, force = false): Promise<TableMeta> {
    const cached = this.#meta.get(logicalTable)
    if (!force && cached !== undefined && this.#now() - cached.loadedAt < this.#ttl) {
      return Promise.resolve(cached)
    }
    let pending = this.#inflight.get(logicalTable)
    if (pending === undefined) {
      pending = this.#load(logicalTable)
      this.#inflight.set(logicalTable, pending)
      const settle = (): void => {
        if (this.#inflight.get(logicalTable) === pending) this.#inflight.delete(logicalTable)
      }
      void pending.then(settle, settle)
    }
    return pending
  }

  /** The table's cached metadata when it is fresh; `undefined` otherwise. */
  fresh(logicalTable: string): TableMeta | undefined {
    const meta = this.#meta.get(logicalTable)
    return meta !== undefined && this.#now() - meta.loadedAt < this.#ttl ? meta : undefined
  }

  /** Caches a table's metadata. */
  set(logicalTable: string, meta: TableMeta): void {
    this.#meta.set(logicalTable, meta)
  }

  /**
   * Drops one table's metadata. A load already under way is not joined by later callers (they
   * start a new one): what it read may be from before the change that led here.
   */
  delete(logicalTable: string): void {
    this.#meta.delete(logicalTable)
    this.#inflight.delete(logicalTable)
  }

  /** Drops every table's metadata. */
  clear(): void {
    this.#meta.clear()
  }
}
