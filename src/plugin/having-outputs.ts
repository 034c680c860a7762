import type { OperationNode, ReferenceNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import { ROW_STATEMENTS, someChild } from './node-utils.js'
import { columnName } from './nodes.js'
import type { Scope } from './scope.js'

/**
 * Refuses a bare name in HAVING that is both a plaintext output of the select list and an
 * encrypted column (or blind index) in scope: `select(['name as email']).groupBy('id')
 * .having('email', '=', v)`. MySQL and MariaDB read a bare name in HAVING as the select-list
 * alias first (ignoring case; MariaDB 10.11 takes the column only where GROUP BY names it, or
 * inside an aggregate), PostgreSQL as the column. The plugin rewrote it as a search of the
 * encrypted column: MySQL rejected `having email_bidx in (?)`, or compared the output with the
 * index and returned no row. Refused on every engine (the analysis does not know the engine; a
 * query should not mean one thing on one and another on the other), inside aggregates too.
 *
 * Subqueries of the clause are their own queries: a bare name there resolves in their own FROM
 * first, and one that reaches an enclosing query's encrypted column is refused (scope.ts).
 *
 * @param having - The HAVING clause's node, as written.
 * @param plainNamed - Names explicit items of the select list give to plaintext values.
 * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
 */
export function refusePlainOutputsInHaving(
  having: OperationNode,
  plainNamed: ReadonlySet<string>,
  scope: Scope,
): void {
  if (plainNamed.size === 0) return
  const folded = new Set([...plainNamed].map((n) => n.toLowerCase()))
  const visit = (node: OperationNode): boolean => {
    if (ROW_STATEMENTS.has(node.kind)) return false
    if (node.kind !== 'ReferenceNode') return someChild(node, visit)
    const ref = node as ReferenceNode
    if (ref.table !== undefined || ref.column.kind !== 'ColumnNode') return false
    const name = columnName(ref)
    if (folded.has(name.toLowerCase())) refuseShadowed(name, scope)
    return false
  }
  visit(having)
}

/** Refuses `name` when it resolves to an encrypted column or blind index in scope. */
function refuseShadowed(name: string, scope: Scope): void {
  const found = scope.resolve(name, undefined)
  if (found === undefined) return
  const info = found.source.kind === 'column' ? found.source.info : found.source.info.column
  throw new QueryRefusedError(
    'AMBIGUOUS_COLUMN',
    `"${name}" in HAVING names both a plaintext output of the select list and encrypted column ${info.table.physical}.${info.physical} (or its blind index): MySQL and MariaDB read the output there, PostgreSQL the column.`,
    {
      table: info.table.logical,
      column: info.logical,
      // Not "qualify it": MariaDB does not read a qualified name in HAVING as the column either.
      hint: `Give the output another alias; a condition on the encrypted column goes in where().`,
    },
  )
}
