import { ConfigError } from '../errors.js'

/** Names `encryptedSchema` refuses: what the plugin and the jobs could not name or key safely. */

/** What {@link refuseAnnotatedKey} reads of a table (a `TableInfo`, without importing schema.ts). */
interface KeyedTable {
  readonly physical: string
  readonly logical: string
  readonly primaryKey: readonly string[]
  readonly columns: ReadonlyMap<string, NamedColumn>
  readonly indexColumns: ReadonlyMap<string, { readonly column: NamedColumn }>
}

interface NamedColumn {
  readonly physical: string
  readonly logical: string
  readonly stored: string
}

/** What {@link refuseStoredOverPlaintext} reads of a table. */
interface PlainColumns {
  readonly physical: string
  readonly logical: string
  readonly primaryKey: readonly string[]
  readonly context: readonly string[]
}

/**
 * A column whose ciphertext would be written over a plaintext column: under migration, its
 * `storedAs` naming the plaintext column itself (the backfill would replace each plaintext with
 * its ciphertext, and no phase could read it back); under any annotation, naming a primary-key or
 * context column but for case (MySQL/MariaDB take `ID` for `id`; the exact names are refused by
 * `refuseAnnotatedKey` and `contextColumns`).
 * @throws ConfigError `CONFIG_INVALID`
 */
export function refuseStoredOverPlaintext(
  table: PlainColumns,
  column: NamedColumn & { readonly migration: unknown },
): void {
  const stored = column.stored.toLowerCase()
  const same = (name: string) => name.toLowerCase() === stored
  // The exact names are refused by refuseAnnotatedKey and contextColumns, whose messages name
  // the option to change.
  const caseOnly = (name: string) => same(name) && name !== column.stored
  const key = table.primaryKey.find(caseOnly)
  const context = table.context.find(caseOnly)
  const [name, what] =
    column.migration !== undefined && same(column.physical)
      ? [
          column.physical,
          'its own plaintext column: the backfill would write each ciphertext over the plaintext it encrypts',
        ]
      : key !== undefined
        ? [key, `primary-key column ${key}: writes would put a ciphertext in the row's key`]
        : context !== undefined
          ? [
              context,
              `context column ${context}: writes would put a ciphertext in the value the row is bound to`,
            ]
          : [undefined, undefined]
  if (name === undefined) return
  const cased = name === column.stored ? '' : ' (but for case, which MySQL/MariaDB ignore)'
  throw new ConfigError(
    'CONFIG_INVALID',
    `${table.physical}.${column.physical} is stored as ${column.stored}, which names${cased} ${what}. Set storedAs to a new column (e.g. ${column.physical}_encrypted).`,
    { table: table.logical, column: column.logical },
  )
}

/**
 * A physical column name the plugin and the jobs must name through Kysely: one holding `.` is read
 * by Kysely as `table.column` (`where('a.b', '=', v)` names column b of a table a), so the plugin
 * could not tell it is this column, and a search on it would send its value unencrypted.
 * @throws ConfigError `CONFIG_INVALID`
 */
export function refuseDottedColumn(physical: string, logical: string, name: string, column?: string): void {
  if (!name.includes('.')) return
  throw new ConfigError(
    'CONFIG_INVALID',
    `Column ${physical}.${name}: a column name containing "." cannot be named through Kysely, which reads "a.b" as column b of table a; rename the column (logicalName keeps the keys and AAD).`,
    { table: logical, ...(column === undefined ? {} : { column }) },
  )
}

/**
 * A primary key that is an encrypted column (or its stored column) or a blind index: the jobs page
 * by the key, store its values as their batches' bounds, and report failed rows by it
 * (`failedKeys`, `kfe verify`), which would put a ciphertext, an index value or (for a column
 * still migrating from plaintext) the plaintext in their output and job table; and a ciphertext
 * is no stable key.
 * @param keys - The columns to check: the table's primary key, or the one the jobs were told to
 *   page by instead.
 * @param option - Where `keys` were declared, for the message.
 * @throws ConfigError `CONFIG_INVALID`
 */
export function refuseAnnotatedKey(
  table: KeyedTable,
  keys: readonly string[] = table.primaryKey,
  option = 'primaryKey',
): void {
  for (const name of keys) {
    const info =
      table.columns.get(name) ??
      [...table.columns.values()].find((c) => c.stored === name) ??
      table.indexColumns.get(name)?.column
    if (info === undefined) continue
    throw new ConfigError(
      'CONFIG_INVALID',
      `Table ${table.physical}: ${option} names ${name}, encrypted column ${info.physical} or one of its blind indexes; the jobs key rows by it, store it as their batches' bounds and report rows by it. Set ${option} to a plain column.`,
      { table: table.logical, column: info.logical },
    )
  }
}
