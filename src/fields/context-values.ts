/**
 * Canonical strings of row-context values (the `context` table option): the values bound into a
 * ciphertext's AAD after its table and column names (format v1's context part, docs/format.md).
 *
 * A context value is written by the application (an INSERT's values) and read back from the
 * database (a SELECT's row), through drivers that return the same stored value as different
 * JavaScript types: an integer as a `number` (pg int4, mysql2), a `string` (pg int8, mysql2 with
 * `supportBigNumbers`) or a `bigint`. The canonical string makes these one value, so a row reads
 * back under the AAD it was written with. It is bound into ciphertexts for ever: never change it.
 *
 * - string: itself, except a UUID in its 8-4-4-4-12 hex form, which is lower-cased (RFC 9562 §4:
 *   UUIDs compare case-insensitively; PostgreSQL's `uuid` type returns lower case whatever was
 *   written);
 * - integer (`number` that is a safe integer, or `bigint`): its decimal form, `-` for negatives;
 * - anything else (`null`, fractional numbers, dates, booleans, bytes, objects) is refused: its
 *   text form would depend on the driver or the time zone.
 */

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/

/**
 * The canonical string of one context value.
 *
 * @param value - A context column's value, as written or as a driver returned it.
 * @returns The canonical string, or `undefined` when the value cannot be a context value
 *   (`null`, `undefined`, a fractional or non-finite number, a Date, a boolean, bytes, an object).
 * @example
 * ```ts
 * contextValue(42) === contextValue('42') === contextValue(42n) // '42'
 * contextValue('0C0A…-…') // lower-cased UUID
 * ```
 */
export function contextValue(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return UUID.test(value) ? value.toLowerCase() : value
    case 'number':
      return Number.isSafeInteger(value) ? (Object.is(value, -0) ? '0' : String(value)) : undefined
    case 'bigint':
      return value.toString(10)
    default:
      return undefined
  }
}

/** Longest context value quoted in a message. */
const QUOTED_MAX = 64

/**
 * `tenant_id = "acme", id = "42"`: a row context for messages. Context columns are plaintext
 * columns (never encrypted), so their values may appear; long ones are cut.
 *
 * @param names - Context column names, in order.
 * @param values - Their canonical values.
 */
export function describeContext(names: readonly string[], values: readonly string[]): string {
  return names
    .map((name, i) => {
      const value = values[i] ?? ''
      const shown = value.length > QUOTED_MAX ? `${value.slice(0, QUOTED_MAX)}…` : value
      return `${name} = ${JSON.stringify(shown)}`
    })
    .join(', ')
}
