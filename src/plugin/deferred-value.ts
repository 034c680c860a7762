import { inspect } from 'node:util'
import { QueryRefusedError } from '../errors.js'
import { rowKeyName, tenantKeyName } from '../schema/key-scope.js'
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
  /**
   * The logical key name whose keys resolve it: the table's logical name, or, for a table with a
   * key scope (`keyScope`), its tenant's key name (from `context` for a write, from `tenant` for
   * a search). `undefined` only when a table with a key scope gave neither: resolving it then
   * throws `TENANT_REQUIRED`.
   */
  readonly keyName: string | undefined
  readonly #plaintext: unknown

  /**
   * @param context - `encrypt` and `index` into a table with a row context: the row's canonical values.
   * @param tenant - `probe` of a table with a key scope: the tenant the query names by equality.
   * @throws QueryRefusedError `TENANT_INVALID` when the tenant's key name is too long.
   */
  constructor(
    kind: DeferredKind,
    column: ColumnInfo,
    plaintext: unknown,
    index?: IndexInfo,
    context?: readonly string[],
    tenant?: string,
  ) {
    this.kind = kind
    this.column = column
    this.index = index
    this.context = context
    this.keyName =
      tenant !== undefined && column.table.keyScope !== undefined
        ? tenantKeyName(column.table, tenant)
        : rowKeyName(column.table, context)
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
