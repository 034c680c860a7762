/**
 * Every error this library throws is a {@link FieldEncryptionError} with a stable string `code`.
 * Branch on `code` (or `instanceof` a subclass), never on `message`: messages may be reworded,
 * codes never change meaning. The full list lives in docs/errors.md.
 *
 * No message or field of any error carries plaintext of an annotated column, key bytes or a
 * whole ciphertext.
 */

/** Every stable error code. docs/errors.md describes each one. */
export type ErrorCode =
  // configuration
  | 'CONFIG_INVALID'
  | 'MIGRATION_PHASE_CONFLICT'
  | 'WEAK_KEY'
  // codecs (src/fields)
  | 'CODEC_INVALID_VALUE'
  | 'CODEC_MISMATCH'
  // ciphertext format (src/fields)
  | 'FORMAT_UNKNOWN_VERSION'
  | 'FORMAT_TRUNCATED'
  | 'FORMAT_INVALID'
  | 'DECRYPT_AUTH_FAILED'
  | 'WRONG_KEY'
  | 'NOT_CIPHERTEXT'
  // blind indexes (src/blindindex)
  | 'INDEX_INVALID'
  // keys (src/keys)
  | 'KEY_NOT_FOUND'
  | 'KEY_STORE_ERROR'
  | 'KEYS_MISSING'
  | 'KEY_STORE_CORRUPT'
  | 'KEY_VERSION_MISMATCH'
  | 'KEY_ROLLBACK'
  | 'KEY_CHECK_FAILED'
  | 'KEY_STATE_INVALID'
  | 'INDEX_SLOT_CONFLICT'
  | 'KEY_DESTROYED'
  | 'PROVIDER_UNAVAILABLE'
  | 'PROVIDER_THROTTLED'
  | 'PROVIDER_ACCESS_DENIED'
  | 'PROVIDER_KEY_DISABLED'
  | 'PROVIDER_INVALID_CIPHERTEXT'
  | 'PROVIDER_ERROR'
  | 'UNWRAP_FAILED'
  // plugin (src/plugin)
  | 'QUERY_REFUSED'
  | 'AMBIGUOUS_COLUMN'
  | 'UNRESOLVED_VALUE'
  | 'PLAINTEXT_WRITE'
  | 'PLAINTEXT_SEARCH'
  | 'DIALECT_NOT_WRAPPED'
  | 'CONTEXT_MISSING'
  | 'UNIQUE_VIOLATION'
  | 'TENANT_REQUIRED'
  | 'TENANT_INVALID'
  // schema verification (src/schema)
  | 'SCHEMA_MISMATCH'
  // operations (src/ops)
  | 'JOB_PAUSED'
  | 'RETIRE_REFUSED'
  | 'RETIRE_TOO_EARLY'
  | 'JOB_TARGET_CHANGED'
  | 'ROTATION_REFUSED'
  | 'OPS_INVALID'
  | 'MIGRATION_REFUSED'

/** Options shared by every error constructor. */
export interface FieldEncryptionErrorOptions {
  /** The underlying error, if any. */
  readonly cause?: unknown
  /** Logical table the failure concerns, where one applies. */
  readonly table?: string | undefined
  /** Logical column the failure concerns, where one applies. */
  readonly column?: string | undefined
}

/** Base class of every error this library throws. */
/**
 * Marks the errors of this library across its copies in one process: a `kfe.config.cjs` loads the
 * CommonJS build while `kfe` runs the ESM one, and `instanceof` sees only its own copy's classes.
 */
const BRAND = Symbol.for('kysely-field-encryption.error')

/**
 * Whether `error` is a {@link FieldEncryptionError} of any copy of this library in the process
 * (its ESM or CommonJS build), not only of this one as `instanceof` tells.
 */
export function isFieldEncryptionError(error: unknown): error is FieldEncryptionError {
  return (
    error instanceof FieldEncryptionError ||
    (typeof error === 'object' && error !== null && (error as Record<symbol, unknown>)[BRAND] === true)
  )
}

export class FieldEncryptionError extends Error {
  /** Stable, machine-readable code; see docs/errors.md. */
  readonly code: ErrorCode
  /** Logical table concerned, if any. */
  readonly table: string | undefined
  /** Logical column concerned, if any. */
  readonly column: string | undefined

  constructor(code: ErrorCode, message: string, options: FieldEncryptionErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.code = code
    this.table = options.table
    this.column = options.column
    Object.defineProperty(this, BRAND, { value: true })
  }
}

/** Invalid configuration: a schema, a key, an option. */
export class ConfigError extends FieldEncryptionError {}

/** A value could not be encoded or decoded by a column's codec. */
export class CodecError extends FieldEncryptionError {}

/** A ciphertext could not be parsed or authenticated. */
export class DecryptionError extends FieldEncryptionError {
  /**
   * The row context the value was read with (context column → canonical value), when its table
   * binds one (`context` table option). Context columns are plaintext columns, never encrypted.
   */
  readonly rowContext: Readonly<Record<string, string>> | undefined

  constructor(
    code: ErrorCode,
    message: string,
    options: FieldEncryptionErrorOptions & { rowContext?: Readonly<Record<string, string>> } = {},
  ) {
    super(code, message, options)
    this.rowContext = options.rowContext
  }
}

/** A blind index could not be computed. */
export class BlindIndexError extends FieldEncryptionError {}

/** A key could not be found, loaded, unwrapped or stored. */
export class KeyError extends FieldEncryptionError {}

/** A key provider (KMS, HSM, local) failed or refused. */
export class KeyProviderError extends KeyError {
  /** The provider's id (KEK id), never key material. */
  readonly providerId: string | undefined

  constructor(
    code: ErrorCode,
    message: string,
    options: FieldEncryptionErrorOptions & { providerId?: string } = {},
  ) {
    super(code, message, options)
    this.providerId = options.providerId
  }
}

/** The plugin refused a query it cannot run safely, or a query tried to bypass it. */
export class QueryRefusedError extends FieldEncryptionError {
  /** The SQL operator or construct that was refused, e.g. `like` or `order by`. */
  readonly operator: string | undefined
  /** What to do instead. */
  readonly hint: string | undefined

  constructor(
    code: ErrorCode,
    message: string,
    options: FieldEncryptionErrorOptions & { operator?: string; hint?: string } = {},
  ) {
    super(code, options.hint === undefined ? message : `${message} Hint: ${options.hint}`, options)
    this.operator = options.operator
    this.hint = options.hint
  }
}

/**
 * The database's UNIQUE index on a blind-index column (the index's own column or its rotation
 * slot) refused a write: another row already holds a value equal to the written one once
 * normalized. The statement was not applied. The driver's error is `cause` (it may show the
 * index value, never a plaintext); this error names table and column, never a value.
 */
export class UniqueViolationError extends FieldEncryptionError {
  /** Physical blind-index column whose UNIQUE index refused the value (e.g. `email_bidx_next`). */
  readonly index: string
  /** The database's name of that UNIQUE index or constraint, when the driver gave it. */
  readonly constraint: string | undefined

  constructor(
    message: string,
    options: FieldEncryptionErrorOptions & { index: string; constraint?: string | undefined },
  ) {
    super('UNIQUE_VIOLATION', message, options)
    this.index = options.index
    this.constraint = options.constraint
  }
}

/** An operation of `src/ops` (rotate, re-encrypt, retire, …) refused or stopped. */
export class OperationError extends FieldEncryptionError {
  /** Rows concerned (e.g. rows still on a version `retire` refused to retire), where one applies. */
  readonly rows: number | undefined
  /** Milliseconds to wait before the refused operation is allowed (`RETIRE_TOO_EARLY`), where one applies. */
  readonly waitMs: number | undefined

  constructor(
    code: ErrorCode,
    message: string,
    options: FieldEncryptionErrorOptions & { rows?: number; waitMs?: number } = {},
  ) {
    super(code, message, options)
    this.rows = options.rows
    this.waitMs = options.waitMs
  }
}

/** What a {@link SchemaMismatchError} found wrong with one table or column. */
export type SchemaProblemKind =
  /** An annotated table does not exist. */
  | 'table-missing'
  /** An encrypted column does not exist. */
  | 'column-missing'
  /** An encrypted column is not of a binary type (`bytea`; `varbinary`/`blob` on MySQL). */
  | 'column-not-binary'
  /** An encrypted column (varbinary(n)) is narrower than the ciphertext of a value of `maxBytes`, or no `maxBytes` bounds its values. */
  | 'column-too-narrow'
  /** An encrypted column's camelCase name and its snake_case spelling both exist, the latter not annotated (CamelCasePlugin would write it unencrypted). */
  | 'column-spelling'
  /** A blind-index column does not exist. */
  | 'index-column-missing'
  /** A blind-index column is not of a binary type. */
  | 'index-column-not-binary'
  /** A unique blind-index column has no single-column UNIQUE index. */
  | 'unique-index-missing'
  /** A table the schema does not annotate has columns named like the schema's blind-index columns. */
  | 'unannotated-index-columns'
  /**
   * A table the schema does not annotate, or a column it does not annotate of a table it does, has
   * binary columns whose sampled values are this library's ciphertext.
   */
  | 'unannotated-ciphertext'
  /** A context column (the `context` table option) does not exist. */
  | 'context-column-missing'
  /** A context column's type does not return values as they were written (PostgreSQL `character(n)`, fractional, time, JSON, bytes; MySQL enum, set, year). */
  | 'context-column-type'
  /**
   * A context column's camelCase spelling is a column of the table too: a statement naming it
   * would be read as naming the context column (CamelCasePlugin's spelling).
   */
  | 'context-column-spelling'
  /**
   * MySQL/MariaDB: the session's `sql_mode` is not strict (neither `STRICT_TRANS_TABLES` nor
   * `STRICT_ALL_TABLES`), so the database stores a value it cannot hold as another one, with a
   * warning only (a clamped context value, a ciphertext cut short, NULL as empty bytes); or it
   * holds a mode that stores or compares values as others (`PAD_CHAR_TO_FULL_LENGTH`,
   * `NO_BACKSLASH_ESCAPES`, `EMPTY_STRING_IS_NULL`, `HIGH_NOT_PRECEDENCE`); or a table with
   * encrypted columns is on a non-transactional engine under `STRICT_TRANS_TABLES` alone.
   */
  | 'sql-mode'
  /**
   * Another session setting under which values are stored, compared or read as others: MySQL a
   * character set of the connection other than utf8mb4, or a `sql_select_limit`; PostgreSQL a
   * `client_encoding` other than UTF8 (node-postgres sends UTF-8), a `bytea_output` under which
   * the driver reads a bytea as other bytes (PGlite under `escape`); for a job paging by a date
   * or timestamp key, a `DateStyle` other than ISO.
   */
  | 'session-setting'

/** One problem found by schema verification. Names and types only: never a value. */
export interface SchemaProblem {
  readonly kind: SchemaProblemKind
  /** Physical table name, as in the database (schema-qualified when the schema names it so). */
  readonly table: string
  /** The column(s) concerned; empty for a whole table. */
  readonly columns: readonly string[]
  /** The column's data type in the database, when the type is the problem. */
  readonly found?: string | undefined
  /** What is wrong, in one sentence. */
  readonly message: string
  /**
   * The DDL that fixes it for this database's SQL family; for a table the schema does not
   * annotate, where the fix is in the schema rather than the database, a SQL comment saying so
   * (or the rename that makes the database match the schema, when the schema's table is missing).
   */
  readonly fix: string
}

/**
 * The live database does not match the encrypted schema. `problems` lists every one found (not
 * only the first), each with the DDL that fixes it. Nothing was sent to the database after the
 * check failed.
 */
export class SchemaMismatchError extends FieldEncryptionError {
  /** Every problem found, machine-readable. */
  readonly problems: readonly SchemaProblem[]

  constructor(problems: readonly SchemaProblem[], options: FieldEncryptionErrorOptions = {}) {
    const list = problems.map((p, i) => `  ${i + 1}. ${p.message} Fix: ${p.fix}`).join('\n')
    super(
      'SCHEMA_MISMATCH',
      `The database does not match the encrypted schema (${problems.length} problem${problems.length === 1 ? '' : 's'}); nothing was written:\n${list}`,
      options,
    )
    this.problems = Object.freeze([...problems])
  }
}
