import { inspect } from 'node:util'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, IndexInfo } from '../schema/schema.js'

/**
 * What a deferred value becomes once keys are at hand (in the dialect wrapper):
 * - `encrypt`: the ciphertext of `plaintext` for `column`, under the table's active data key;
 * - `index`: the blind index of `plaintext` for `index`, under the active index key (a write);
 * - `probe`: the blind index of `plaintext` under every live index version (a search).
 */
export type DeferredKind = 'encrypt' | 'index' | 'probe'

/**
 * A plaintext value that the plugin took out of a query. It stands in the query tree and in
 * `CompiledQuery.parameters` until the dialect wrapper replaces it with ciphertext or an index.
 *
 * It never shows its plaintext: `JSON.stringify`, `util.inspect`, `String()` and Kysely's query
 * log print a redacted label. If it ever reaches a driver unresolved (a query run outside the
 * wrapper), pg's `toPostgres()` and mysql2's `toSqlString()` throw `UNRESOLVED_VALUE` instead of
 * sending anything.
 */
export class DeferredValue {
  readonly kind: DeferredKind
  readonly column: ColumnInfo
  readonly index: IndexInfo | undefined
  /**
   * `encrypt` into a table with a row context: the row's canonical context values, bound into the
   * ciphertext's AAD. Context columns are plaintext, so they are not redacted.
   */
  readonly context: readonly string[] | undefined
  readonly #plaintext: unknown

  constructor(
    kind: DeferredKind,
    column: ColumnInfo,
    plaintext: unknown,
    index?: IndexInfo,
    context?: readonly string[],
  ) {
    this.kind = kind
    this.column = column
    this.index = index
    this.context = context
    this.#plaintext = plaintext
    Object.freeze(this)
  }

  /** The plaintext. Only the wrapper calls this, to encrypt or index it. */
  reveal(): unknown {
    return this.#plaintext
  }

  /** A label safe for logs: what it will become, never what it holds. */
  toString(): string {
    const where = `${this.column.table.physical}.${this.index?.physical ?? this.column.physical}`
    return `[kfe:${this.kind} ${where}]`
  }

  toJSON(): string {
    return this.toString()
  }

  [inspect.custom](): string {
    return this.toString()
  }

  /** pg calls this to serialise an object parameter: reaching it means the wrapper was bypassed. */
  toPostgres(): never {
    throw unresolved(this)
  }

  /** mysql2 calls this to format an object parameter: reaching it means the wrapper was bypassed. */
  toSqlString(): never {
    throw unresolved(this)
  }
}

function unresolved(value: DeferredValue): QueryRefusedError {
  return new QueryRefusedError(
    'UNRESOLVED_VALUE',
    `${value.toString()} reached the database driver unresolved; nothing was sent.`,
    {
      table: value.column.table.logical,
      column: value.column.logical,
      hint: 'Run queries through the dialect returned by encryption.wrap(dialect), not the bare dialect.',
    },
  )
}

/** True for a deferred value. */
export function isDeferred(value: unknown): value is DeferredValue {
  return value instanceof DeferredValue
}
