import { ConfigError } from '../errors.js'
import { assertNormalizer, type Normalizer } from './normalizers.js'

export type { Normalizer, NormalizerName } from './normalizers.js'

/** Bits of a unique (full-length) index: all of HMAC-SHA256. */
export const UNIQUE_INDEX_BITS = 256
/** Fewest bits a search index may keep. Fewer would make almost every query a scan. */
export const MIN_SEARCH_INDEX_BITS = 8
/** Most bits a search index may keep; 256 is a unique index. */
export const MAX_SEARCH_INDEX_BITS = 255
/** Most columns in a compound index: the count is framed in one byte (see `computeBlindIndex`). */
export const MAX_INDEX_COLUMNS = 255
/**
 * Longest index name, in UTF-8 bytes. The name is also the default physical column, and
 * PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN − 1); MySQL allows 64.
 */
export const MAX_INDEX_NAME_BYTES = 63

/**
 * A declared blind index: frozen, made by {@link blindIndex}.
 *
 * The index name, the table and the index key select the HMAC subkey, so changing `name`,
 * `bits`, `normalize` or `columns` of an index that already has rows makes those rows unfindable
 * until they are re-indexed: declare a new index (a new name) instead.
 */
export interface BlindIndexSpec {
  /** The index name; also the default physical column, e.g. `'email_bidx'`. Part of the subkey derivation. */
  readonly name: string
  /**
   * `unique`: all 256 bits, exact (no false positives), may carry a UNIQUE constraint, but shows
   * which rows hold equal plaintexts. `search`: truncated to `bits`, several plaintexts share one
   * index value, so it leaks less and has false positives the plugin removes after decryption.
   */
  readonly kind: 'unique' | 'search'
  /** Bits kept: 256 for `unique`, 8..255 for `search`. */
  readonly bits: number
  /** Applied in order, to string values only (see `normalizeValue`). */
  readonly normalize: readonly Normalizer[]
  /**
   * Logical columns the index covers. Empty: the column the index is declared on (the schema
   * builder fills it in). More than one: a compound index over those columns, in this order.
   */
  readonly columns: readonly string[]
  /**
   * Second physical column of a unique index that keeps its UNIQUE constraint through an index-key
   * rotation (set by the schema builder from `IndexOptions.rotationSlot`; see docs/operations.md).
   * Odd index key versions live in `name`, even ones in this column. Not part of the derivation.
   */
  readonly rotationSlot?: string
}

/** Options of {@link blindIndex}. */
export interface BlindIndexOptions {
  /** Index name and default physical column; 1..63 UTF-8 bytes, no NUL. */
  readonly name: string
  /**
   * Bits to keep. Omit (or 256) for a unique index; 8..255 for a search index. Fewer bits leak
   * less but return more false positives (each is fetched and decrypted, then dropped): size it
   * with `recommendIndexBits`.
   * @default 256 (unique)
   */
  readonly bits?: number
  /**
   * Normalizers applied, in order, to string values before indexing. They define what "equal"
   * means for searches on this index.
   * @default [] (exact bytes)
   */
  readonly normalize?: readonly Normalizer[]
  /**
   * Logical columns, for a compound index (two or more, in the order the index hashes them).
   * @default [] (the column the index is declared on)
   */
  readonly columns?: readonly string[]
}

/**
 * Declares a blind index: HMAC-SHA256 of the normalized, encoded value under a per-index subkey,
 * kept whole (`unique`) or truncated to `bits` (`search`).
 *
 * @param options - see {@link BlindIndexOptions}
 * @returns a frozen {@link BlindIndexSpec}
 * @throws ConfigError `CONFIG_INVALID` for an empty or over-long name, bits outside 8..256 or not an
 *   integer, an unknown normalizer, or invalid or duplicate columns
 * @example
 * ```ts
 * const email = blindIndex({ name: 'email_bidx', normalize: ['trim', 'lowercase'] })      // unique
 * const ssn = blindIndex({ name: 'ssn_bidx', bits: 32, normalize: ['digits'] })          // search
 * // db.selectFrom('users').selectAll().where('email', '=', 'A@x.io') is sent as
 * //   select * from "users" where "email_bidx" in ($1)   -- $1 = the index of 'a@x.io', one per live key version
 * ```
 */
export function blindIndex(options: BlindIndexOptions): BlindIndexSpec {
  const { name } = options
  if (typeof name !== 'string' || name.length === 0 || name.includes('\0')) {
    throw new ConfigError('CONFIG_INVALID', 'A blind index needs a non-empty name without NUL characters.')
  }
  if (Buffer.byteLength(name, 'utf8') > MAX_INDEX_NAME_BYTES) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `Blind index name '${name}' is longer than ${MAX_INDEX_NAME_BYTES} UTF-8 bytes (the identifier limit of PostgreSQL).`,
    )
  }

  const bits = options.bits ?? UNIQUE_INDEX_BITS
  if (
    !Number.isInteger(bits) ||
    (bits !== UNIQUE_INDEX_BITS && (bits < MIN_SEARCH_INDEX_BITS || bits > MAX_SEARCH_INDEX_BITS))
  ) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `Blind index '${name}': bits must be an integer from ${MIN_SEARCH_INDEX_BITS} to ${MAX_SEARCH_INDEX_BITS} (search) or ${UNIQUE_INDEX_BITS} (unique), got ${String(bits)}.`,
    )
  }

  const normalize = options.normalize ?? []
  if (!Array.isArray(normalize)) {
    throw new ConfigError('CONFIG_INVALID', `Blind index '${name}': normalize must be an array.`)
  }
  for (const n of normalize) assertNormalizer(n, name)

  const columns = options.columns ?? []
  if (!Array.isArray(columns) || columns.length > MAX_INDEX_COLUMNS) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `Blind index '${name}': columns must be an array of at most ${MAX_INDEX_COLUMNS} column names.`,
    )
  }
  for (const c of columns) {
    if (typeof c !== 'string' || c.length === 0) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `Blind index '${name}': every column must be a non-empty string.`,
      )
    }
  }
  if (new Set(columns).size !== columns.length) {
    throw new ConfigError('CONFIG_INVALID', `Blind index '${name}': a column appears twice in columns.`)
  }

  return Object.freeze({
    name,
    kind: bits === UNIQUE_INDEX_BITS ? 'unique' : 'search',
    bits,
    normalize: Object.freeze([...normalize]),
    columns: Object.freeze([...columns]),
  })
}

/**
 * Bytes of one stored index value: `ceil(bits / 8)`. Size the column with it (`bytea`,
 * `BINARY(n)`/`VARBINARY(n)`).
 * @param spec - the blind index
 * @returns 32 for a unique index; 1..32 for a search index
 */
export function indexLength(spec: Pick<BlindIndexSpec, 'bits'>): number {
  return Math.ceil(spec.bits / 8)
}

/**
 * How many encoded parts one index value hashes: 1 for a single-column index, the column count
 * for a compound one.
 * @param spec - the blind index
 * @returns 1..255
 */
export function indexArity(spec: Pick<BlindIndexSpec, 'columns'>): number {
  return Math.max(1, spec.columns.length)
}
