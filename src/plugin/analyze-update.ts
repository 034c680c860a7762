import type { OperationNode, UpdateQueryNode, WhereNode } from 'kysely'
import { contextMissing } from '../schema/row-context.js'
import type { StatementAnalysis } from './analysis-context.js'
import { whereNode } from './analyze-conditions.js'
import { modifiers, opaque, statementExtras } from './analyze-expressions.js'
import { fromItem, froms, join, statementScope } from './analyze-from.js'
import { returning } from './analyze-selections.js'
import { updates } from './analyze-set-items.js'
import { guardUpdate } from './context-guard.js'
import { plainSets, updateRowContext } from './context-writes.js'
import { rebuild, rebuildList } from './nodes.js'

/**
 * How an UPDATE is analyzed: its target table (or MySQL's list of targets), FROM (PostgreSQL)
 * and JOINs make the scope; its SET items write ciphertexts and their blind indexes (see
 * analyze-set-items.ts); its WHERE is rewritten to blind-index searches; ORDER BY may not use an
 * encrypted column; RETURNING makes its outputs.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`, `AMBIGUOUS_COLUMN`, `PLAINTEXT_WRITE`, `PLAINTEXT_SEARCH`
 * @throws CodecError `CODEC_INVALID_VALUE` for a value of the wrong type
 */
export const analyzeUpdate: StatementAnalysis<UpdateQueryNode> = (a, node, parent, role, ctes = parent) => {
  const { scope, patch } = statementScope(a, node, parent, ctes)
  if (node.table?.kind === 'ListNode') {
    // MySQL's multi-table UPDATE: `updateTable([a, b])`.
    const list = node.table as unknown as { items: ReadonlyArray<OperationNode> }
    patch.table = rebuild(node.table, { items: list.items.map((t) => fromItem(a, t, scope, parent, true)) })
  } else if (node.table) {
    patch.table = fromItem(a, node.table, scope, parent, true)
  }
  const single = node.table?.kind === 'ListNode' ? undefined : scope.relations[0]
  if (node.from) patch.from = froms(a, node.from, scope, parent)
  if (node.joins) patch.joins = rebuildList(node.joins, (j) => join(a, j, scope, parent))
  // A table with a row context: each row written is bound to the context values its WHERE fixes
  // (or its SET items give), read from the statement as the user wrote it.
  let bound = false
  const rowContext =
    single?.table === undefined || single.table.context.length === 0 || node.updates === undefined
      ? undefined
      : () => {
          bound = true
          return updateRowContext(
            single.table!,
            single.name,
            node.where,
            plainSets(node.updates!, single.table!),
          )
        }
  if (node.updates) patch.updates = updates(a, node.updates, scope, single, rowContext)
  if (node.where)
    patch.where = whereNode(a, node.where, scope, { pending: undefined, positive: true, place: 'update' })
  // Ciphertexts bound to the context the WHERE fixes: only rows whose stored context is exactly it.
  if (bound && patch.where !== undefined)
    patch.where = guardUpdate(
      patch.where as WhereNode,
      single!.table!,
      single!.name,
      plainSets(node.updates!, single!.table!),
    )
  // Raw SQL after the WHERE (`modifyEnd(sql\`or …\`)`) would select rows beyond the context
  // the WHERE fixes, and they would be written with ciphertexts bound to it.
  if (bound && (node.endModifiers?.length ?? 0) > 0) {
    const table = single!.table!
    throw contextMissing(
      table,
      table.context[0]!,
      'is not fixed by an update that ends in raw SQL (modifyEnd), which may widen its WHERE to rows of another context',
      'update',
    )
  }
  if (node.orderBy) patch.orderBy = opaque(a, node.orderBy, scope, 'order by')
  modifiers(a, node, scope, patch)
  statementExtras(a, node, scope, patch)
  return returning(a, node, scope, role, patch)
}
