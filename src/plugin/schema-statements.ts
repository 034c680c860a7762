import type { OperationNode, RawNode, ValueNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema, TableInfo } from '../schema/schema.js'
import { someChild } from './node-utils.js'
import { columnName } from './nodes.js'
import { operandText } from './raw-text.js'
import { tableName } from './table-names.js'

/**
 * Schema statements (`db.schema.createTable`, `createIndex`, `alterTable`) are sent as written:
 * the plugin does not rewrite them. Kysely writes their values into the SQL text, so an
 * expression of one that sets an encrypted column's ciphertext column against a value (a partial
 * index's `where('email', '=', 'ada@example.com')`, a CHECK, a DEFAULT, a generated column) would
 * put the plaintext into the statement and the database's catalog, where it is compared with, or
 * stored as, something that is no ciphertext (helper-135). Those are refused. `is [not] null`
 * holds no value, and a blind index column may be named.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `index where`, `check`, `default` or
 *   `generated`)
 */
export function checkSchemaStatement(root: OperationNode, schema: EncryptedSchema): void {
  const target = (root as { table?: OperationNode }).table
  if (target === undefined || target.kind !== 'TableNode') return
  const { schema: s, name } = tableName(target)
  const table = schema.table(name, s) ?? schema.tableIgnoringCase(name, s)
  if (table !== undefined) visit(root, table)
}

/** Finds the expressions of a schema statement and checks each. */
function visit(node: OperationNode, table: TableInfo): void {
  const n = node as unknown as Record<string, OperationNode | undefined>
  switch (node.kind) {
    case 'CreateIndexNode':
      if (n.where !== undefined) checkExpression(n.where, table, 'index where')
      return
    case 'CheckConstraintNode':
      checkExpression(n.expression as OperationNode, table, 'check')
      return
    case 'ColumnDefinitionNode':
    case 'AlterColumnNode': {
      const column = storedColumn(table, columnName(n.column as OperationNode))
      const value = n.defaultTo ?? n.setDefault
      if (column !== undefined && value !== undefined && holdsValue(value)) throw refusal(column, 'default')
      const generated = n.generated as { expression?: OperationNode } | undefined
      if (column !== undefined && generated?.expression !== undefined) throw refusal(column, 'generated')
      if (n.check !== undefined) visit(n.check, table)
      return
    }
    default:
      someChild(node, (child) => {
        visit(child, table)
        return false
      })
  }
}

/** Refuses `expression` when it names a ciphertext column of `table` and holds a value. */
function checkExpression(expression: OperationNode, table: TableInfo, place: string): void {
  if (!holdsValue(expression)) return
  const column = namedColumn(expression, table)
  if (column !== undefined) throw refusal(column, place)
}

/** The encrypted column whose ciphertext column `name` is (ignoring case), if any. */
function storedColumn(table: TableInfo, name: string): ColumnInfo | undefined {
  const folded = name.toLowerCase()
  for (const c of table.columns.values()) if (c.stored.toLowerCase() === folded) return c
  return undefined
}

/** A ciphertext column of `table` that `node` names: as a column, a reference, or in raw SQL. */
function namedColumn(node: OperationNode, table: TableInfo): ColumnInfo | undefined {
  if (node.kind === 'ColumnNode') return storedColumn(table, columnName(node))
  if (node.kind === 'RawNode') {
    // Literals blanked: a name in a string is no column.
    const text = operandText(node).replace(/'(?:[^']|'')*'/g, "''")
    for (const word of text.match(/[\p{L}_][\p{L}\p{N}_$]*/gu) ?? []) {
      const column = storedColumn(table, word)
      if (column !== undefined) return column
    }
  }
  let found: ColumnInfo | undefined
  someChild(node, (child) => {
    found = namedColumn(child, table)
    return found !== undefined
  })
  return found
}

/** True when `node` holds a value other than null: a value, a list of them, or a string literal in raw SQL. */
function holdsValue(node: OperationNode): boolean {
  switch (node.kind) {
    case 'ValueNode': {
      const { value } = node as ValueNode
      return value !== null && value !== undefined
    }
    case 'ValueListNode':
    case 'PrimitiveValueListNode':
      return true
    case 'RawNode':
      if (/'/.test((node as RawNode).sqlFragments.join(''))) return true
  }
  return someChild(node, holdsValue)
}

function refusal(column: ColumnInfo, place: string): QueryRefusedError {
  const t = column.table
  return new QueryRefusedError(
    'QUERY_REFUSED',
    `Refused ${place} on encrypted column ${t.physical}.${column.stored} in a schema statement: Kysely writes its values into the SQL text, so a plaintext would be sent, stored in the database's catalog and set against ciphertext, which it never equals. Nothing was sent.`,
    {
      table: t.logical,
      column: column.logical,
      operator: place,
      hint:
        place === 'default' || place === 'generated'
          ? 'An encrypted column holds what the plugin writes: give it no default or generated value (a default of null is fine), or send the statement as raw SQL (sql`…`.execute(db)), which the plugin sends as written.'
          : `Name the column's blind index instead, against bytes from encryption.indexOf('${t.logical}', '${column.logical}', value), or send the statement as raw SQL (sql\`…\`.execute(db)), which the plugin sends as written.`,
    },
  )
}
