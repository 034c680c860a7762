import { LRUCache } from 'lru-cache'
import { ConfigError, KeyError } from '../errors.js'
import type { Destroyable, KeyMaterial } from '../keys/key-material.js'
import {
  type FieldLocation,
  LABEL_AAD,
  LABEL_COLUMN,
  LABEL_RECORD,
  lengthPrefixed,
  MAX_HEADER_LENGTH,
  SALT_LENGTH,
} from './format.js'
import { hkdfSha256 } from './hkdf.js'
import { takeRandom } from './random-pool.js'

/**
 * Encryptions under one (salt, subkey) epoch before a writer draws a new salt. 2^16 keeps each
 * subkey's invocation count far below the 2^32 that NIST SP 800-38D §8.3 allows one key with
 * random IVs, while one HKDF is amortised over 65536 values (docs/security.md).
 */
export const EPOCH_MESSAGES = 0x1_0000

/**
 * Subkeys a reader keeps per column: 1024 × 32 bytes = 32 KiB per column at most. A reader that
 * decrypts rows from more than 1024 epochs in turn derives again (one HKDF, two HMACs, ~2 µs).
 */
export const READER_CACHE_MAX = 1024

/** A writer's current subkey: the salt to store in the header and the key to encrypt with. */
export interface WriterSubkey {
  readonly salt: Buffer
  readonly subkey: Buffer
}

interface Epoch extends WriterSubkey {
  readonly saltValue: number
  used: number
}

/** Counters for tests and benchmarks; not part of the public API. */
export interface ColumnKeyStats {
  /** Salts a writer drew (epochs started). */
  readonly saltsDrawn: number
  /** Record subkeys derived by HKDF (writer epochs + reader cache misses). */
  readonly subkeysDerived: number
}

/**
 * Everything derived from one table data key for one column: the column key, the writer's epoch
 * and the reader's subkey cache. Stored in the key's `derived` slots, so {@link ColumnKeys.destroy}
 * runs (and zeroes every buffer here) when the table key is evicted from the key cache.
 */
export class ColumnKeys implements Destroyable {
  /** `"kfe/v1/aad" ‖ lp(table) ‖ lp(column)`: the part of the AAD fixed per column. */
  readonly aadNames: Buffer
  /**
   * Scratch for the AAD without context: {@link MAX_HEADER_LENGTH} bytes for the header, then
   * `aadNames ‖ 00 00` (an empty context). The header is written right-aligned per call, so the
   * AAD costs no allocation. Not secret: header and names are stored or configuration.
   */
  readonly #aad: Buffer
  /** Views of {@link ColumnKeys.#aad} by header length (index = header length, 4..8). */
  readonly #aadViews: Buffer[] = []
  readonly #location: FieldLocation
  readonly #columnKey: Buffer
  #epoch: Epoch | undefined
  readonly #readers: LRUCache<number, Buffer>
  #destroyed = false
  #saltsDrawn = 0
  #subkeysDerived = 0

  /** The `KeyMaterial.derived` slot of a column. Length-prefixed, so no two (table, column) pairs collide. */
  static slot(table: string, column: string): string {
    return `kfe/v1/column:${table.length}:${table}:${column}`
  }

  /**
   * Derives the column key: HKDF-SHA256(ikm = data key, salt = empty,
   * info = "kfe/v1/column" ‖ lp(table) ‖ lp(column), L = 32).
   *
   * @throws ConfigError `CONFIG_INVALID` when a name is empty, not well-formed, or over 65535 bytes.
   */
  constructor(dataKey: Buffer, table: string, column: string) {
    this.#location = { table, column }
    const names = Buffer.concat([
      lengthPrefixed(table, 'table name', this.#location),
      lengthPrefixed(column, 'column name', this.#location),
    ])
    this.aadNames = Buffer.concat([LABEL_AAD, names])
    this.#aad = Buffer.alloc(MAX_HEADER_LENGTH + this.aadNames.length + 2) // ends in 00 00: no context
    this.aadNames.copy(this.#aad, MAX_HEADER_LENGTH)
    for (let h = 1 + 1 + SALT_LENGTH; h <= MAX_HEADER_LENGTH; h++) {
      this.#aadViews[h] = this.#aad.subarray(MAX_HEADER_LENGTH - h)
    }
    this.#columnKey = hkdfSha256(dataKey, Buffer.alloc(0), Buffer.concat([LABEL_COLUMN, names]), 32)
    // Bounded by maxSize (one per subkey), not max: lru-cache allocates `max` slots up front,
    // ~180 µs per column key, paid again for each tenant's key of each column.
    this.#readers = new LRUCache<number, Buffer>({
      maxSize: READER_CACHE_MAX,
      sizeCalculation: () => 1,
      dispose: (subkey) => subkey.fill(0),
    })
  }

  /** HKDF-SHA256(ikm = column key, salt = the 2 salt bytes, info = "kfe/v1/record", L = 32). */
  #derive(salt: Buffer): Buffer {
    this.#subkeysDerived++
    return hkdfSha256(this.#columnKey, salt, LABEL_RECORD, 32)
  }

  #alive(): void {
    if (this.#destroyed) {
      throw new KeyError('KEY_NOT_FOUND', 'This key was evicted from the cache and wiped.', this.#location)
    }
  }

  /**
   * The subkey for the next encryption. Counts it against the current epoch and, once an epoch
   * has served {@link EPOCH_MESSAGES} encryptions, starts a new one with a fresh random salt.
   * The old epoch's subkey moves to the reader cache: rows just written are often read back.
   */
  nextWriter(): WriterSubkey {
    this.#alive()
    let epoch = this.#epoch
    if (epoch === undefined || epoch.used >= EPOCH_MESSAGES) {
      if (epoch !== undefined) this.#retire(epoch)
      const salt = Buffer.from(takeRandom(SALT_LENGTH)) // copy: the pool view is reused
      this.#saltsDrawn++
      epoch = { salt, saltValue: salt.readUInt16BE(0), subkey: this.#derive(salt), used: 0 }
      this.#epoch = epoch
    }
    epoch.used++
    return epoch
  }

  #retire(epoch: Epoch): void {
    if (this.#readers.has(epoch.saltValue)) epoch.subkey.fill(0)
    else this.#readers.set(epoch.saltValue, epoch.subkey)
  }

  /**
   * The subkey of `salt`, for decryption (or for an injected salt in test vectors). Served from
   * the writer's epoch or the bounded reader cache; derived once per salt on a miss.
   *
   * The returned buffer may be zeroed when it leaves the cache: use it at once (node:crypto
   * copies a key into its cipher context), never keep it.
   */
  subkeyFor(salt: Buffer): Buffer {
    return this.subkeyAt(salt, 0)
  }

  /**
   * {@link ColumnKeys.subkeyFor} of the 2 salt bytes at `at` in `bytes` (a ciphertext), without
   * slicing them out unless the subkey must be derived.
   */
  subkeyAt(bytes: Uint8Array, at: number): Buffer {
    this.#alive()
    const value = (((bytes[at] as number) << 8) | (bytes[at + 1] as number)) >>> 0
    const epoch = this.#epoch
    if (epoch !== undefined && epoch.saltValue === value) return epoch.subkey
    let subkey = this.#readers.get(value)
    if (subkey === undefined) {
      subkey = this.#derive(Buffer.from(bytes.subarray(at, at + SALT_LENGTH)))
      this.#readers.set(value, subkey)
    }
    return subkey
  }

  /**
   * The AAD of a value with no context: `header ‖ aadNames ‖ 00 00`, where the header is the
   * first `headerLength` bytes of `source`. Returns a view of a per-column scratch buffer, valid
   * until the next call: pass it to `setAAD` at once (it is consumed synchronously).
   *
   * @param source - Bytes starting with the header (the ciphertext being written or read).
   * @param headerLength - Bytes of header, 4..{@link MAX_HEADER_LENGTH}.
   */
  aadWithoutContext(source: Uint8Array, headerLength: number): Buffer {
    const start = MAX_HEADER_LENGTH - headerLength
    const aad = this.#aad
    for (let i = 0; i < headerLength; i++) aad[start + i] = source[i] as number
    return this.#aadViews[headerLength] as Buffer
  }

  /** Counters; for tests and benchmarks. */
  stats(): ColumnKeyStats {
    return { saltsDrawn: this.#saltsDrawn, subkeysDerived: this.#subkeysDerived }
  }

  /** Every key buffer held now (column key and subkeys); for the zeroization test only. */
  heldKeyBuffers(): Buffer[] {
    const held = [this.#columnKey, ...this.#readers.values()]
    if (this.#epoch !== undefined) held.push(this.#epoch.subkey)
    return held
  }

  /** Zeroes the column key and every subkey. Idempotent. */
  destroy(): void {
    if (this.#destroyed) return
    this.#destroyed = true
    this.#columnKey.fill(0)
    this.#epoch?.subkey.fill(0)
    this.#epoch = undefined
    for (const subkey of this.#readers.values()) subkey.fill(0)
    this.#readers.clear()
  }
}

/**
 * table → column → ColumnKeys per data key: the hot path then builds no slot string. The key's
 * own `derived` slots still own these objects and destroy them with the key; this map only
 * finds them faster, and is consulted only while the key is alive.
 */
const columnCache = new WeakMap<KeyMaterial, Map<string, Map<string, ColumnKeys>>>()

/**
 * The {@link ColumnKeys} of `key` for one column, derived on first use and kept in the key's
 * `derived` slots (destroyed with the key).
 * @param aad - The column's table and column (a field AAD; its context is not read).
 * @throws ConfigError `CONFIG_INVALID` when either name is empty or not a string.
 * @throws KeyError `KEY_NOT_FOUND` for a destroyed key.
 */
export function columnKeysOf(
  key: KeyMaterial,
  aad: { readonly table: string; readonly column: string },
): ColumnKeys {
  const cached = columnCache.get(key)?.get(aad?.table)?.get(aad.column)
  if (cached !== undefined && !key.destroyed) return cached
  if (
    typeof aad?.table !== 'string' ||
    typeof aad.column !== 'string' ||
    aad.table === '' ||
    aad.column === ''
  ) {
    throw new ConfigError('CONFIG_INVALID', 'A field AAD needs a non-empty table and column name.')
  }
  const keys = key.derived(
    ColumnKeys.slot(aad.table, aad.column),
    (bytes) => new ColumnKeys(bytes, aad.table, aad.column),
  )
  let byTable = columnCache.get(key)
  if (byTable === undefined) {
    byTable = new Map()
    columnCache.set(key, byTable)
  }
  let byColumn = byTable.get(aad.table)
  if (byColumn === undefined) {
    byColumn = new Map()
    byTable.set(aad.table, byColumn)
  }
  byColumn.set(aad.column, keys)
  return keys
}
