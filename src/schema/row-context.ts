import { DecryptionError, QueryRefusedError } from '../errors.js'
import { contextValue, describeContext } from '../fields/context-values.js'
import type { FieldAad } from '../fields/field-cipher.js'
import type { ColumnInfo, TableInfo } from './schema.js'

/**
 * The AAD of one value of a table with a row context (`context` table option): the column's
 * names, then the row's canonical context values in declared order.
 *
 * @param column - The encrypted column.
 * @param values - The canonical context values (see {@link readContext}).
 * @returns `column.aad` itself when the table binds no context.
 */
export function rowAad(column: ColumnInfo, values: readonly string[] | undefined): FieldAad {
  if (values === undefined || values.length === 0) return column.aad
  return { table: column.aad.table, column: column.aad.column, context: values }
}

/**
 * Reads a row's context values for a read (the plugin's result rows, a job's stored rows).
 *
 * @param table - The table whose context is read.
 * @param column - The encrypted column about to be decrypted (for the error).
 * @param get - The value of a context column, by its position in `table.context`.
 * @returns The canonical values, or `undefined` when the table binds no context.
 * @throws DecryptionError `CONTEXT_MISSING` when a value is NULL, absent or not a string or an
 *   integer: the ciphertext cannot be authenticated without it.
 */
export function readContext(
  table: TableInfo,
  column: ColumnInfo,
  get: (at: number) => unknown,
): string[] | undefined {
  const names = table.context
  if (names.length === 0) return undefined
  const values: string[] = []
  for (let i = 0; i < names.length; i++) {
    const value = contextValue(get(i))
    if (value === undefined) {
      throw new DecryptionError(
        'CONTEXT_MISSING',
        `Cannot decrypt ${table.physical}.${column.physical}: its row's context column ${names[i]} is NULL, missing or not a string or an integer, and the ciphertext is bound to it.`,
        { table: table.logical, column: column.logical },
      )
    }
    values.push(value)
  }
  return values
}

/**
 * The row context for a message: `(row context tenant_id = "acme", id = "42")`.
 *
 * @param table - The table.
 * @param values - Canonical context values.
 */
export function contextSuffix(table: TableInfo, values: readonly string[]): string {
  return ` (row context ${describeContext(table.context, values)})`
}

/** The row context as an error field: context column → canonical value. */
export function contextRecord(table: TableInfo, values: readonly string[]): Record<string, string> {
  return Object.fromEntries(table.context.map((name, i) => [name, values[i] ?? '']))
}

/**
 * The error of a write that does not carry a context value.
 *
 * @param table - The table written.
 * @param name - The context column missing from the statement, or holding an unusable value.
 * @param why - What is wrong with it, e.g. `is not in the statement`.
 * @param operator - The statement kind, e.g. `insert`.
 */
export function contextMissing(
  table: TableInfo,
  name: string,
  why: string,
  operator: string,
): QueryRefusedError {
  const first = table.columns.values().next().value
  return new QueryRefusedError(
    'CONTEXT_MISSING',
    `Refused ${operator} into ${table.physical}: context column ${name} ${why}; the encrypted columns of ${table.physical} are bound to (${table.context.join(', ')}). Nothing was sent.`,
    {
      table: table.logical,
      column: first?.logical,
      operator,
      hint: `Give every context column (${table.context.join(', ')}) a value in the statement, as a string or an integer: generate ids in the application (e.g. crypto.randomUUID()), not with serial/auto-increment or a column default.`,
    },
  )
}
