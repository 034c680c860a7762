import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'

/** Refusals of a table name the plugin cannot resolve to one annotated table. */

/**
 * Refuses a table named without its schema where the encrypted schema has tables of that name
 * in several schemas: the connection's search path (or current database) decides which one the
 * database reads, and the plugin cannot see it.
 */
export function refuseAmbiguousTable(name: string): never {
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `Table ${name} is named without its schema, and the encrypted schema has tables of that name in several schemas: which one the database reads depends on the connection's search path (or current database).`,
    {
      table: name,
      operator: 'table name',
      hint: `Name the table with its schema (withSchema, or '<schema>.${name}').`,
    },
  )
}

/**
 * Refuses a name that differs only in case from the encrypted table `near` (MySQL folds table
 * names where `lower_case_table_names` is set; PostgreSQL would reject the query only after
 * receiving its parameters).
 */
export function refuseNearName(near: TableInfo | undefined, name: string): void {
  if (near === undefined) return
  const first = near.columns.values().next().value as ColumnInfo
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `"${name}" differs only in case from ${near.physical}, which holds encrypted columns.`,
    { table: near.logical, column: first.logical, hint: `Spell it exactly "${near.physical}".` },
  )
}
