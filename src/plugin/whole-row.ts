import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo } from '../schema/schema.js'
import { encryptedIn, type Scope } from './scope.js'

/**
 * Whole-row values: a relation's name used as a value (`to_json(t)`, `json_agg(t)`,
 * `row_to_json(t)`, `select t from t`, `t.*` as a function argument). The database builds the
 * value from the stored row, ciphertexts and blind indexes included, inside a JSON or record the
 * plugin cannot take apart: such a value of a relation with encrypted columns is refused.
 */

/**
 * The encrypted column a whole-row value named `name` would carry: a relation of that name in
 * scope (alias, CTE, derived table), else an encrypted table of that name.
 */
export function wholeRowColumn(scope: Scope, name: string, schemaName?: string): ColumnInfo | undefined {
  const relation = schemaName === undefined ? scope.relationNamed(name) : undefined
  if (relation !== undefined) return encryptedIn(relation)
  return scope.schema.table(name, schemaName)?.columns.values().next().value
}

/**
 * {@link wholeRowColumn} for a name read from raw SQL: a relation in scope or an encrypted table
 * named so but for case counts too, since PostgreSQL folds an unquoted name to lower case (`R.*`
 * is `r.*`) and MySQL may match table names ignoring case.
 */
export function rawWholeRowColumn(scope: Scope, name: string, schemaName?: string): ColumnInfo | undefined {
  const exact = wholeRowColumn(scope, name, schemaName)
  if (exact !== undefined) return exact
  const folded = name.toLowerCase()
  if (schemaName === undefined) {
    for (let s: Scope | undefined = scope; s !== undefined; s = s.parent) {
      for (const r of s.relations) {
        const info = r.name.toLowerCase() === folded ? encryptedIn(r) : undefined
        if (info !== undefined) return info
      }
    }
  }
  return scope.schema.tableIgnoringCase(name)?.columns.values().next().value
}

/**
 * @param how - what the value is, for the message (e.g. `json_agg(users)`)
 * @throws QueryRefusedError `QUERY_REFUSED` when `name` is a relation carrying an encrypted column
 */
export function refuseWholeRow(scope: Scope, name: string, how: string, schemaName?: string): void {
  const info = wholeRowColumn(scope, name, schemaName)
  if (info !== undefined) throw wholeRowError(info, name, how)
}

/** The error for a whole-row value of `name`, which carries encrypted column `info`. */
export function wholeRowError(info: ColumnInfo, name: string, how: string): QueryRefusedError {
  return new QueryRefusedError(
    'QUERY_REFUSED',
    `Refused ${how}: it makes a whole-row value of ${name}, which carries encrypted column ${info.table.physical}.${info.physical}; the database would put the ciphertexts and blind indexes into it. Nothing was sent.`,
    {
      table: info.table.logical,
      column: info.logical,
      operator: 'whole row',
      hint: 'Select the columns you need (the plugin decrypts them) and build the JSON or record in the application.',
    },
  )
}
