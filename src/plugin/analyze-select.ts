import type {
  OperationNode,
  OrderByNode,
  RawNode,
  ReferenceNode,
  SelectionNode,
  SelectQueryNode,
} from 'kysely'
import type { AnalysisContext, PendingFilter, StatementAnalysis } from './analysis-context.js'
import { whereNode } from './analyze-conditions.js'
import { modifiers, opaque, statementExtras } from './analyze-expressions.js'
import { froms, join, statementScope } from './analyze-from.js'
import { hiddenSelections, postFilterable } from './analyze-post-filters.js'
import { checkIndexPairs, plainOutputs, selections } from './analyze-selections.js'
import { firstColumn } from './column-rules.js'
import { contextSelections } from './context-selections.js'
import { refusePlainOutputsInHaving } from './having-outputs.js'
import { withoutHidden } from './hidden-selections.js'
import { mapChildren } from './node-utils.js'
import { columnName, rebuild, rebuildList } from './nodes.js'
import { refuseRawOutputRefs } from './raw-output-refs.js'
import { refuse } from './refusal.js'
import { checkReservedAliases } from './reserved-aliases.js'
import type { Scope } from './scope.js'

/** Clauses walked as opaque expressions; module constants, not arrays made per query. */
const LIMITS = ['limit', 'offset', 'fetch', 'top'] as const

/**
 * How a SELECT is analyzed: its WITH, FROM and JOINs make a new level of scope; its select list
 * says which outputs pass encrypted columns on; its WHERE is rewritten to blind-index searches
 * (at the root, with a check of the decrypted rows); GROUP BY, ORDER BY, DISTINCT ON, LIMIT and
 * modifiers may not use an encrypted column; set operations may not carry one.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`, `AMBIGUOUS_COLUMN`, `PLAINTEXT_SEARCH`
 */
export const analyzeSelect: StatementAnalysis<SelectQueryNode> = (a, node, parent, role, ctes = parent) => {
  const { scope, patch } = statementScope(a, node, parent, ctes)
  if (node.from) patch.from = froms(a, node.from, scope, parent)
  if (node.joins) patch.joins = rebuildList(node.joins, (j) => join(a, j, scope, parent))
  // A subquery built from `db` was transformed once as a query of its own, which may have
  // added hidden selections for its index conditions: as a subquery it returns no rows itself.
  const own = role === 'root' || !node.selections ? node.selections : withoutHidden(node.selections)
  const { nodes, outputs, origins, plainNamed, names } = selections(a, own ?? [], scope, role)
  if (node.selections)
    checkReservedAliases(a, node.selections, outputs, origins, scope, role, true, node.where)
  if (node.selections) patch.selections = nodes
  if (role === 'derived') checkIndexPairs(outputs, origins)
  const pending: PendingFilter[] | undefined = role === 'root' ? [] : undefined
  if (node.where)
    patch.where = whereNode(a, node.where, scope, {
      pending,
      positive: true,
      place: role === 'root' ? 'select' : 'subquery',
    })
  if (node.groupBy) {
    refuseRawOutputRefs(node.groupBy, outputs, 'group by')
    patch.groupBy = opaque(a, node.groupBy, scope, 'group by')
  }
  if (node.orderBy) {
    refuseRawOutputRefs(node.orderBy, outputs, 'order by')
    patch.orderBy = orderBy(a, node.orderBy, scope, plainOutputs(plainNamed, outputs))
  }
  if (node.distinctOn) {
    for (const n of node.distinctOn) refuseRawOutputRefs(n, outputs, 'distinct on')
    patch.distinctOn = rebuildList(node.distinctOn, (n) => opaque(a, n, scope, 'distinct on'))
  }
  if (node.having) {
    refuseRawOutputRefs(node.having, outputs, 'having')
    refusePlainOutputsInHaving(node.having, plainNamed, scope)
  }
  if (node.having)
    patch.having = whereNode(a, node.having, scope, {
      pending: undefined,
      positive: false,
      place: 'having',
    })
  for (const key of LIMITS) {
    if (node[key]) patch[key] = opaque(a, node[key] as OperationNode, scope, 'expression')
  }
  modifiers(a, node, scope, patch)
  statementExtras(a, node, scope, patch)
  const annotated = firstColumn(outputs)
  if (node.setOperations) {
    patch.setOperations = node.setOperations.map((op) => {
      // A branch sees the enclosing query, not this one's tables; but every CTE of this query.
      const branch = a.query(
        (op as unknown as { expression: OperationNode }).expression,
        parent,
        'derived',
        scope,
      )
      const hit = firstColumn(branch.outputs) ?? annotated
      if (hit?.kind === 'column') throw refuse(hit.info, 'set operation')
      return Object.freeze({ ...op, expression: branch.node })
    })
  }
  if (annotated !== undefined) {
    if (node.frontModifiers?.some((m) => (m as unknown as { modifier?: string }).modifier === 'Distinct')) {
      throw refuse(annotated.info, 'distinct')
    }
    if (role === 'opaque') throw refuse(annotated.info, 'subquery', 'its result is used in an expression')
  }
  if (pending !== undefined && pending.length > 0) {
    const filters = postFilterable(node, pending)
    if (filters.length > 0) {
      patch.selections = hiddenSelections(
        a,
        (patch.selections ?? node.selections ?? []) as SelectionNode[],
        filters,
        outputs,
        origins,
      )
    }
  }
  if (role === 'root') {
    const context = contextSelections(
      (patch.selections ?? node.selections ?? []) as SelectionNode[],
      outputs,
      origins,
      a.mode === 'verify',
    )
    if (context !== undefined) {
      patch.selections = context.nodes
      a.addOutputContext(context.context, context.hidden)
    }
  }
  return { node: rebuild(node, patch), outputs, names }
}

/**
 * ORDER BY. A bare name that is a plaintext output of the select list sorts by that output, even
 * where a relation in scope has an encrypted column of that name: in ORDER BY, SQL looks a simple
 * name up among the output names first (PostgreSQL: "an output column name … interpreted as the
 * output column"; MySQL: "searching in the select_expr values, then in the columns of the tables
 * in the FROM clause"). Any other item may not use an encrypted column.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`, `AMBIGUOUS_COLUMN`
 */
function orderBy(
  a: AnalysisContext,
  node: OrderByNode,
  scope: Scope,
  plain: ReadonlySet<string>,
): OrderByNode {
  return rebuild(node, {
    items: rebuildList(node.items, (item) => {
      const name = bareName(item.orderBy)
      if (name === undefined || !plain.has(name)) return opaque(a, item, scope, 'order by')
      // The name is the output; a direction or collation given as raw SQL is still walked.
      return mapChildren(item, (child) =>
        child === item.orderBy ? child : opaque(a, child, scope, 'order by'),
      )
    }),
  })
}

/**
 * The name of an unqualified column reference (`email`), also as raw SQL of that reference alone
 * (`sql\`${sql.ref('email')}\``, printed the same), else undefined.
 */
function bareName(node: OperationNode): string | undefined {
  if (node.kind === 'RawNode') {
    const raw = node as RawNode
    const only = raw.parameters.length === 1 && raw.sqlFragments.every((f) => f.trim() === '')
    return only ? bareName(raw.parameters[0] as OperationNode) : undefined
  }
  if (node.kind === 'ColumnNode') return columnName(node)
  const ref = node as ReferenceNode
  if (node.kind !== 'ReferenceNode' || ref.table !== undefined || ref.column.kind !== 'ColumnNode')
    return undefined
  return columnName(ref)
}
