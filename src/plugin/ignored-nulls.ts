import { type ColumnUpdateNode, InsertQueryNode, type OperationNode, type RootOperationNode } from 'kysely'
import type { Catalog, CatalogTable } from '../schema/catalog.js'
import type { ColumnInfo, EncryptedSchema } from '../schema/schema.js'
import { DEFAULT, nodeValue } from './nodes.js'
import { refuse } from './refusal.js'
import { identifierName, tableName } from './table-names.js'

/**
 * MySQL/MariaDB `INSERT IGNORE` turns the errors of a strict `sql_mode` into warnings: NULL, or
 * no value, for a column declared `NOT NULL` is stored as empty bytes (`''`), which no key ever
 * decrypts (`NOT_CIPHERTEXT` on every read of the row), where without `IGNORE` the database
 * refuses the row. Such an INSERT into an encrypted column is refused before it is sent, where
 * the schema check's catalog says the column is `NOT NULL`: a column the statement leaves out,
 * a row that gives it NULL or DEFAULT, an `ON DUPLICATE KEY UPDATE` that sets it to NULL.
 *
 * Runs on the final tree (the plugin's own, or one it did not produce), only for an INSERT with
 * IGNORE: every other statement returns at the first test.
 *
 * @param schema - The plugin's view of the encrypted schema.
 * @param catalog - The schema check's catalog; undefined (check off or not run): no check.
 * @param node - The statement.
 * @throws QueryRefusedError `QUERY_REFUSED`, operator `insert ignore`, naming the column
 */
export function refuseIgnoredNulls(
  schema: EncryptedSchema,
  catalog: Catalog | undefined,
  node: RootOperationNode | undefined,
): void {
  if (node === undefined || !InsertQueryNode.is(node) || !isIgnore(node)) return
  if (catalog === undefined || catalog.family !== 'mysql' || node.into === undefined) return
  const { schema: database, name } = tableName(node.into)
  const info = schema.table(name, database) ?? schema.tableIgnoringCase(name, database)
  const live = catalog.table(database === undefined ? name : `${database}.${name}`)
  if (info === undefined || live === undefined) return
  const columns = (node.columns ?? []).map((c) => identifierName(c.column).toLowerCase())
  const rows =
    node.values?.kind === 'ValuesNode'
      ? (node.values as unknown as { values: ReadonlyArray<{ kind: string; values: readonly unknown[] }> })
          .values
      : undefined
  for (const column of info.columns.values()) {
    if (!catalog.notNull(live, column.stored)) continue
    const at = columns.indexOf(column.stored.toLowerCase())
    // Left out of the column list, of VALUES or of INSERT … SELECT (which may fill plain columns
    // only) alike. (An INSERT … SELECT without a column list fills the encrypted column from the
    // SELECT, which the analysis refuses before this.)
    if (at === -1) throw ignored(column, live, 'gets no value')
    for (const row of rows ?? []) {
      const item = row.values[at]
      const value = row.kind === 'PrimitiveValueListNode' ? item : nodeValue(item as OperationNode)
      if (value === null || value === undefined || value === DEFAULT) throw ignored(column, live, 'gets NULL')
    }
  }
  for (const update of node.onDuplicateKey?.updates ?? []) {
    const set = update as ColumnUpdateNode
    const target = identifierName((set.column as unknown as { column: OperationNode }).column).toLowerCase()
    const column = [...info.columns.values()].find((c) => c.stored.toLowerCase() === target)
    if (column !== undefined && catalog.notNull(live, column.stored) && nodeValue(set.value) === null)
      throw ignored(column, live, 'is set to NULL')
  }
}

/** `insertInto(…).ignore()`: Kysely 0.28 sets `orAction` (and, before it, `ignore`). */
function isIgnore(node: InsertQueryNode): boolean {
  const legacy = (node as { ignore?: boolean }).ignore === true
  const action = (node as { orAction?: { action: string } }).orAction?.action
  return legacy || action?.toLowerCase() === 'ignore'
}

function ignored(column: ColumnInfo, live: CatalogTable, what: string) {
  return refuse(
    column,
    'insert ignore',
    `${live.name}.${column.stored} is NOT NULL and ${what}: under IGNORE MySQL stores empty bytes there, which never decrypt`,
    'Give the column a value, make it nullable, or insert without IGNORE (the database then refuses the row).',
  )
}
