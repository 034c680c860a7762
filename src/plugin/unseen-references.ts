import type { OperationNode, ReferenceNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema } from '../schema/schema.js'
import { listValues } from './nodes.js'
import type { Scope } from './scope.js'
import { identifierName, tableName } from './table-names.js'

/**
 * References through a qualifier the plugin does not see: one raw SQL of the query may declare
 * (`… as agg`, which MySQL's jsonArrayFrom reads as `agg.id`), so such a reference is let through
 * where the raw SQL holds the word (analyzer.ts, `checkUnseen`), but not with a value beside it.
 */

/**
 * The encrypted column of some table of `schema` that `column` names (itself, its blind index, the
 * name queries use for it when it is stored under another, or any of them but for case: MySQL's
 * rule), if any: only to name it in the refusal.
 */
export function encryptedNamed(schema: EncryptedSchema, column: string): ColumnInfo | undefined {
  const folded = column.toLowerCase()
  for (const table of schema.tables.values()) {
    const info = table.column(column) ?? table.indexColumn(column)?.column ?? table.columnIgnoringCase(column)
    if (info !== undefined) return info
    // The name queries use for a column stored under another (storedAs, in the plugin's view).
    for (const c of table.columns.values()) if (c.mapped?.name.toLowerCase() === folded) return c
  }
  return undefined
}

/**
 * A qualified column whose qualifier this scope does not see, compared with a value: refused
 * when the column is named like an encrypted column or a blind index of the schema, or like one
 * a relation of the query passes an encrypted column on as (a derived table's `secret as
 * secret_x`). The plugin cannot tell what the relation is, so the value may be a plaintext of an
 * encrypted column, and it would be sent before the database rejects the name:
 * `.where(sql\`nowhere.id = 1\`).where('nowhere.secret', '=', v)` sent `v` (helper-86's fuzzer).
 *
 * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
 */
export function refuseUnseenBesideValue(
  schema: EncryptedSchema,
  side: OperationNode,
  other: OperationNode,
  scope: Scope,
): void {
  if (side.kind !== 'ReferenceNode') return
  const ref = side as ReferenceNode
  if (ref.table === undefined || ref.column.kind !== 'ColumnNode') return
  const qualifier = tableName(ref.table).name
  if (scope.sees(qualifier) || listValues(other) === undefined) return
  const column = identifierName(ref.column.column)
  const info = encryptedNamed(schema, column) ?? scope.carrying(column)
  if (info === undefined) return
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `"${qualifier}.${column}" names no relation the plugin can see (only raw SQL of the query names ${qualifier}), and ${column} is named like encrypted column ${info.table.physical}.${info.physical}: the value compared with it may be its plaintext.`,
    {
      table: info.table.logical,
      column: info.logical,
      hint: 'Qualify the column with the table name or alias used in FROM or JOIN, spelt exactly.',
    },
  )
}
