import type { MergeQueryNode, OperationNode } from 'kysely'
import type { AnalysisContext } from './analysis-context.js'
import { opaque } from './analyze-expressions.js'
import { fromItem, withClause } from './analyze-from.js'
import { mapChildren } from './node-utils.js'
import { rebuild } from './nodes.js'
import { refuse } from './refusal.js'
import { encryptedIn, Scope } from './scope.js'

/**
 * How a MERGE is analyzed: it is refused on a table with encrypted columns, as a target or as its
 * source; a subquery source is analyzed like a derived table, and may not pass an encrypted
 * column on. Its outputs are never encrypted, but its subqueries may hold deferred values.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`
 */
export function analyzeMerge(a: AnalysisContext, node: MergeQueryNode): OperationNode {
  const scope = new Scope(a.schema, undefined)
  const patch: Record<string, unknown> = {}
  if (node.with) patch.with = withClause(a, node.with, scope)
  const into = scope.addTable(node.into, true)?.table?.columns.values().next().value
  if (into !== undefined) throw refuse(into, 'merge')
  if (node.using) {
    const before = scope.relations.length
    const table = fromItem(a, node.using.table, scope, undefined)
    const source = scope.relations[before]
    const carried = source === undefined ? undefined : encryptedIn(source)
    if (carried !== undefined) throw refuse(carried, 'merge')
    patch.using = rebuild(node.using, {
      table,
      ...(node.using.on ? { on: opaque(a, node.using.on, scope, 'merge') } : {}),
    })
  }
  const rest = mapChildren(node, (child) =>
    child === node.into || child === node.using || child === node.with
      ? child
      : opaque(a, child, scope, 'merge'),
  )
  return rebuild(rest, patch)
}
