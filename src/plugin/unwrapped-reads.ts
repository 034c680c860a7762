import type { QueryId } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo } from '../schema/schema.js'
import { PENDING_PLANS_MAX } from './plan.js'

/**
 * Catches the plugin installed without the dialect wrapper (`plugins: [encryption.plugin]` but
 * `dialect: new PostgresDialect(…)` instead of `encryption.wrap(…)`). Writes and searches of such
 * a Kysely already fail at the driver (their deferred values refuse to serialise), but a read
 * would hand the application the stored ciphertexts, as Buffers, where its types say `string`.
 *
 * The plugin notes each query that returns an annotated column, by Kysely's `queryId` (the same
 * object reaches `transformQuery`, the driver's `CompiledQuery.queryId` and `transformResult`);
 * the wrapper forgets every query it runs. A query still noted when its result reaches the
 * plugin's `transformResult` was never seen by a wrapper: if its rows hold bytes, they are
 * ciphertexts nobody decrypted, and the result is refused.
 *
 * Bounded like {@link PendingPlans}: at most {@link PENDING_PLANS_MAX} queries are noted, the
 * oldest dropped first (a dropped note only skips the check; it never refuses a good result).
 */
export class UnwrappedReads {
  readonly #noted = new Map<QueryId, ColumnInfo>()
  // The query noted last, outside the map: a query usually runs right after it is built, so most
  // queries never touch the map (a Map entry set and deleted per query measurably cost every
  // lookup: a hash for each new queryId object, and the map's deleted slots; docs/benchmarks.md).
  #lastId: QueryId | undefined
  #lastColumn: ColumnInfo | undefined

  /** The plugin: `queryId` returns `column` (one of its annotated outputs). */
  note(queryId: QueryId, column: ColumnInfo): void {
    const last = this.#lastId
    if (last !== undefined && last !== queryId) {
      this.#noted.set(last, this.#lastColumn as ColumnInfo)
      if (this.#noted.size > PENDING_PLANS_MAX - 1) {
        this.#noted.delete(this.#noted.keys().next().value as QueryId)
      }
    }
    this.#lastId = queryId
    this.#lastColumn = column
  }

  /** The wrapper: `queryId` runs through a wrapped connection. */
  seen(queryId: QueryId | undefined): void {
    if (queryId === undefined) return
    if (queryId === this.#lastId) {
      this.#lastId = undefined
      this.#lastColumn = undefined
    }
    // The same query may also wait in the map (noted, another noted, then noted again).
    if (this.#noted.size !== 0) this.#noted.delete(queryId)
  }

  /**
   * The plugin's result transform: throws when the rows of a noted query that no wrapper ran
   * hold bytes (ciphertexts). The note is kept, so running the same compiled query again is
   * refused again.
   *
   * @throws QueryRefusedError `DIALECT_NOT_WRAPPED`
   */
  check(queryId: QueryId, rows: readonly unknown[]): void {
    const column =
      queryId === this.#lastId
        ? this.#lastColumn
        : this.#noted.size === 0
          ? undefined
          : this.#noted.get(queryId)
    if (column === undefined || !rows.some(holdsBytes)) return
    throw new QueryRefusedError(
      'DIALECT_NOT_WRAPPED',
      `The rows read from encrypted column ${column.table.physical}.${column.physical} came back still encrypted: this Kysely has encryption.plugin, but its dialect is not wrapped, so nothing decrypted them. No rows were returned.`,
      {
        table: column.table.logical,
        column: column.logical,
        hint: 'Create the Kysely with dialect: encryption.wrap(yourDialect) beside plugins: [encryption.plugin].',
      },
    )
  }
}

function holdsBytes(row: unknown): boolean {
  if (typeof row !== 'object' || row === null) return false
  for (const key in row) {
    if ((row as Record<string, unknown>)[key] instanceof Uint8Array) return true
  }
  return false
}
