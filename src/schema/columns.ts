import { type BlindIndexSpec, blindIndex, type Normalizer } from '../blindindex/blind-index.js'
import { ConfigError } from '../errors.js'
import { type Codec, type CodecKind, codecs } from '../fields/codecs.js'

/** Options of one blind index declared on a column. */
export interface IndexOptions {
  /** Physical column that holds the index, e.g. `email_bidx`. Also names the index key derivation. */
  readonly name: string
  /**
   * Bits kept of the HMAC. Omitted (or 256): a *unique* index — exact, may carry a UNIQUE
   * constraint, reveals which rows share a value. Fewer: a *search* index — leaks less, returns
   * false positives that the plugin removes by decrypting before rows are returned (so it cannot
   * serve `<>`, UPDATE/DELETE filters, LIMIT or aggregates). See `recommendIndexBits`.
   * @default 256
   */
  readonly bits?: number
  /** Normalizers applied to string values before indexing (and before false-positive removal). @default [] */
  readonly normalize?: readonly Normalizer[]
}

/** Options shared by every encrypted column. */
export interface ColumnOptions {
  /** One blind index (or several) so the column can be searched by equality. @default none: not searchable */
  readonly index?: IndexOptions | readonly IndexOptions[]
  /**
   * Logical name bound into the key derivation and the AAD. Defaults to the physical column name;
   * set it before renaming a column so existing ciphertexts keep decrypting.
   */
  readonly logicalName?: string
  /**
   * The column is being migrated from plaintext: values that are not our ciphertext are returned
   * as they are (and counted) instead of failing. Turn it off once `verify` reports no plaintext.
   * @default false
   */
  readonly migratingFromPlaintext?: boolean
  /** Largest plaintext in bytes, used by the migration helpers to size MySQL VARBINARY. @default unbounded (BLOB) */
  readonly maxBytes?: number
}

/** A declared encrypted column: its codec, its indexes and its logical name. Frozen. */
export interface EncryptedColumn<T = unknown> {
  readonly codec: Codec<T>
  readonly indexes: readonly BlindIndexSpec[]
  readonly logicalName: string | undefined
  readonly migratingFromPlaintext: boolean
  readonly maxBytes: number | undefined
  /** Phantom: the plaintext TypeScript type. */
  readonly __plaintext?: T
}

function column<T>(kind: CodecKind, options: ColumnOptions = {}): EncryptedColumn<T> {
  const list =
    options.index === undefined ? [] : Array.isArray(options.index) ? options.index : [options.index]
  const indexes = (list as readonly IndexOptions[]).map((o) =>
    blindIndex({ name: o.name, bits: o.bits, normalize: o.normalize ?? [] }),
  )
  if (options.maxBytes !== undefined && (!Number.isInteger(options.maxBytes) || options.maxBytes <= 0)) {
    throw new ConfigError('CONFIG_INVALID', 'maxBytes must be a positive integer.')
  }
  return Object.freeze({
    codec: codecs[kind] as unknown as Codec<T>,
    indexes: Object.freeze(indexes),
    logicalName: options.logicalName,
    migratingFromPlaintext: options.migratingFromPlaintext ?? false,
    maxBytes: options.maxBytes,
  })
}

/**
 * Column annotations. Each returns a frozen descriptor for `encryptedSchema`.
 *
 * @example
 * ```ts
 * encrypted.text({ index: { name: 'email_bidx', normalize: ['trim', 'lowercase'] } })
 * // insert: "email" = $1 (ciphertext), "email_bidx" = $2 (HMAC)
 * // where email = 'a@x.io'  →  where "email_bidx" in ($1)
 * ```
 */
export const encrypted = Object.freeze({
  /** A string (UTF-8). */
  text: (options?: ColumnOptions) => column<string>('text', options),
  /** A JS number (IEEE-754 double; NaN refused, -0 stored as 0). */
  number: (options?: ColumnOptions) => column<number>('number', options),
  /** A bigint. */
  bigint: (options?: ColumnOptions) => column<bigint>('bigint', options),
  /** A boolean. */
  boolean: (options?: ColumnOptions) => column<boolean>('boolean', options),
  /**
   * A `Date`, stored as an **instant** (milliseconds since 1970-01-01T00:00:00Z), not as a
   * calendar day: `new Date('1990-05-17')` is midnight UTC, which a reader west of UTC shows as
   * May 16. For a date of birth or any day without a time, use {@link encrypted.calendarDate}.
   */
  date: (options?: ColumnOptions) => column<Date>('date', options),
  /**
   * A calendar day as a `'YYYY-MM-DD'` string (a date of birth): no time, no time zone, the same
   * string back in every time zone. Years 0001–9999; a day that does not exist (`'2023-02-29'`)
   * or another shape is refused with `CodecError` `CODEC_INVALID_VALUE`. Indexable.
   *
   * @example
   * ```ts
   * encrypted.calendarDate({ index: { name: 'dob_bidx' } })
   * // where dob = '1990-05-17'  →  where "dob_bidx" in ($1)
   * ```
   */
  calendarDate: (options?: ColumnOptions) => column<string>('calendarDate', options),
  /** Any JSON value, encoded canonically (sorted keys), so indexes are stable. */
  json: <T = unknown>(options?: ColumnOptions) => column<T>('json', options),
  /** Raw bytes. */
  bytes: (options?: ColumnOptions) => column<Buffer>('bytes', options),
})
