import { ConfigError } from '../errors.js'
import type { EncryptedSchema } from '../schema/schema.js'

/**
 * The plugin resolves a query's column name to the column that holds its ciphertext only where
 * they are the same: a column mapped elsewhere (`storedAs`) or under migration from plaintext is
 * refused here rather than read or written wrongly. The operations (`kfe migration`,
 * `encrypt-column`, `verify`, `status`) already take such columns (docs/migrating.md).
 */
export function refuseMappedColumns(schema: EncryptedSchema): void {
  for (const table of schema.tables.values()) {
    for (const column of table.columns.values()) {
      if (column.stored === column.physical && column.migration === undefined) continue
      throw new ConfigError(
        'CONFIG_INVALID',
        `${table.physical}.${column.physical} is ${column.migration === undefined ? `stored as ${column.stored}` : `under migration (${column.migration})`}: the plugin does not read or write such a column yet; until it does, annotate the encrypted column under its own name (see docs/migrating.md).`,
        { table: table.logical, column: column.logical },
      )
    }
  }
}
