import type { SchemaProblem } from '../errors.js'
import { camelCase } from './camel-case.js'
import type { CatalogTable } from './catalog.js'
import type { TableInfo } from './schema.js'
import type { SqlFamily } from './sql-family.js'

/**
 * The data types a context column (the `context` and `keyScope` table options) may have: those
 * whose values read back exactly as the application wrote them, so ciphertexts bound to the
 * written value decrypt (docs/guide.md, row context). An allowlist: every other type stores some
 * values in another form (PostgreSQL's `character(n)` and `"char"` pad or cut, `name` cuts at 63
 * bytes, `inet`, `macaddr` and ranges normalise, fractional, time, boolean and JSON types come
 * back as driver- or time-zone-dependent text; MySQL's `enum` and `set` store a member's case,
 * `year` its own range, MariaDB's `inet6` its compressed form), and bytes are not a context value.
 * MySQL's `char(n)` is allowed: it drops trailing spaces, which only a value ending in a space
 * has (UUIDs in `char(36)` are common). Integer ranges and string lengths are checked per value
 * (src/plugin/context-types.ts).
 */
const CONTEXT_TYPES: Readonly<Record<SqlFamily, ReadonlySet<string>>> = {
  // citext (an extension) stores and returns the text as written; it only compares ignoring case.
  postgres: new Set(['smallint', 'integer', 'bigint', 'uuid', 'text', 'character varying', 'citext']),
  mysql: new Set([
    'tinyint',
    'smallint',
    'mediumint',
    'int',
    'bigint',
    'char',
    'varchar',
    'tinytext',
    'text',
    'mediumtext',
    'longtext',
    'uuid',
  ]),
}

/**
 * Problems of a table's context columns: missing, or of a type whose values do not read back as
 * written.
 *
 * @param table - The table in the catalog.
 * @param info - Its annotation.
 * @param column - The catalog's lookup of a column's type (case-insensitive on MySQL).
 * @param family - The SQL family.
 * @param charset - MySQL: the catalog's lookup of a string column's character set.
 * @param zerofill - MySQL: the catalog's lookup of whether an integer column is `ZEROFILL`.
 */
export function contextColumnProblems(
  table: CatalogTable,
  info: TableInfo,
  column: (table: CatalogTable, name: string) => string | undefined,
  family: SqlFamily,
  charset: (table: CatalogTable, name: string) => string | undefined = () => undefined,
  zerofill: (table: CatalogTable, name: string) => boolean = () => false,
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
    } else if (!CONTEXT_TYPES[family].has(type)) {
      out.push({
        kind: 'context-column-type',
        table: info.physical,
        columns: [name],
        found: type,
        message: `Context column ${info.physical}.${name} is ${type}: its values do not all read back as they were written (${type === 'character' ? 'padded with spaces' : 'only integer, uuid and text types do'}), so the ciphertexts bound to them would not decrypt.`,
        fix: `-- make ${info.physical}.${name} an integer, uuid or varchar column (${family === 'mysql' ? 'collate utf8mb4_bin' : 'text'}), before it holds ciphertext`,
      })
    } else if (zerofill(table, name)) {
      // The exact guard beside a context equality compares the column's text, md5(concat(id)),
      // which a ZEROFILL column pads ('00007'): an update by id, or a tenant's search, would match
      // no row ('7'). The driver reads the value as 7, so the AAD itself would still agree.
      out.push({
        kind: 'context-column-type',
        table: info.physical,
        columns: [name],
        found: `${type} zerofill`,
        message: `Context column ${info.physical}.${name} is ${type} zerofill: its text is padded with zeros ('00007'), which the plugin's exact guard (md5 of the column's text, beside a context equality) compares with the value written ('7'), so an update of its rows would match none and a tenant's search would find none.`,
        fix: `-- alter table ${info.physical} modify ${name} ${type} unsigned <its options, without zerofill>`,
      })
    } else if (!UTF8_CHARSETS.has(charset(table, name)?.toLowerCase() ?? 'utf8mb4')) {
      const cs = charset(table, name) as string
      out.push({
        kind: 'context-column-type',
        table: info.physical,
        columns: [name],
        found: `${type} character set ${cs}`,
        message: `Context column ${info.physical}.${name} stores ${cs}: the plugin compares a context value byte for byte in UTF-8 (md5 of the column's text, beside a tenant's or row's equality), so a value with a character outside ASCII never matches its own rows (a tenant's search returns nothing, a job counts none of them).`,
        fix: `-- alter table ${info.physical} modify ${name} <its type> character set utf8mb4 collate utf8mb4_bin`,
      })
    }
  }
  return out
}

/** MySQL character sets whose bytes are the value's UTF-8 (utf8mb3 and ascii: for what they hold). */
const UTF8_CHARSETS: ReadonlySet<string> = new Set(['utf8mb4', 'utf8mb3', 'utf8', 'ascii'])
