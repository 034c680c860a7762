import type { SchemaProblem } from '../errors.js'
import { camelCase } from './camel-case.js'
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
  // enum and set store a value in the case of their member (`'ACME'` as `acme`), year a number
  // in its own range and form.
  mysql: [/^(decimal|float|double|bit|date|datetime|timestamp|time|json|enum|set|year)$/],
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
    } else if (camelCase(name) !== name && column(table, camelCase(name)) !== undefined) {
      // The plugin reads `tenantId` in a statement as context column `tenant_id` (CamelCasePlugin's
      // spelling): a real column of that name would be taken for it, and a row bound to its value.
      out.push({
        kind: 'context-column-spelling',
        table: info.physical,
        columns: [name, camelCase(name)],
        message: `Context column ${info.physical}.${name} has a sibling ${camelCase(name)}, its camelCase spelling: a statement naming ${camelCase(name)} would be read as naming ${name}, and its rows bound to the other column's value.`,
        fix: `-- rename or drop ${info.physical}.${camelCase(name)}`,
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
