import type { OperationNode } from 'kysely'

/** Names in Kysely's node tree: identifiers, tables, and a raw node that stands for a table. */

/**
 * The name of an `IdentifierNode` (or anything with a `name`). Always a string: Kysely wraps a
 * non-string alias given where a name is typed (a query builder's `.as(sql\`…\`)`) in an
 * identifier as it is.
 */
export function identifierName(node: OperationNode): string {
  const name = (node as unknown as { name: unknown }).name
  return typeof name === 'string' ? name : String(name)
}

/**
 * Table and schema names of a `TableNode`. Its `table` is a `SchemableIdentifierNode`, or a bare
 * `IdentifierNode` where Kysely's WithSchemaPlugin keeps a name unqualified (json_agg/to_json
 * arguments, `for update of …`).
 */
export function tableName(node: OperationNode): { schema: string | undefined; name: string } {
  const t = (node as unknown as { table: { schema?: OperationNode; identifier: OperationNode } }).table
  if ((t as unknown as OperationNode).kind === 'IdentifierNode')
    return { schema: undefined, name: identifierName(t as unknown as OperationNode) }
  return {
    schema: t.schema === undefined ? undefined : identifierName(t.schema),
    name: identifierName(t.identifier),
  }
}

/**
 * The table part of a name that holds an alias Kysely did not parse (`insertInto('users as u')`
 * makes one table named `users as u`), else `undefined`.
 */
export function unparsedAlias(name: string): string | undefined {
  return /^(\S+)\s+as\s+\S+$/i.exec(name)?.[1]
}

/**
 * The table a raw node stands for when it is nothing but one (`sql.table('users')`, possibly
 * inside another `sql\`${…}\`` with no text of its own), else `undefined`.
 */
export function rawTable(node: OperationNode): OperationNode | undefined {
  let n: OperationNode = node
  while (n.kind === 'RawNode') {
    const raw = n as unknown as { sqlFragments: readonly string[]; parameters: readonly OperationNode[] }
    if (raw.parameters.length !== 1 || !raw.sqlFragments.every((f) => f.trim() === '')) return undefined
    n = raw.parameters[0] as OperationNode
  }
  return n.kind === 'TableNode' ? n : undefined
}
