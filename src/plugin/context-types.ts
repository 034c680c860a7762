import type { Catalog } from '../schema/catalog.js'
import { contextMissing } from '../schema/row-context.js'
import type { TableInfo } from '../schema/schema.js'
import type { DeferredValue } from './deferred-value.js'

/**
 * Context values an INSERT (or a SET of a context column) writes are bound into ciphertexts as
 * they are written; a column that stores another value fails those ciphertexts on every read
 * (`DECRYPT_AUTH_FAILED`). Where the schema check read the catalog, a value an integer or uuid
 * column would store differently is refused before anything is sent: `'07'` (stored 7), a UUID
 * in braces or without hyphens (stored in its canonical form).
 */

/** Integer data types, as the catalog names them. */
const INTEGER = new Set(['smallint', 'integer', 'bigint', 'tinyint', 'mediumint', 'int'])
/** `'-0'` is not one: an integer column stores it as 0, another context value than "-0". */
const CANONICAL_INTEGER = /^(0|-?[1-9][0-9]*)$/
const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * @param catalog - The catalog the schema check read; `undefined` (check off or not run): no check.
 * @param deferred - The query's deferred values.
 * @throws QueryRefusedError `CONTEXT_MISSING` naming the column, when a written context value is
 *   not the form its column stores.
 */
export function checkWrittenContext(catalog: Catalog | undefined, deferred: readonly DeferredValue[]): void {
  if (catalog === undefined) return
  for (const d of deferred) {
    const values = d.kind === 'encrypt' ? d.context : undefined
    if (values !== undefined) checkContextValues(catalog, d.column.table, values, 'write')
  }
}

/**
 * The check of {@link checkWrittenContext} for one row's canonical context values (also run by
 * `encryption.encrypt`, which binds a ciphertext to the context its caller gives).
 *
 * @param catalog - The catalog the schema check read; `undefined`: no check.
 * @param table - The table whose context `values` are, in its context order.
 * @param operator - The statement kind for the message (`write`, `encrypt`).
 * @throws QueryRefusedError `CONTEXT_MISSING` naming the column, when a value is not the form its
 *   column stores, or is longer than it holds.
 */
export function checkContextValues(
  catalog: Catalog | undefined,
  table: TableInfo,
  values: readonly string[],
  operator: string,
): void {
  if (catalog === undefined) return
  const live = catalog.table(table.physical)
  if (live === undefined) return
  table.context.forEach((name, i) => {
    const value = values[i]
    const type = catalog.column(live, name)
    if (value === undefined || type === undefined) return
    const max = catalog.maxLength(live, name)
    // Longer than a varchar(n) holds: the database cuts trailing spaces off silently (PostgreSQL,
    // and MySQL beside a warning), so the row would hold another value than its ciphertexts.
    if (max !== undefined && [...value].length > max) {
      throw contextMissing(
        table,
        name,
        `is ${[...value].length} characters long, more than its ${type}(${max}) column holds (the database would store it cut short): the ciphertexts bound to it would not decrypt`,
        operator,
      )
    }
    const integer = INTEGER.has(type)
    if (integer ? CANONICAL_INTEGER.test(value) : type !== 'uuid' || CANONICAL_UUID.test(value)) return
    throw contextMissing(
      table,
      name,
      `is ${JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value)}, which its ${type} column stores as another value (${integer ? 'an integer in its decimal form' : 'a UUID in its 8-4-4-4-12 form'}): the ciphertexts bound to it would not decrypt`,
      operator,
    )
  })
}
