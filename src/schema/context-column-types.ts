import type { SchemaProblem } from '../errors.js'
import { type CatalogTable, isBinaryType } from './catalog.js'
import type { TableInfo } from './schema.js'
import type { SqlFamily } from './sql-family.js'

/**
 * Data types a context column (the `context` and `keyScope` table options) cannot have: the
 * value the database returns is not the one the application wrote, so ciphertexts bound to the
 * written value would not decrypt (docs/guide.md, row context). PostgreSQL's `character(n)` pads
 * short values with spaces; fractional, time, boolean and JSON types come back as driver- or
 * time-zone-dependent text, which a context value refuses; bytes are not a context value.
 * MySQL's `char(n)` is allowed: it drops trailing spaces, which only a value ending in a space
 * has (UUIDs in `char(36)` are common).
 */
const NOT_CONTEXT: Readonly<Record<SqlFamily, readonly RegExp[]>> = {
  postgres: [
    /^character$/,
    /^(numeric|real|double precision|money|boolean|date|interval|json|jsonb)$/,
    /^(time|timestamp)\b/,
  ],
  mysql: [/^(decimal|float|double|bit|date|datetime|timestamp|time|json)$/],
}

/**
 * Problems of a table's context columns: missing, or of a type whose values do not read back as
 * written.
 *
 * @param table - The table in the catalog.
 * @param info - Its annotation.
 * @param column - The catalog's lookup of a column's type (case-insensitive on MySQL).
 * @param family - The SQL family.
 */
export function contextColumnProblems(
  table: CatalogTable,
  info: TableInfo,
  column: (table: CatalogTable, name: string) => string | undefined,
  family: SqlFamily,
): SchemaProblem[] {
  const out: SchemaProblem[] = []
  for (const name of info.context) {
    const type = column(table, name)
    if (type === undefined) {
      out.push({
        kind: 'context-column-missing',
        table: info.physical,
        columns: [name],
        message: `Context column ${info.physical}.${name} (context option) does not exist.`,
        fix: `-- add ${name} to ${info.physical}, or correct the table's context option`,
      })
    } else if (isBinaryType(family, type) || NOT_CONTEXT[family].some((re) => re.test(type))) {
      out.push({
        kind: 'context-column-type',
        table: info.physical,
        columns: [name],
        found: type,
        message: `Context column ${info.physical}.${name} is ${type}: its values do not read back as they were written (${type === 'character' ? 'padded with spaces' : 'not a string or an integer'}), so the ciphertexts bound to them would not decrypt.`,
        fix: `-- make ${info.physical}.${name} an integer, uuid or varchar column (${family === 'mysql' ? 'collate utf8mb4_bin' : 'text'}), before it holds ciphertext`,
      })
    }
  }
  return out
}
