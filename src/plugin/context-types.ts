import type { Catalog } from '../schema/catalog.js'
import { contextMissing } from '../schema/row-context.js'
import type { TableInfo } from '../schema/schema.js'
import { zeroGeneratesId } from '../schema/sql-mode.js'
import type { DeferredValue } from './deferred-value.js'

/**
 * Context values an INSERT (or a SET of a context column) writes are bound into ciphertexts as
 * they are written; a column that stores another value fails those ciphertexts on every read
 * (`DECRYPT_AUTH_FAILED`). Where the schema check read the catalog, a value an integer or uuid
 * column would store differently is refused before anything is sent: `'07'` (stored 7), a UUID
 * in braces or without hyphens (stored in its canonical form), an integer outside its column's
 * range, a string longer than its column holds or with a character its MySQL character set lacks
 * (which PostgreSQL and a strict sql_mode refuse, but MySQL under `INSERT IGNORE` or a non-strict
 * sql_mode clamps, cuts short or stores as `?`, with a warning), and 0 inserted into a MySQL
 * `AUTO_INCREMENT` column (stored as the next generated id).
 */

/** Integer data types, as the catalog names them, with the bits they store. */
const INTEGER_BITS: ReadonlyMap<string, bigint> = new Map([
  ['tinyint', 8n],
  ['smallint', 16n],
  ['mediumint', 24n],
  ['int', 32n],
  ['integer', 32n],
  ['bigint', 64n],
])
/** `'-0'` is not one: an integer column stores it as 0, another context value than "-0". */
const CANONICAL_INTEGER = /^(0|-?[1-9][0-9]*)$/
const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/**
 * @param catalog - The catalog the schema check read; `undefined` (check off or not run): no check.
 * @param deferred - The query's deferred values.
 * @param insert - Whether the statement is an INSERT (or REPLACE): its ciphertexts are bound to
 *   the context values of the rows it inserts (an upsert's update part may not write encrypted
 *   columns of a table with a row context).
 * @throws QueryRefusedError `CONTEXT_MISSING` naming the column, when a written context value is
 *   not the form its column stores.
 */
export function checkWrittenContext(
  catalog: Catalog | undefined,
  deferred: readonly DeferredValue[],
  insert = false,
): void {
  if (catalog === undefined) return
  for (const d of deferred) {
    const values = d.kind === 'encrypt' ? d.context : undefined
    if (values !== undefined) checkContextValues(catalog, d.column.table, values, insert ? 'insert' : 'write')
  }
}

/**
 * The check of {@link checkWrittenContext} for one row's canonical context values (also run by
 * `encryption.encrypt`, which binds a ciphertext to the context its caller gives).
 *
 * @param catalog - The catalog the schema check read; `undefined`: no check.
 * @param table - The table whose context `values` are, in its context order.
 * @param operator - The statement kind for the message (`insert`, `write`, `encrypt`); `insert`
 *   also refuses 0 for a MySQL `AUTO_INCREMENT` column (see {@link zeroGeneratesId}).
 * @throws QueryRefusedError `CONTEXT_MISSING` naming the column, when a value is not the form its
 *   column stores, is longer than it holds (in characters or in bytes), holds a character its
 *   column's character set cannot store (MySQL), is an integer outside its range, or is 0 inserted
 *   into a MySQL `AUTO_INCREMENT` column.
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
    // MySQL's text types hold bytes, not characters (tinytext: 255 bytes, 63 four-byte ones).
    const octets = catalog.maxOctets(live, name)
    const bytes = octets === undefined ? 0 : Buffer.byteLength(value, 'utf8')
    if (octets !== undefined && bytes > octets) {
      throw contextMissing(
        table,
        name,
        `is ${bytes} bytes long in UTF-8, more than its ${type} column holds (${octets}; the database would store it cut short): the ciphertexts bound to it would not decrypt`,
        operator,
      )
    }
    // MySQL's char(n) drops trailing spaces when it stores a value: 'acme ' reads back as 'acme'.
    if (catalog.family === 'mysql' && type === 'char' && value.endsWith(' ')) {
      throw contextMissing(
        table,
        name,
        `ends in a space, which its char column drops (it would read back without it): the ciphertexts bound to it would not decrypt`,
        operator,
      )
    }
    const charset = catalog.charset(live, name)
    const lost = charset === undefined ? undefined : unstorable(value, charset)
    if (lost !== undefined) {
      throw contextMissing(
        table,
        name,
        `holds a character its column's character set (${charset}) cannot store (U+${lost.toString(16).toUpperCase().padStart(4, '0')}): the database would refuse it or, under INSERT IGNORE, store ? in its place`,
        operator,
      )
    }
    // MySQL stores the next AUTO_INCREMENT value for an inserted 0 (0, '0' and 0n are all "0"),
    // while the ciphertexts are bound to "0". The sql_mode is the one the schema check read.
    if (
      operator === 'insert' &&
      value === '0' &&
      catalog.autoIncrement(live, name) &&
      zeroGeneratesId(catalog.sqlMode)
    ) {
      throw contextMissing(
        table,
        name,
        `is 0 in an AUTO_INCREMENT column, which MySQL replaces with the next generated id (the session's sql_mode lacks NO_AUTO_VALUE_ON_ZERO): the ciphertexts bound to 0 would not decrypt`,
        operator,
      )
    }
    const bits = INTEGER_BITS.get(type)
    const integer = bits !== undefined
    if (integer && CANONICAL_INTEGER.test(value)) {
      const unsigned = catalog.unsigned(live, name)
      const low = unsigned ? 0n : -(2n ** (bits - 1n))
      const high = unsigned ? 2n ** bits - 1n : 2n ** (bits - 1n) - 1n
      const n = BigInt(value)
      if (n >= low && n <= high) return
      // PostgreSQL and a strict sql_mode refuse the write; INSERT IGNORE, or a session without a
      // strict sql_mode, stores the nearest end of the range instead (MySQL, MariaDB).
      throw contextMissing(
        table,
        name,
        `is ${value.length > 24 ? `${value.slice(0, 24)}…` : value}, outside the range of its ${unsigned ? `${type} unsigned` : type} column (${low} to ${high}): the database would refuse it or store another value, and the ciphertexts bound to it would not decrypt`,
        operator,
      )
    }
    if (!integer && (type !== 'uuid' || CANONICAL_UUID.test(value))) return
    throw contextMissing(
      table,
      name,
      `is ${JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value)}, which its ${type} column stores as another value (${integer ? 'an integer in its decimal form' : 'a UUID in its 8-4-4-4-12 form'}): the ciphertexts bound to it would not decrypt`,
      operator,
    )
  })
}

/**
 * The first code point of `value` a MySQL column of `charset` may not store as it is (it would
 * be refused, or stored as `?` under `INSERT IGNORE`), or undefined. utf8mb4 stores every one,
 * utf8mb3 none past U+FFFF; latin1 (MySQL's is cp1252) is taken as ASCII and U+00A0–U+00FF,
 * which it stores as Latin-1 does; any other set as ASCII only. Refusing a few characters a set
 * could store is the safe side.
 */
function unstorable(value: string, charset: string): number | undefined {
  if (charset.startsWith('utf8mb4') || charset === 'binary') return undefined
  const utf8 = charset === 'utf8' || charset.startsWith('utf8mb3')
  for (const ch of value) {
    const cp = ch.codePointAt(0) as number
    if (utf8 ? cp > 0xffff : cp > 0x7f && !(charset === 'latin1' && cp >= 0xa0 && cp <= 0xff)) return cp
  }
  return undefined
}
