import type { Catalog, CatalogTable } from '../schema/catalog.js'

/**
 * What an analysis knows of the columns of the live database's tables, which `selectAll()` over
 * several relations needs: the driver returns one value per result key, the *last* column of a
 * name, so an encrypted output of one relation is shadowed by a later relation's plaintext
 * column of the same name. The schema lists only a table's encrypted columns; the catalog lists
 * them all.
 *
 * - a {@link Catalog}: the one the wrapper's schema verification read (every table of the
 *   default schema, and of the schemas the encrypted schema names).
 * - `'pending'`: verification is on but has not read it yet (the plugin's pass, or the first
 *   query): an output that may be shadowed is noted, and the wrapper analyzes the query again
 *   with the catalog once verification passed, before anything is sent.
 * - `undefined`: verification is off: an output that may be shadowed is refused.
 */
export type TableColumns = Catalog | 'pending' | undefined

/** Column lists made once per catalog table: a `select *` asks for them on every query. */
const lists = new WeakMap<CatalogTable, readonly string[]>()

/**
 * The columns of the base table `name` (in `schema`, else the default one), in the order
 * `select *` returns them, when `columns` is a catalog that has the table; else `undefined`.
 */
export function columnsOf(
  columns: TableColumns,
  schema: string | undefined,
  name: string,
): readonly string[] | undefined {
  if (columns === undefined || columns === 'pending') return undefined
  const table = columns.table(schema === undefined ? name : `${schema}.${name}`)
  if (table === undefined) return undefined
  let list = lists.get(table)
  if (list === undefined) {
    list = Object.freeze([...table.columns.keys()])
    lists.set(table, list)
  }
  return list
}
