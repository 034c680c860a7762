import type { EncryptedColumn } from './columns.js'
import {
  buildSchema,
  type EncryptedSchema,
  type MappedName,
  type SchemaDefinition,
  type TableOptions,
} from './schema.js'

/**
 * The schema as the plugin and the dialect wrapper see it. A column stored under another name
 * (`storedAs`, e.g. `email` → `email_encrypted`) is annotated here under the column that holds
 * its ciphertext, with the same logical name (so the same keys and AAD), and carries the name
 * queries use for it (`mapped`): the plugin's migration pass (plugin/migrated-columns.ts) turns
 * each query's `email` into `email_encrypted` (and, while the plaintext column is written, into
 * both), and the analyzer then treats `email_encrypted` as any encrypted column.
 *
 * A column in phase `added` is left out: the application still reads, writes and searches only
 * its plaintext column. The schema itself is returned when no column is stored elsewhere.
 *
 * @internal
 */
export function pluginView(schema: EncryptedSchema): EncryptedSchema {
  const columns = [...schema.tables.values()].flatMap((t) => [...t.columns.values()])
  if (columns.every((c) => c.stored === c.physical && c.migration === undefined)) return schema
  const definition: Record<string, Record<string, EncryptedColumn<unknown>>> = {}
  const tables: Record<string, TableOptions> = {}
  const mapped = new Map<string, MappedName>()
  for (const table of schema.tables.values()) {
    const cols: Record<string, EncryptedColumn<unknown>> = {}
    for (const column of table.columns.values()) {
      if (column.stored === column.physical && column.migration === undefined) {
        cols[column.physical] = column.spec
        continue
      }
      if (column.migration === 'added') continue
      cols[column.stored] = Object.freeze({
        ...column.spec,
        logicalName: column.logical,
        storedAs: undefined,
        migration: undefined,
      })
      mapped.set(`${table.physical}\0${column.stored}`, { name: column.physical, phase: column.migration })
    }
    if (Object.keys(cols).length === 0) continue
    definition[table.physical] = cols
    tables[table.physical] = {
      logicalName: table.logical,
      primaryKey: table.primaryKey,
      ...(table.context.length === 0 ? {} : { context: table.context }),
      ...(table.keyScope === undefined ? {} : { keyScope: table.keyScope.column }),
    }
  }
  return buildSchema(
    definition as SchemaDefinition,
    { tables, omitBlindIndexes: schema.omitBlindIndexes },
    mapped,
  )
}
