import type { OperationNode, ReferenceNode, SelectionNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { AnalysisContext, Origin, Role } from './analysis-context.js'
import { isHiddenContextName, isHiddenName } from './hidden-selections.js'
import { columnName } from './nodes.js'
import { HIDDEN_CONTEXT_PREFIX, HIDDEN_PREFIX } from './plan.js'
import type { Relation, Scope, Source } from './scope.js'
import { identifierName, tableName } from './table-names.js'

/**
 * Refuses an output of the query's own named with the prefix of the plugin's hidden row-context
 * selections (`__kfe_ctx_`): the wrapper removes those keys from the rows, and a subquery or
 * derived table drops them from its select list, so the user's column would be lost without a word.
 * Below the root it also refuses a reference output named like the hidden post-filter selections
 * (`__kfe_fp_<n>`), which a subquery's select list drops as well, unless it has their form (at the
 * root the plugin numbers its own around the user's, and removes only its own from the rows).
 *
 * The plugin meets its own hidden selections again in two places, where they are kept: the verify
 * pass (the final tree of a query it rewrote) and a subquery built from `db` (rewritten as a query
 * of its own first). There a selection passes only in the exact form the plugin writes,
 * `<relation>.<context column> as __kfe_ctx_<n>`, beside an encrypted column of that relation (the
 * only reason it adds one). Anywhere else, and in every top-level select list or RETURNING list of
 * a query the plugin rewrites, the prefix is the user's, and refused.
 *
 * @param selections - The select list or RETURNING list as written.
 * @param outputs - Its outputs (for a subquery's select list: without the hidden selections).
 * @param origins - The relation each output was read through.
 * @param dropsHidden - A select list (of a subquery: its hidden selections are dropped), not a
 *   RETURNING list.
 * @param where - The select's WHERE, as it reached the plugin.
 * @throws QueryRefusedError `QUERY_REFUSED` (operator `alias`)
 */
export function checkReservedAliases(
  a: AnalysisContext,
  selections: ReadonlyArray<SelectionNode>,
  outputs: ReadonlyMap<string, Source>,
  origins: ReadonlyMap<string, Origin>,
  scope: Scope,
  role: Role,
  dropsHidden: boolean,
  where?: OperationNode,
): void {
  for (const s of selections) {
    const sel = s.selection
    // Raw SQL naming the prefix, in any case (PostgreSQL folds an unquoted `__KFE_CTX_0`), as a
    // selection or as an alias: never the plugin's own, which are identifiers (helper-85).
    // (Kysely's types leave raw SQL out of a selection's kinds; `select(sql\`…\`)` makes one.)
    const node = sel as OperationNode
    const raw =
      node.kind === 'RawNode'
        ? node
        : sel.kind === 'AliasNode' && sel.alias.kind === 'RawNode'
          ? sel.alias
          : undefined
    if (raw !== undefined && namesHiddenContext(raw))
      throw new QueryRefusedError(
        'QUERY_REFUSED',
        `A selection of raw SQL names ${HIDDEN_CONTEXT_PREFIX}, which the plugin reserves for the row-context columns it reads and removes from the rows. Nothing was sent.`,
        { operator: 'alias', hint: `Choose an alias that does not start with ${HIDDEN_CONTEXT_PREFIX}.` },
      )
    if (sel.kind !== 'AliasNode') continue
    const name = identifierName(sel.alias)
    if (isHiddenName(name)) {
      // Dropped (withoutHidden) only from a subquery's select list, and only as a reference.
      if (role === 'root' || !dropsHidden || sel.node.kind !== 'ReferenceNode') continue
      if (isSearchColumnOf(sel.node, scope, where)) continue
      throw new QueryRefusedError(
        'QUERY_REFUSED',
        `The output alias "${name}" of a subquery or derived table has the form ${HIDDEN_PREFIX}<n>, which the plugin reserves for the hidden columns it adds to check a search and drops from a subquery's select list: the column would be lost. Nothing was sent.`,
        { operator: 'alias', hint: `Choose an alias that is not ${HIDDEN_PREFIX} followed by digits.` },
      )
    }
    if (!name.startsWith(HIDDEN_CONTEXT_PREFIX)) continue
    // The plugin numbers each hidden column once. Twice, the driver keeps the last of the two:
    // a query compiled elsewhere could pair an encrypted column with another row's context.
    if (
      !repeated(selections, s, name) &&
      (role !== 'root' || a.mode === 'verify') &&
      isOwn(sel.node, name, selections, outputs, origins, scope)
    )
      continue
    throw new QueryRefusedError(
      'QUERY_REFUSED',
      `The output alias "${name}" starts with ${HIDDEN_CONTEXT_PREFIX}, which the plugin reserves for the row-context columns it reads and removes from the rows: the column would be lost. Nothing was sent.`,
      { operator: 'alias', hint: `Choose an alias that does not start with ${HIDDEN_CONTEXT_PREFIX}.` },
    )
  }
}

/**
 * True when raw SQL holds the hidden row-context prefix in any case, in its own text or in what it
 * splices in (`sql.raw('"__kfe_ctx_0"')`, `sql.id(…)`): every string of its tree is looked at.
 */
function namesHiddenContext(node: unknown): boolean {
  if (typeof node === 'string') return /__kfe_ctx_/i.test(node)
  if (typeof node !== 'object' || node === null) return false
  for (const value of Object.values(node)) if (namesHiddenContext(value)) return true
  return false
}

/** True when a selection before `at` in the list has the output alias `name` too. */
function repeated(selections: ReadonlyArray<SelectionNode>, at: SelectionNode, name: string): boolean {
  for (const s of selections) {
    if (s === at) return false
    if (s.selection.kind === 'AliasNode' && identifierName(s.selection.alias) === name) return true
  }
  return false
}

/** True for a selection in the form the plugin writes, beside an encrypted column it serves. */
function isOwn(
  node: OperationNode,
  name: string,
  selections: ReadonlyArray<SelectionNode>,
  outputs: ReadonlyMap<string, Source>,
  origins: ReadonlyMap<string, Origin>,
  scope: Scope,
): boolean {
  if (!isHiddenContextName(name) || node.kind !== 'ReferenceNode') return false
  const ref = node as ReferenceNode
  if (ref.table === undefined) return false
  const relation = scope.relationNamed(tableName(ref.table).name)
  const table = relation?.table
  if (relation === undefined || table === undefined || !table.context.includes(columnName(ref))) return false
  for (const [output, source] of outputs) {
    if (source.kind === 'column' && source.info.table === table && origins.get(output) === relation)
      return true
  }
  return hasHiddenSearchColumn(selections, relation)
}

/**
 * True for the plugin's own hidden post-filter selection: `<relation>.<encrypted column>` (a base
 * table's column, or a derived table's or CTE's output that passes one on, as `exposedName` names
 * it) in a select whose WHERE searches that column by a blind index. The plugin adds one only for
 * such a search, which it has rewritten to the index column by then; a subquery written by hand
 * (never rewritten on its own) names the encrypted column in its WHERE, not the index.
 */
function isSearchColumnOf(node: OperationNode, scope: Scope, where: OperationNode | undefined): boolean {
  const ref = node as ReferenceNode
  if (node.kind !== 'ReferenceNode' || ref.table === undefined || where === undefined) return false
  const relation = scope.relationNamed(tableName(ref.table).name)
  if (relation === undefined) return false
  const column = columnName(ref)
  const indexNames = new Set<string>()
  if (relation.table !== undefined) {
    const info = relation.table.column(column)
    for (const index of relation.table.indexColumns.values())
      if (info !== undefined && index.column === info) indexNames.add(index.physical)
  } else {
    const source = relation.derived?.get(column)
    for (const [name, s] of relation.derived ?? [])
      if (source?.kind === 'column' && s.kind === 'index' && s.info.column === source.info)
        indexNames.add(name)
  }
  return indexNames.size > 0 && mentionsColumn(where, indexNames)
}

/**
 * True when `node`'s tree holds a column named in `names` (any qualifier). Walks operation nodes
 * and their lists only: a value's own object (a ValueNode's JSON, a Buffer) is not entered.
 */
function mentionsColumn(node: unknown, names: ReadonlySet<string>): boolean {
  if (Array.isArray(node)) return node.some((item) => mentionsColumn(item, names))
  if (typeof node !== 'object' || node === null) return false
  const n = node as { kind?: unknown; column?: { name?: unknown } }
  if (typeof n.kind !== 'string' || n.kind === 'ValueNode') return false
  if (n.kind === 'ColumnNode') return typeof n.column?.name === 'string' && names.has(n.column.name)
  for (const value of Object.values(node)) if (mentionsColumn(value, names)) return true
  return false
}

/** True when `selections` holds a hidden `<relation>.<encrypted column> as __kfe_fp_<n>`. */
function hasHiddenSearchColumn(selections: ReadonlyArray<SelectionNode>, relation: Relation): boolean {
  for (const s of selections) {
    const sel = s.selection
    if (sel.kind !== 'AliasNode' || sel.node.kind !== 'ReferenceNode') continue
    if (!isHiddenName(identifierName(sel.alias))) continue
    const ref = sel.node as ReferenceNode
    if (ref.table === undefined || tableName(ref.table).name !== relation.name) continue
    if (relation.table?.column(columnName(ref)) !== undefined) return true
  }
  return false
}
