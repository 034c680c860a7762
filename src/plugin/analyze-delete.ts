import type { AliasNode, DeleteQueryNode, JoinNode, OperationNode } from 'kysely'
import type { StatementAnalysis } from './analysis-context.js'
import { whereNode } from './analyze-conditions.js'
import { modifiers, opaque, statementExtras } from './analyze-expressions.js'
import { fromItem, join, statementScope } from './analyze-from.js'
import { returning } from './analyze-selections.js'
import { rebuild, rebuildList } from './nodes.js'
import { identifierName, tableName } from './table-names.js'

/**
 * How a DELETE is analyzed: its target tables and USING relations make the scope, its WHERE is
 * rewritten to blind-index searches (no check of rows: none come back to check), ORDER BY may
 * not use an encrypted column, and RETURNING makes its outputs.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`, `AMBIGUOUS_COLUMN`, `PLAINTEXT_SEARCH`
 */
export const analyzeDelete: StatementAnalysis<DeleteQueryNode> = (a, node, parent, role, ctes = parent) => {
  const { scope, patch } = statementScope(a, node, parent, ctes)
  // MySQL's multi-table DELETE names its targets by relations of USING and its joins
  // (`delete from a using users as a`): such a target stands for that relation and adds
  // none. Others are added first, in SQL's order (RETURNING * lists them first).
  const bound = node.using === undefined ? undefined : usingNames(node.using.tables, node.joins)
  patch.from = rebuild(node.from, {
    froms: rebuildList(node.from.froms, (f) =>
      bound !== undefined && f.kind === 'TableNode' && bound.has(tableName(f).name)
        ? f
        : fromItem(a, f, scope, parent, true),
    ),
  })
  if (node.using) {
    patch.using = rebuild(node.using, {
      tables: rebuildList(node.using.tables, (t) => fromItem(a, t, scope, parent)),
    })
  }
  if (node.joins) patch.joins = rebuildList(node.joins, (j) => join(a, j, scope, parent))
  if (node.where)
    patch.where = whereNode(a, node.where, scope, {
      pending: undefined,
      positive: true,
      place: 'delete',
    })
  if (node.orderBy) patch.orderBy = opaque(a, node.orderBy, scope, 'order by')
  modifiers(a, node, scope, patch)
  statementExtras(a, node, scope, patch)
  return returning(a, node, scope, role, patch)
}

/** The names USING and its joins give their relations (alias, else table name). */
function usingNames(
  tables: ReadonlyArray<OperationNode>,
  joins: ReadonlyArray<JoinNode> | undefined,
): Set<string> {
  const names = new Set<string>()
  for (const item of [...tables, ...(joins ?? []).map((j) => j.table)]) {
    if (item.kind === 'AliasNode') names.add(identifierName((item as AliasNode).alias))
    else if (item.kind === 'TableNode') names.add(tableName(item).name)
  }
  return names
}
