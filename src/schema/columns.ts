import { type BlindIndexSpec, blindIndex, type Normalizer } from '../blindindex/blind-index.js'
import { ConfigError } from '../errors.js'
import { type Codec, type CodecKind, codecs } from '../fields/codecs.js'
import { refuseUnknownKeys } from '../option-keys.js'
import { MIGRATION_PHASES, type MigrationPhase } from './migration-phase.js'

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
  /**
   * A second physical column (e.g. `email_bidx_next`, with its own UNIQUE index) that keeps a
   * *unique* index rejecting duplicates through an index-key rotation: odd index key versions
   * are stored in `name`, even ones here; while two versions are live every write fills both,
   * searches probe the active version's column only. Costs one more HMAC per write during a
   * rotation and one more column and index. Unique indexes only. See docs/operations.md.
   * @default none: one column; uniqueness does not hold across versions during a rotation
   */
  readonly rotationSlot?: string
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
  /**
   * Largest plaintext in bytes (once encoded), used by the migration helpers to size MySQL
   * VARBINARY; a longer value is refused on every engine (`CODEC_INVALID_VALUE`) before anything
   * is sent. @default unbounded (BLOB)
   */
  readonly maxBytes?: number
  /**
   * Physical column holding the ciphertext, when it is not the annotated name: the annotated name
   * is the one queries use (`email`), this is where its ciphertext lives (`email_encrypted`). A
   * rename-safe mapping: keys and AAD bind to the logical name, never to this one. Required with
   * {@link ColumnOptions.migration} (the plaintext column keeps the annotated name until it is dropped),
   * and then a new column: the annotated name (but for case too) is refused (`CONFIG_INVALID`), as
   * is a primary-key or context column.
   * @default the annotated name
   */
  readonly storedAs?: string
  /**
   * The phase of this column's migration from a plaintext column of the annotated name (see
   * docs/migrating.md): what this deploy of the application does with both columns. Leave it
   * out for a column that was encrypted from the start.
   * @default none: not under migration
   */
  readonly migration?: MigrationPhase
}

/** The options of a column declared without any: no index names. */
type NoOptions = { readonly index?: undefined }

/** The physical columns of one index option: its name and its rotation slot, if any. */
type IndexColumnsOf<E> = E extends { readonly name: infer N extends string }
  ? N | (E extends { readonly rotationSlot: infer S extends string } ? S : never)
  : never

/** The index column names declared by column options `O` (rotation slots too), as a union of literals. */
export type IndexNamesOf<O> = O extends { readonly index: infer X }
  ? X extends readonly (infer E)[]
    ? IndexColumnsOf<E>
    : IndexColumnsOf<X>
  : never

/**
 * A declared encrypted column: its codec, its indexes and its logical name. Frozen.
 * `I` is the union of its index column names, as far as the compiler saw them (for
 * `Decrypted<>` with `omitBlindIndexes`).
 */
export interface EncryptedColumn<T = unknown, I extends string = string> {
  readonly codec: Codec<T>
  readonly indexes: readonly BlindIndexSpec[]
  readonly logicalName: string | undefined
  readonly migratingFromPlaintext: boolean
  readonly maxBytes: number | undefined
  /** Physical column of the ciphertext when it differs from the annotated name (see {@link ColumnOptions.storedAs}). */
  readonly storedAs: string | undefined
  /** Migration phase from plaintext (see {@link ColumnOptions.migration}). */
  readonly migration: MigrationPhase | undefined
  /** Phantom: the plaintext TypeScript type. */
  readonly __plaintext?: T
  /** Phantom: the index column names. */
  readonly __indexNames?: I
}

/** The keys of {@link IndexOptions}. */
const INDEX_OPTION_NAMES: ReadonlySet<string> = new Set(['name', 'bits', 'normalize', 'rotationSlot'])

/** The keys of {@link ColumnOptions}. */
const COLUMN_OPTION_NAMES: readonly string[] = [
  'index',
  'logicalName',
  'migratingFromPlaintext',
  'maxBytes',
  'storedAs',
  'migration',
]

function column<T, I extends string>(kind: CodecKind, options: ColumnOptions = {}): EncryptedColumn<T, I> {
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new ConfigError('CONFIG_INVALID', `encrypted.${kind}(…): its options must be an object.`)
  refuseUnknownKeys(options, COLUMN_OPTION_NAMES, `encrypted.${kind}(…)`)
  for (const key of ['logicalName', 'storedAs'] as const) {
    const value = options[key]
    if (value !== undefined && (typeof value !== 'string' || value.length === 0))
      throw new ConfigError(
        'CONFIG_INVALID',
        `encrypted.${kind}(…): option ${key} must be a non-empty string.`,
      )
  }
  if (options.index === null)
    throw new ConfigError(
      'CONFIG_INVALID',
      `encrypted.${kind}(…): option index must be an index's options, or a list of them.`,
    )
  if (options.migratingFromPlaintext !== undefined && typeof options.migratingFromPlaintext !== 'boolean')
    throw new ConfigError(
      'CONFIG_INVALID',
      `encrypted.${kind}(…): option migratingFromPlaintext must be true or false (a string such as 'false' would turn plaintext reads on).`,
    )
  const list =
    options.index === undefined ? [] : Array.isArray(options.index) ? options.index : [options.index]
  const indexes = (list as readonly IndexOptions[]).map((o) => {
    // An option this version does not know (`unique: true`) would be ignored: `{ bits: 16,
    // unique: true }` would quietly be a search index.
    const unknown = Object.keys(o ?? {}).filter((k) => !INDEX_OPTION_NAMES.has(k))
    if (unknown.length > 0)
      throw new ConfigError(
        'CONFIG_INVALID',
        `${typeof o?.name === 'string' ? `Blind index '${o.name}'` : 'A blind index (it has no name)'}: unknown option${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (known: ${[...INDEX_OPTION_NAMES].join(', ')}; an index of 256 bits, the default, is the unique one).`,
      )
    const spec = blindIndex({ name: o.name, bits: o.bits, normalize: o.normalize ?? [] })
    if (o.rotationSlot === undefined) return spec
    if (
      spec.kind !== 'unique' ||
      typeof o.rotationSlot !== 'string' ||
      o.rotationSlot.length === 0 ||
      o.rotationSlot === o.name
    ) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `Blind index '${o.name}': rotationSlot must name another column, and only a unique index (bits omitted) takes one.`,
      )
    }
    return Object.freeze({ ...spec, rotationSlot: o.rotationSlot })
  })
  if (options.maxBytes !== undefined && (!Number.isInteger(options.maxBytes) || options.maxBytes <= 0)) {
    throw new ConfigError('CONFIG_INVALID', 'maxBytes must be a positive integer.')
  }
  if (options.migration !== undefined && !MIGRATION_PHASES.includes(options.migration)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `migration must be one of ${MIGRATION_PHASES.join(', ')}, got '${String(options.migration)}'.`,
    )
  }
  if (options.migration !== undefined && options.storedAs === undefined) {
    throw new ConfigError(
      'CONFIG_INVALID',
      'A column under migration needs storedAs: the encrypted column beside the plaintext one (e.g. email_encrypted).',
    )
  }
  return Object.freeze({
    codec: codecs[kind] as unknown as Codec<T>,
    indexes: Object.freeze(indexes),
    logicalName: options.logicalName,
    migratingFromPlaintext: options.migratingFromPlaintext ?? false,
    maxBytes: options.maxBytes,
    storedAs: options.storedAs,
    migration: options.migration,
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
  text: <const O extends ColumnOptions = NoOptions>(options?: O) =>
    column<string, IndexNamesOf<O>>('text', options),
  /** A JS number (IEEE-754 double; NaN refused, -0 stored as 0). */
  number: <const O extends ColumnOptions = NoOptions>(options?: O) =>
    column<number, IndexNamesOf<O>>('number', options),
  /** A bigint. */
  bigint: <const O extends ColumnOptions = NoOptions>(options?: O) =>
    column<bigint, IndexNamesOf<O>>('bigint', options),
  /** A boolean. */
  boolean: <const O extends ColumnOptions = NoOptions>(options?: O) =>
    column<boolean, IndexNamesOf<O>>('boolean', options),
  /**
   * A `Date`, stored as an **instant** (milliseconds since 1970-01-01T00:00:00Z), not as a
   * calendar day: `new Date('1990-05-17')` is midnight UTC, which a reader west of UTC shows as
   * May 16. For a date of birth or any day without a time, use {@link encrypted.calendarDate}.
   */
  date: <const O extends ColumnOptions = NoOptions>(options?: O) =>
    column<Date, IndexNamesOf<O>>('date', options),
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
  calendarDate: <const O extends ColumnOptions = NoOptions>(options?: O) =>
    column<string, IndexNamesOf<O>>('calendarDate', options),
  /**
   * Any JSON value, encoded canonically (sorted keys), so indexes are stable. Arrays and objects
   * may nest at most 1000 levels deep (`[[1]]` is 2 levels): a deeper value is refused
   * with `CodecError` `CODEC_INVALID_VALUE` before anything is encrypted or sent. With an explicit
   * `T` and an index, the compiler cannot see the index name: with `omitBlindIndexes`, write
   * `encrypted.json<T, { index: { name: 'x_bidx' } }>(…)` so `Decrypted<>` drops it too.
   */
  json: <T = unknown, const O extends ColumnOptions = NoOptions>(options?: O) =>
    column<T, IndexNamesOf<O>>('json', options),
  /** Raw bytes. */
  bytes: <const O extends ColumnOptions = NoOptions>(options?: O) =>
    column<Buffer, IndexNamesOf<O>>('bytes', options),
})
