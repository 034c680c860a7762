import type { AliasNode, CommonTableExpressionNode, JoinNode, OperationNode, WithNode } from 'kysely'
import type { AnalysisContext } from './analysis-context.js'
import { whereNode } from './analyze-conditions.js'
import { opaque } from './analyze-expressions.js'
import { rebuild, rebuildList } from './nodes.js'
import { checkRawAlias } from './raw-operands.js'
import { endAliasLine, tableNamedIn } from './raw-text.js'
import { refuse } from './refusal.js'
import { firstSource } from './relation.js'
import { firstEncryptedColumn } from './relation-names.js'
import { encryptedColumnOf, PendingCte, Scope } from './scope.js'
import { identifierName, rawTable, tableName } from './table-names.js'
import { markUnmodelled } from './unlisted-columns.js'

/**
 * The scope rules: which relations a level of a query sees. WITH adds its CTEs (all at once
 * under RECURSIVE), FROM and JOIN add tables, aliases and derived tables; a derived table sees
 * the enclosing query's tables (its siblings only under LATERAL) and every CTE of its query.
 */

/**
 * The start of every statement: a level of scope of its own, with the CTEs of its WITH clause,
 * and the patch its analysis fills (the rewritten WITH first).
 *
 * @param parent - the enclosing level whose relations the statement sees
 * @param ctes - the level whose CTEs it sees (see {@link Scope})
 */
export function statementScope(
  a: AnalysisContext,
  node: { readonly with?: WithNode },
  parent: Scope | undefined,
  ctes: Scope | undefined,
): { scope: Scope; patch: Record<string, unknown> } {
  const scope = new Scope(a.schema, parent, ctes)
  const patch: Record<string, unknown> = {}
  if (node.with) patch.with = withClause(a, node.with, scope)
  return { scope, patch }
}

/** A WITH clause: each CTE is analyzed as a derived query and added to `scope` under its name. */
export function withClause(a: AnalysisContext, node: WithNode, scope: Scope): WithNode {
  // In WITH RECURSIVE a CTE may read itself or a later one: every name is in scope from the
  // start, as a placeholder until its own query is analyzed.
  const pending = node.recursive
    ? node.expressions.map((cte) => {
        const placeholder = new PendingCte()
        scope.addCte(tableName(cte.name.table).name, placeholder)
        return placeholder
      })
    : undefined
  const expressions = rebuildList(node.expressions, (cte: CommonTableExpressionNode) => {
    refuseRawTable(a, cte.expression)
    // A CTE's query sees the tables of the queries around the statement (not its own FROM, which
    // comes after) and the CTEs of its WITH.
    const result = a.query(cte.expression, scope.parent, 'derived', scope)
    const { name } = tableName(cte.name.table)
    // A column list renames outputs by position: a search through a new name of an encrypted
    // column or its blind index would not be known as one, and its value would go out as it is.
    const annotated = firstSource(result.outputs)
    if (cte.name.columns !== undefined && annotated !== undefined) {
      const info = annotated.kind === 'column' ? annotated.info : annotated.info.column
      throw refuse(info, 'cte column list', 'name the columns inside the CTE query instead')
    }
    scope.addCte(name, result.outputs, cteColumns(cte, result.names))
    return rebuild(cte, { expression: result.node })
  })
  pending?.forEach((placeholder, i) => {
    if (!placeholder.read) return
    // It was read before its outputs were known: as if it had no encrypted column.
    const cte = node.expressions[i] as CommonTableExpressionNode
    const outputs = scope.cte(tableName(cte.name.table).name)
    const carried = outputs === undefined ? undefined : encryptedColumnOf(outputs)
    if (carried !== undefined) {
      throw refuse(
        carried,
        'recursive cte',
        'a CTE that carries an encrypted column cannot be read by itself or by a CTE defined before it; reorder the CTEs',
      )
    }
  })
  return rebuild(node, { expressions })
}

/**
 * The output names of a CTE, when known: its column list renames the first outputs of its query
 * (refused when one is encrypted); PostgreSQL lets the list be shorter, the rest keep their
 * names (helper-127).
 */
function cteColumns(
  cte: CommonTableExpressionNode,
  names: readonly string[] | undefined,
): readonly string[] | undefined {
  const list = cte.name.columns?.map((c) => identifierName(c.column))
  if (list === undefined) return names
  return names === undefined ? undefined : [...list, ...names.slice(list.length)]
}

/** @param write - the items are tables the statement writes (DELETE FROM): see {@link Scope.addTable} */
export function froms(
  a: AnalysisContext,
  node: OperationNode,
  scope: Scope,
  parent: Scope | undefined,
  write = false,
): OperationNode {
  const items = (node as unknown as { froms: ReadonlyArray<OperationNode> }).froms
  return rebuild(node, { froms: rebuildList(items, (f) => fromItem(a, f, scope, parent, write)) })
}

/** @param write - a table the statement writes (UPDATE, DELETE FROM): see {@link Scope.addTable} */
export function fromItem(
  a: AnalysisContext,
  node: OperationNode,
  scope: Scope,
  parent: Scope | undefined,
  write = false,
): OperationNode {
  if (node.kind === 'AliasNode') {
    const alias = node as AliasNode
    checkRawAlias(scope, alias.alias)
    if (alias.node.kind !== 'TableNode' && rawTable(alias.node) === undefined) {
      refuseRawTable(a, alias.node)
      // A derived table: its own scope sees the enclosing query's tables (not its siblings),
      // and every CTE of this query.
      const result = a.query(alias.node, parent, 'derived', scope)
      if (alias.alias.kind !== 'IdentifierNode') {
        // `.as(sql\`t(a, b)\`)`: raw SQL names the relation and may rename its outputs.
        const carried = encryptedColumnOf(result.outputs)
        if (carried !== undefined)
          throw refuse(carried, 'raw sql', 'a derived table named by raw SQL; use .as(name)')
        markUnmodelled(scope)
        return endAliasLine(rebuild(alias, { node: result.node }))
      }
      scope.addDerived(identifierName(alias.alias), result.outputs, result.names)
      return rebuild(alias, { node: result.node })
    }
  }
  refuseRawAlias(a, node)
  // A table aliased by raw SQL (`.as(sql\`o(a, b, c)\`)`) may rename its columns: names in its
  // scope are not the catalog's (helper-125).
  if (node.kind === 'AliasNode' && (node as AliasNode).alias.kind !== 'IdentifierNode') markUnmodelled(scope)
  if (scope.addTable(node, write) !== undefined) return endAliasLine(node)
  refuseRawTable(a, node)
  // Raw SQL that is no table name: a relation the scope does not list.
  markUnmodelled(scope)
  return opaque(a, node, scope, 'expression')
}

/**
 * A FROM, JOIN, CTE or written table given as raw SQL (other than a bare `sql.table(…)`) that
 * names an encrypted table (through `sql.table`, or in its text: raw-text.ts `tableNamedIn`): the
 * plugin cannot tell which relation it makes, so it could neither rewrite conditions on it nor
 * decrypt its columns.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`
 */
export function refuseRawTable(a: AnalysisContext, node: OperationNode): void {
  if (node.kind !== 'RawNode') return
  const read =
    firstEncryptedColumn(node, a.schema) ?? tableNamedIn(node, a.schema)?.columns.values().next().value
  if (read !== undefined)
    throw refuse(read, 'raw sql', 'a table in raw SQL; use the table name, or sql.table() alone')
}

/**
 * An encrypted table aliased by raw SQL (`sql\`${sql.table('users')}\`.as(sql\`t(a, b)\`)`): the
 * raw SQL names the relation and may rename its columns, so the plugin could not follow them.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`
 */
function refuseRawAlias(a: AnalysisContext, node: OperationNode): void {
  if (node.kind !== 'AliasNode' || (node as AliasNode).alias.kind === 'IdentifierNode') return
  const inner = (node as AliasNode).node
  const table = inner.kind === 'TableNode' ? inner : rawTable(inner)
  if (table === undefined) return
  const { schema, name } = tableName(table)
  const info = a.schema.table(name, schema)?.columns.values().next().value
  if (info !== undefined)
    throw refuse(info, 'raw sql', 'an encrypted table aliased by raw SQL; use .as(name)')
}

/** A JOIN: its table (seeing this level under LATERAL) and its ON condition. */
export function join(a: AnalysisContext, node: JoinNode, scope: Scope, parent: Scope | undefined): JoinNode {
  const lateral = node.joinType.startsWith('Lateral')
  const patch: Record<string, unknown> = {
    table: fromItem(a, node.table, scope, lateral ? scope : parent),
  }
  if (node.on) patch.on = whereNode(a, node.on, scope, { pending: undefined, positive: true, place: 'join' })
  return rebuild(node, patch)
}
