import type { BinaryOperationNode, OperationNode, RawNode, ValueNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema, TableInfo } from '../schema/schema.js'
import { someChild } from './node-utils.js'
import { columnName } from './nodes.js'
import { tableName } from './table-names.js'

/**
 * Schema statements (`db.schema.createTable`, `createIndex`, `alterTable`) are sent as written:
 * the plugin does not rewrite them, and Kysely writes their values into the SQL text. In one over
 * an encrypted table, a comparison written with the builder that sets an encrypted column's
 * ciphertext column against a value (a partial index's `where('email', '=', 'ada@example.com')`,
 * a CHECK or generated expression, an index expression) would put the plaintext into the
 * statement and the database's catalog, compared with ciphertext it never equals; a DEFAULT of
 * such a column would store something that is no ciphertext (helper-135). Those are refused.
 * `is [not] null` holds no value; a blind index column and plain columns may be set against
 * values. Raw SQL in a schema statement (`sql\`email <> 'x'\``) is not read: it is sent as
 * written, as a raw statement is (docs/security.md).
 *
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `index`, `index where`, `where`, `check`,
 *   `default` or `generated`)
 */
export function checkSchemaStatement(root: OperationNode, schema: EncryptedSchema): void {
  const target = (root as { table?: OperationNode }).table
  if (target === undefined || target.kind !== 'TableNode') return
  const { schema: s, name } = tableName(target)
  const table = schema.table(name, s) ?? schema.tableIgnoringCase(name, s)
  if (table !== undefined) visit(root, table, 'schema statement')
}

/** Checks `node` and what it holds; `place` names the part of the statement for a refusal. */
function visit(node: OperationNode, table: TableInfo, place: string): void {
  switch (node.kind) {
    case 'ColumnDefinitionNode':
    case 'AlterColumnNode': {
      const n = node as unknown as {
        column: OperationNode
        defaultTo?: { defaultValue: OperationNode }
        setDefault?: OperationNode
        generated?: { expression?: OperationNode }
      }
      const column = storedColumn(table, columnName(n.column))
      if (column !== undefined) {
        const value = n.defaultTo?.defaultValue ?? n.setDefault
        if (value !== undefined && holdsValue(value)) throw refusal(column, 'default')
        if (n.generated?.expression !== undefined) throw refusal(column, 'generated')
      }
      break
    }
    case 'BinaryOperationNode': {
      const { leftOperand, rightOperand } = node as BinaryOperationNode
      const column = namedColumn(leftOperand, table) ?? namedColumn(rightOperand, table)
      if (column !== undefined && (holdsValue(leftOperand) || holdsValue(rightOperand)))
        throw refusal(column, place)
      break
    }
  }
  const inner = placeOf(node.kind, place)
  someChild(node, (child) => {
    visit(child, table, inner)
    return false
  })
}

/** The part of a schema statement a node of `kind` starts, inside `place`. */
function placeOf(kind: string, place: string): string {
  switch (kind) {
    case 'CreateIndexNode':
    case 'AddIndexNode':
      return 'index'
    case 'WhereNode':
      return place === 'index' ? 'index where' : 'where'
    case 'CheckConstraintNode':
      return 'check'
    case 'GeneratedNode':
      return 'generated'
    default:
      return place
  }
}

/** The encrypted column whose ciphertext column `name` is (ignoring case), if any. */
function storedColumn(table: TableInfo, name: string): ColumnInfo | undefined {
  const folded = name.toLowerCase()
  for (const c of table.columns.values()) if (c.stored.toLowerCase() === folded) return c
  return undefined
}

/** A ciphertext column of `table` that `node` names as a column or a reference (not in raw SQL). */
function namedColumn(node: OperationNode, table: TableInfo): ColumnInfo | undefined {
  if (node.kind === 'ColumnNode') return storedColumn(table, columnName(node))
  if (node.kind === 'RawNode') return undefined
  let found: ColumnInfo | undefined
  someChild(node, (child) => {
    found = namedColumn(child, table)
    return found !== undefined
  })
  return found
}

/**
 * True when `node` holds a value other than null: a value or a list of them, or raw SQL other
 * than `null` (its text may be a literal in any quoting: `'…'`, `$$…$$`, MySQL's `"…"`).
 */
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
      if (!/^\s*(?:null\s*)?$/i.test((node as RawNode).sqlFragments.join(''))) return true
      break // `null`, or only parameters: read those below
  }
  return someChild(node, holdsValue)
}

function refusal(column: ColumnInfo, place: string): QueryRefusedError {
  const t = column.table
  const stored = place === 'default' || place === 'generated'
  const why = stored
    ? 'the database would store a value that is no ciphertext in a column of ciphertexts, and reading it would fail to decrypt'
    : "Kysely writes its values into the SQL text, so a plaintext would be sent, stored in the database's catalog and set against ciphertext, which it never equals"
  return new QueryRefusedError(
    'QUERY_REFUSED',
    `Refused ${place} on encrypted column ${t.physical}.${column.stored} in a schema statement: ${why}. Nothing was sent.`,
    {
      table: t.logical,
      column: column.logical,
      operator: place,
      hint: stored
        ? 'An encrypted column holds what the plugin writes: give it no default or generated value (a default of null is fine), or send the statement as raw SQL (sql`…`.execute(db)), which the plugin sends as written.'
        : `Name the column's blind index instead, against bytes from encryption.indexOf('${t.logical}', '${column.logical}', value), or send the statement as raw SQL (sql\`…\`.execute(db)), which the plugin sends as written.`,
    },
  )
}
