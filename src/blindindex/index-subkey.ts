import { hkdfSync } from 'node:crypto'
import { BlindIndexError, KeyError } from '../errors.js'
import type { Destroyable, KeyMaterial } from '../keys/key-material.js'

/** HKDF `info` label of blind-index subkeys, format version 1. Never change it: old indexes use it. */
export const BLIND_INDEX_INFO_LABEL = 'kfe/v1/bidx'

/** Bytes of a per-index subkey: SHA-256's output length, the HMAC-SHA256 key length NIST SP 800-107 §5.3.4 asks for. */
export const INDEX_SUBKEY_BYTES = 32

// Node's hkdfSync refuses an info longer than 1024 bytes (OpenSSL's limit).
const MAX_INFO_BYTES = 1024

/**
 * The HMAC key of one blind index of one table under one index key version. Owned by the
 * {@link KeyMaterial} it came from: destroying that key zeroes this subkey too.
 */
export class IndexSubkey implements Destroyable {
  readonly #key: Buffer
  #destroyed = false

  /** Takes ownership of `key`; it is zeroed on {@link destroy}. */
  constructor(key: Buffer) {
    this.#key = key
  }

  /** The 32 subkey bytes. Do not keep a copy: it would outlive {@link destroy}. */
  get key(): Buffer {
    if (this.#destroyed) {
      throw new KeyError('KEY_NOT_FOUND', 'This blind-index subkey was wiped with its index key.')
    }
    return this.#key
  }

  /** Zeroes the subkey. Idempotent. */
  destroy(): void {
    this.#destroyed = true
    this.#key.fill(0)
  }

  /** Redacted: a subkey never reaches JSON. */
  toJSON(): unknown {
    return '[redacted]'
  }

  /** Redacted: a subkey never reaches a log line. */
  toString(): string {
    return 'IndexSubkey([redacted])'
  }
}

/** `lp(s)`: 2-byte big-endian byte length ‖ UTF-8 bytes of `s`. */
function lengthPrefixed(s: string, what: string): Buffer {
  const bytes = Buffer.from(s, 'utf8')
  if (bytes.length === 0 || bytes.length > 0xffff) {
    throw new BlindIndexError('INDEX_INVALID', `The ${what} of a blind index must be 1..65535 UTF-8 bytes.`)
  }
  const out = Buffer.alloc(2 + bytes.length)
  out.writeUInt16BE(bytes.length, 0)
  bytes.copy(out, 2)
  return out
}

/**
 * The HKDF `info` of one index: `"kfe/v1/bidx" ‖ lp(table) ‖ lp(indexName)`, where lp is a 2-byte
 * big-endian length then UTF-8. The length prefixes keep ("ab", "c") and ("a", "bc") apart.
 * @param table - logical table (the index key domain)
 * @param indexName - the index name
 * @throws BlindIndexError `INDEX_INVALID` for an empty table/name or an info over 1024 bytes
 */
export function indexSubkeyInfo(table: string, indexName: string): Buffer {
  const info = Buffer.concat([
    Buffer.from(BLIND_INDEX_INFO_LABEL, 'ascii'),
    lengthPrefixed(table, 'table name'),
    lengthPrefixed(indexName, 'name'),
  ])
  if (info.length > MAX_INFO_BYTES) {
    throw new BlindIndexError(
      'INDEX_INVALID',
      'Table and index names of a blind index are too long together.',
      {
        table,
      },
    )
  }
  return info
}

/**
 * The subkey of index `indexName` of `table`: HKDF-SHA256 (RFC 5869) with ikm = the index key,
 * an empty salt (RFC 5869 §3.1: the ikm is already a uniformly random key, so no salt is needed)
 * and info = {@link indexSubkeyInfo}, L = 32. Derived once per (key version, table, index) and
 * cached on the key, so the hot path is one HMAC per value with no HKDF.
 *
 * @param indexKey - an index key (`ref.purpose === 'index'`)
 * @param table - logical table (the index key domain)
 * @param indexName - the index name
 * @returns the cached subkey, destroyed together with `indexKey`
 * @throws BlindIndexError `WRONG_KEY` when `indexKey` is not an index key (e.g. a data key)
 * @throws BlindIndexError `INDEX_INVALID` for an empty or over-long table or index name
 * @throws KeyError `KEY_NOT_FOUND` when `indexKey` was already destroyed
 */
export function indexSubkey(indexKey: KeyMaterial, table: string, indexName: string): IndexSubkey {
  if (indexKey.ref.purpose !== 'index') {
    // Data keys and index keys are separate and rotate separately (DESIGN.md §2); using a data
    // key here would tie equality search to data-key rotation.
    throw new BlindIndexError(
      'WRONG_KEY',
      `A blind index needs an index key, got a ${indexKey.ref.purpose} key (${indexKey.ref.logicalTable} v${indexKey.ref.version}).`,
      { table },
    )
  }
  const cached = subkeyCache.get(indexKey)?.get(table)?.get(indexName)
  if (cached !== undefined && !indexKey.destroyed) return cached
  // One key may serve several tables (a shared index key domain), so the slot names the table
  // too; JSON keeps (table, name) pairs unambiguous.
  const slot = `bidx:${JSON.stringify([table, indexName])}`
  const subkey = indexKey.derived(slot, (ikm) => {
    const info = indexSubkeyInfo(table, indexName)
    return new IndexSubkey(Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), info, INDEX_SUBKEY_BYTES)))
  })
  let byTable = subkeyCache.get(indexKey)
  if (byTable === undefined) {
    byTable = new Map()
    subkeyCache.set(indexKey, byTable)
  }
  let byName = byTable.get(table)
  if (byName === undefined) {
    byName = new Map()
    byTable.set(table, byName)
  }
  byName.set(indexName, subkey)
  return subkey
}

/**
 * table → index name → subkey per index key, so the hot path builds no slot string (one HMAC per
 * value is all that is left). The key's `derived` slots still own and destroy the subkeys; this
 * map is consulted only while the key is alive.
 */
const subkeyCache = new WeakMap<KeyMaterial, Map<string, Map<string, IndexSubkey>>>()
