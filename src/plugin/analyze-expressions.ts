import type { OperationNode, ReferenceNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { AnalysisContext, ConditionContext } from './analysis-context.js'
import { isDeferred } from './deferred-value.js'
import { isStarOf } from './hidden-selections.js'
import { mapChildren, ROW_STATEMENTS } from './node-utils.js'
import { columnName, labelOf, rebuild, rebuildList } from './nodes.js'
import { checkRawText, refuseRawRead } from './raw-operands.js'
import { declaresRelations, endLine } from './raw-text.js'
import { refuse } from './refusal.js'
import { isLimitedRowLock, isRowLock } from './row-lock.js'
import type { Resolved, Scope } from './scope.js'
import { identifierName, tableName } from './table-names.js'
import { noteNamed, noteUnqualified, unmodelledLevel } from './unlisted-columns.js'
import { refuseWholeRow } from './whole-row.js'

/**
 * References and the expressions the analyzer does not interpret: which annotated column (or
 * blind index) a column reference names, and the walk that refuses any such reference inside a
 * function, cast, ORDER BY, … while analyzing the subqueries it holds.
 */

/**
 * The annotated column or blind index a reference names, and the relation it resolved through.
 * A name of a table with encrypted columns that resolves to none but is spelt like one is noted
 * (unlisted-columns.ts): qualified, anywhere; unqualified, only where `bare` says it is an
 * operand of a condition: of WHERE or ON (`true`), or of HAVING (`'having'`), where it may be
 * an output of the select list.
 *
 * @throws QueryRefusedError `QUERY_REFUSED` for an unqualified name that is no encrypted
 *   column but a relation carrying one: a whole-row value (`select u from users as u`)
 * @throws QueryRefusedError `AMBIGUOUS_COLUMN` for a qualifier of a relation not in scope here
 */
export function reference(
  a: AnalysisContext,
  node: OperationNode,
  scope: Scope,
  bare: boolean | 'having' = false,
): Resolved | undefined {
  if (node.kind === 'ColumnNode') return unqualified(a, columnName(node), scope, bare)
  if (node.kind !== 'ReferenceNode') return undefined
  const ref = node as ReferenceNode
  if (ref.column.kind !== 'ColumnNode') return undefined
  const column = identifierName(ref.column.column)
  if (ref.table === undefined) return unqualified(a, column, scope, bare)
  const qualifier = tableName(ref.table).name
  const resolved = scope.resolve(column, qualifier)
  if (resolved !== undefined) return resolved
  const relation = scope.relationNamed(qualifier)
  if (relation === undefined) a.checkUnseen(qualifier, column, scope)
  else noteNamed(a, relation, column)
  return undefined
}

/**
 * How a condition's unqualified names are checked ({@link reference}'s `bare`): in HAVING, one
 * may be an output of the select list too (MySQL).
 */
export function bareNames(ctx: ConditionContext): true | 'having' {
  return ctx.place === 'having' ? 'having' : true
}

function unqualified(
  a: AnalysisContext,
  column: string,
  scope: Scope,
  bare: boolean | 'having',
): Resolved | undefined {
  const resolved = scope.resolve(column, undefined)
  if (resolved === undefined) {
    refuseWholeRow(scope, column, `"${column}" as a value`)
    if (bare) noteUnqualified(a, scope, column, bare === 'having')
  }
  return resolved
}

/**
 * Walks an expression the plugin does not interpret. Any reference to an annotated column in it
 * is refused, labelled with the innermost construct (function, cast, order by, …); subqueries in
 * it are analyzed in their own scope.
 *
 * @param insideRaw - Raw SQL that is a parameter of raw SQL: not ended alone (endLine).
 * @param queries - The level a query in it sees as enclosing it: `scope`, unless raw SQL around
 *   it declares relations of its own (see the RawNode case).
 * @param bare - An expression of a condition (see {@link reference}): its unqualified names are
 *   noted too when misspelt (`lower(emial) = v`), but not inside raw SQL, whose own FROM may have
 *   them (helper-129).
 */
export function opaque(
  a: AnalysisContext,
  node: OperationNode,
  scope: Scope,
  label: string,
  insideRaw = false,
  queries: Scope = scope,
  bare: boolean | 'having' = false,
): OperationNode {
  switch (node.kind) {
    case 'ReferenceNode':
    case 'ColumnNode': {
      if (isStarOf(node) && label !== 'aggregate count') {
        const { name } = tableName((node as ReferenceNode).table!)
        refuseWholeRow(scope, name, `${name}.* in ${label}`)
      }
      const ref = reference(a, node, scope, bare)
      if (ref?.source.kind === 'column') throw refuse(ref.source.info, label)
      return node
    }
    case 'ValueNode': {
      const v = node as unknown as { value: unknown }
      if (isDeferred(v.value)) a.note(v.value)
      return node
    }
    case 'SelectQueryNode':
    case 'InsertQueryNode':
    case 'UpdateQueryNode':
    case 'DeleteQueryNode':
      return a.query(node, queries, 'opaque').node
    case 'TableNode': {
      // A table as a function's argument (json_agg(t), to_json(t)): a whole-row value.
      const { schema, name } = tableName(node)
      refuseWholeRow(scope, name, `${name} in ${label}`, schema)
      return node
    }
    case 'SelectModifierNode': {
      // FOR UPDATE OF t names tables to lock; it holds no value, nor does a row lock written as
      // raw SQL. Other raw SQL given to modifyFront or modifyEnd is raw SQL like any other
      // (helper-133: `modifyEnd(sql\`and email = ${v}\`)` was sent as written).
      const raw = (node as unknown as { rawModifier?: OperationNode }).rawModifier
      if (raw === undefined || locksOnly(raw)) return node
      return rebuild(node, { rawModifier: opaque(a, raw, scope, label, false, queries) })
    }
    case 'RawNode': {
      refuseRawRead(scope, node)
      checkRawText(scope, node)
      // Its subqueries first: a refusal of what one selects says more than a refusal of a
      // reference into it (agg.email in MySQL's jsonArrayFrom, whose raw SQL names agg first).
      const inner = labelOf(node, label)
      // Raw SQL directly in raw SQL ends where the raw SQL around it says; under another node
      // (an alias, a function) it ends on its own.
      // A query in it, directly or inside an expression, gets a level of its own between it and
      // the enclosing ones when the text has a FROM or JOIN: it may read the columns of relations
      // only the text declares, which the scope does not know (helper-126, helper-128).
      const level = declaresRelations(node) ? unmodelledLevel(scope.schema, queries) : queries
      const walk = (statements: boolean) => (child: OperationNode) =>
        ROW_STATEMENTS.has(child.kind) === statements
          ? opaque(a, child, scope, inner, child.kind === 'RawNode', level)
          : child
      const walked = mapChildren(mapChildren(node, walk(true)), walk(false))
      // Only raw SQL whose end is not inside other raw SQL is ended (raw-text.ts, endLine).
      return insideRaw ? walked : endLine(walked)
    }
    default:
      return mapChildren(node, (child) => opaque(a, child, scope, labelOf(node, label), false, queries, bare))
  }
}

/**
 * The modifiers of a statement (`modifyFront`, `modifyEnd`; a select's DISTINCT, FOR UPDATE…),
 * walked as expressions of its scope: raw SQL in them is checked as raw SQL elsewhere is. A
 * write's are raw SQL itself; a select's are SelectModifierNodes (see {@link opaque}).
 */
export function modifiers(
  a: AnalysisContext,
  node: {
    readonly frontModifiers?: ReadonlyArray<OperationNode>
    readonly endModifiers?: ReadonlyArray<OperationNode>
  },
  scope: Scope,
  patch: Record<string, unknown>,
): void {
  for (const key of MODIFIERS) {
    const list = node[key]
    if (list !== undefined) patch[key] = rebuildList(list, (n) => (locksOnly(n) ? n : modifier(a, n, scope)))
  }
}

/** A row lock, after a LIMIT or not: raw SQL that holds no value and reads no relation. */
function locksOnly(raw: OperationNode): boolean {
  return isRowLock(raw) || isLimitedRowLock(raw)
}

/**
 * One modifier walked by {@link opaque}; a refusal of its raw SQL names the builder's forms of
 * what modifiers hold (an upsert's ON CONFLICT, DISTINCT ON, a limit, a lock), which the plugin
 * reads, instead of only `where(…)`.
 */
function modifier(a: AnalysisContext, node: OperationNode, scope: Scope): OperationNode {
  try {
    return opaque(a, node, scope, 'expression')
  } catch (error) {
    if (!(error instanceof QueryRefusedError) || error.operator !== 'raw sql' || error.hint === undefined)
      throw error
    throw new QueryRefusedError(error.code, error.message.slice(0, -` Hint: ${error.hint}`.length), {
      table: error.table,
      column: error.column,
      operator: error.operator,
      hint: `${error.hint} In modifyFront or modifyEnd, use the builder's forms instead, which the plugin reads and rewrites: onConflict((oc) => oc.column(…)…) with doNothing() or doUpdateSet(…), distinctOn(…), orderBy(…), limit(…), forUpdate().of(…).`,
    })
  }
}

/** The statement fields {@link modifiers} walks; a module constant, not an array made per query. */
const MODIFIERS = ['frontModifiers', 'endModifiers'] as const

/**
 * The parts of a statement no clause of its analysis reads, walked as expressions of its scope:
 * EXPLAIN's options, the LIMIT of an UPDATE or DELETE (MySQL), TOP and OUTPUT (MSSQL). Raw SQL
 * in them is checked as raw SQL elsewhere is, and an encrypted column there is refused
 * (helper-135: `.explain(undefined, sql\`analyze) select id from users where email = ${v} --\`)`
 * ran, and an update's `.limit(sql\`${v}\`)` sent its value, as written). A part a clause has
 * read already (a select's LIMIT) is left as that clause rewrote it.
 */
export function statementExtras(
  a: AnalysisContext,
  node: { readonly [key in (typeof EXTRAS)[number]]?: OperationNode },
  scope: Scope,
  patch: Record<string, unknown>,
): void {
  for (const key of EXTRAS) {
    const part = node[key]
    if (part !== undefined && patch[key] === undefined) patch[key] = opaque(a, part, scope, key)
  }
}

/** The statement fields {@link statementExtras} walks. */
const EXTRAS = ['explain', 'limit', 'top', 'output'] as const
