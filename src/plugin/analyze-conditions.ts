import type { BinaryOperationNode, OperationNode, ReferenceNode } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import { contextValue } from '../fields/context-values.js'
import { tenantRequired } from '../schema/key-scope.js'
import type { ColumnInfo, IndexInfo } from '../schema/schema.js'
import type { AnalysisContext, ConditionContext, PendingFilter } from './analysis-context.js'
import { bareNames, opaque, reference } from './analyze-expressions.js'
import { checkCodec, exposedName, NEGATED, pickIndex } from './column-rules.js'
import { andGuard, exactContextGuard } from './context-guard.js'
import { conjuncts, equality, isColumn } from './context-writes.js'
import { DeferredValue, isDeferred } from './deferred-value.js'
import { PHASE_ORS } from './migrated-nodes.js'
import { EXPRESSION, LITERAL, listValues, rebuild, referenceNode, valueNode } from './nodes.js'
import { holdsRaw } from './raw-text.js'
import { type RefusedShape, refuse, searchIndexRefusal } from './refusal.js'
import type { Relation, Resolved, Scope } from './scope.js'

/**
 * Conditions: WHERE, ON and HAVING trees. Equality on an
 * encrypted column becomes `index_column in (probes)`; what cannot be searched through a blind
 * index is refused; search-index conditions are queued for false-positive removal.
 */

const EQUALITY = new Set(['=', '==', '!=', '<>', 'in', 'not in'])
const NULL_TESTS = new Set(['is', 'is not'])
const LIST_OPERATORS = new Set(['in', 'not in'])
const LISTS = new Set(['ValueListNode', 'PrimitiveValueListNode'])
/** The operators of a rewritten search: frozen, like every node, so one of each serves every query. */
const IN_OPERATOR = Object.freeze({ kind: 'OperatorNode', operator: 'in' })
const NOT_IN_OPERATOR = Object.freeze({ kind: 'OperatorNode', operator: 'not in' })

export function whereNode<T extends OperationNode>(
  a: AnalysisContext,
  node: T,
  scope: Scope,
  ctx: ConditionContext,
): T {
  const inner = node as unknown as { where?: OperationNode; on?: OperationNode; having?: OperationNode }
  // Three literal patches, not one with a computed key (which V8 builds as a dictionary object).
  if (inner.where !== undefined) {
    const root = inner.where
    return rebuild(node, { where: condition(a, root, scope, withRoot(ctx, root)) })
  }
  if (inner.on !== undefined) {
    const root = inner.on
    return rebuild(node, { on: condition(a, root, scope, withRoot(ctx, root)) })
  }
  const root = inner.having!
  return rebuild(node, { having: condition(a, root, scope, withRoot(ctx, root)) })
}

function withRoot(ctx: ConditionContext, root: OperationNode): ConditionContext {
  return ctx.branch === undefined
    ? { pending: ctx.pending, positive: ctx.positive, place: ctx.place, root }
    : { pending: ctx.pending, positive: ctx.positive, place: ctx.place, branch: ctx.branch, root }
}

export function condition(
  a: AnalysisContext,
  node: OperationNode,
  scope: Scope,
  ctx: ConditionContext,
): OperationNode {
  switch (node.kind) {
    case 'AndNode': {
      const n = node as unknown as { left: OperationNode; right: OperationNode }
      return rebuild(node, {
        left: operand(a, n.left, scope, ctx),
        right: operand(a, n.right, scope, ctx),
      })
    }
    case 'OrNode': {
      const n = node as unknown as { left: OperationNode; right: OperationNode }
      const c = {
        ...ctx,
        positive: false,
        branch: ctx.branch ?? ('or' as const),
        phaseBranch: PHASE_ORS.has(node) && (ctx.positive || ctx.phaseBranch === true),
      }
      return rebuild(node, {
        left: operand(a, n.left, scope, c),
        right: operand(a, n.right, scope, c),
      })
    }
    case 'ParensNode': {
      const n = node as unknown as { node: OperationNode }
      return rebuild(node, { node: condition(a, n.node, scope, ctx) })
    }
    case 'UnaryOperationNode': {
      const n = node as unknown as { operator: OperationNode; operand: OperationNode }
      const op = (n.operator as unknown as { operator?: string }).operator
      if (op === 'not')
        return rebuild(node, {
          operand: operand(a, n.operand, scope, {
            ...ctx,
            positive: false,
            branch: ctx.branch ?? 'not',
            phaseBranch: false,
          }),
        })
      if (op === 'exists' || op === 'not exists')
        return rebuild(node, { operand: a.query(n.operand, scope, 'exists').node })
      return opaque(a, node, scope, op ?? 'expression', false, scope, bareNames(ctx))
    }
    case 'BinaryOperationNode':
      return comparison(a, node as BinaryOperationNode, scope, ctx)
    default:
      return opaque(a, node, scope, 'expression', false, scope, bareNames(ctx))
  }
}

/**
 * {@link condition} of an operand of AND, OR or NOT, in parentheses when it holds raw SQL
 * (raw-text.ts, {@link holdsRaw}: a raw condition, a comparison with a raw value…). Kysely
 * prints raw SQL as it is, so `.where(sql\`a or b\`).where('tenant_id', '=', t)` was sent as
 * `a or b and "tenant_id" = $1`, which the database reads as `a or (b and …)`: the tree this
 * analysis reads (an AND at the top, the tenant fixed) and the statement run disagreed, and an
 * update bound its ciphertexts to a context that rows of the OR branch do not have. Raw SQL
 * that may end in a line comment ends with a line break ({@link opaque}), so the comment does not
 * swallow the closing parenthesis.
 */
function operand(
  a: AnalysisContext,
  node: OperationNode,
  scope: Scope,
  ctx: ConditionContext,
): OperationNode {
  const out = condition(a, node, scope, ctx)
  if (node.kind === 'AndNode' || node.kind === 'OrNode' || !holdsRaw(node)) return out
  return Object.freeze({ kind: 'ParensNode', node: out }) as OperationNode
}

export function comparison(
  a: AnalysisContext,
  node: BinaryOperationNode,
  scope: Scope,
  ctx: ConditionContext,
): OperationNode {
  const op = (node.operator as unknown as { operator?: string }).operator ?? 'operator'
  const bare = bareNames(ctx)
  const left = reference(a, node.leftOperand, scope, bare)
  const right = reference(a, node.rightOperand, scope, bare)
  if (left === undefined && right === undefined) {
    const patch = {
      leftOperand: opaque(a, node.leftOperand, scope, op, false, scope, bare),
      rightOperand: opaque(a, node.rightOperand, scope, op, false, scope, bare),
    }
    return rebuild(node, patch)
  }
  if (left !== undefined && right !== undefined) return columnToColumn(a, node, op, left, right)
  const [ref, refNode, other] =
    left !== undefined
      ? [left, node.leftOperand, node.rightOperand]
      : [right!, node.rightOperand, node.leftOperand]
  if (ref.source.kind === 'index') {
    const values = listValues(other)
    for (const v of values ?? [EXPRESSION]) {
      if (!(v === null || v instanceof Uint8Array || isDeferred(v))) {
        throw refuse(
          ref.source.info.column,
          op,
          `blind index column ${ref.source.info.physical} takes index bytes (encryption.indexOf), not ${typeof v === 'symbol' ? 'an expression' : 'a plaintext value'}`,
        )
      }
    }
    const probes = (values ?? []).filter(isDeferred)
    for (const p of probes) a.note(p)
    // Bytes (encryption.indexOf) carry no plaintext to remove a search index's false positives
    // with: where a plaintext search is refused (an update or delete, a subquery, a join…), so
    // are they; a top-level select returns what the index matches, false positives included.
    if (
      ref.source.info.spec.kind === 'search' &&
      (values ?? []).some((v) => v instanceof Uint8Array) &&
      !checkable(ctx, op)
    )
      throw searchIndexRefusal(ref.source.info, shapeOf(ctx, op), op)
    if (probes.length > 0 && ref.source.info.spec.kind === 'unique') {
      if (checkable(ctx, op)) ctx.pending!.push(pendingFilter(ref, ref.source.info, probes))
      return node
    }
    if (probes.length > 0 && ref.source.info.spec.kind === 'search') {
      if (!checkable(ctx, op)) throw searchIndexRefusal(ref.source.info, shapeOf(ctx, op), op)
      ctx.pending!.push(pendingFilter(ref, ref.source.info, probes))
    }
    return node
  }
  const info = ref.source.info
  if (NULL_TESTS.has(op)) {
    if (other.kind === 'ValueNode' && (other as unknown as { value: unknown }).value === null) return node
    throw refuse(info, op)
  }
  if (!EQUALITY.has(op)) throw refuse(info, op)
  // `where('tags', '=', [1, 2])` is a row value `($1, $2)`: only `in` / `not in` take a list (a
  // list rewritten as `in` would match the rows holding 1 or 2, not the one holding [1, 2]).
  const values = listValues(other)
  // A list of one is `= ($1)`, a value in parentheses: the same comparison.
  if (LISTS.has(other.kind) && !LIST_OPERATORS.has(op) && (values?.length ?? 0) > 1)
    throw refuse(info, op, 'compared with a list of values (a row value): only in and not in take a list')
  if (values === undefined) throw refuse(info, op, 'compared with an expression, not a value')
  if (values.length === 1 && values[0] === null && (op === '=' || op === '!=' || op === '<>')) return node
  for (const v of values) {
    if (v === LITERAL) throw refuse(info, 'sql.lit')
    if (v === null || v === undefined || typeof v === 'symbol')
      throw refuse(info, op, 'NULL or an expression inside the list')
  }
  const index = pickIndex(info, op)
  if (a.mode === 'verify') {
    throw new QueryRefusedError(
      'PLAINTEXT_SEARCH',
      `A plaintext value compared with encrypted column ${info.table.physical}.${info.physical} reached the driver; nothing was sent.`,
      {
        table: info.table.logical,
        column: info.logical,
        operator: op,
        hint: 'The query bypassed the plugin (withoutPlugins(), or a query compiled elsewhere): add encryption.plugin.',
      },
    )
  }
  if (index.spec.kind === 'search' && !checkable(ctx, op))
    throw searchIndexRefusal(index, shapeOf(ctx, op), op)
  const named = info.table.keyScope === undefined ? undefined : tenantOf(ctx, scope, ref.relation, info, op)
  const tenant = named?.tenant
  const probes = values.map((v) => {
    checkCodec(info, v)
    return a.note(new DeferredValue('probe', info, v, index, undefined, tenant))
  })
  // A unique index is checked too where the rows can be (a copied index would match another
  // row); a search index has been refused above where they cannot.
  if (index.spec.kind === 'search' || checkable(ctx, op)) ctx.pending!.push(pendingFilter(ref, index, probes))
  const exposed = exposedName(ref.relation, { kind: 'index', info: index })
  if (exposed === undefined)
    throw refuse(
      info,
      op,
      `the derived table ${ref.relation.name} does not select the blind index column ${index.physical}`,
    )
  const qualifier = (refNode as ReferenceNode).table
  const search = Object.freeze({
    kind: 'BinaryOperationNode',
    leftOperand: referenceNode(exposed, qualifier),
    operator: NEGATED.has(op) ? NOT_IN_OPERATOR : IN_OPERATOR,
    rightOperand: Object.freeze({ kind: 'ValueListNode', values: Object.freeze(probes.map(valueNode)) }),
  }) as BinaryOperationNode
  // The blind index was computed under this tenant's key: only rows whose stored tenant is
  // exactly it may match (a case-insensitive collation would let 'Acme' rows in; context-guard.ts).
  return named === undefined
    ? search
    : andGuard(search, exactContextGuard(named.column, named.qualifier, named.tenant))
}

export function columnToColumn(
  a: AnalysisContext,
  node: BinaryOperationNode,
  op: string,
  left: Resolved,
  right: Resolved,
): OperationNode {
  const l = left.source
  const r = right.source
  const domainTable = (l.kind === 'column' ? l.info : l.info.column).table
  const domain = domainTable.logical
  if (domainTable.keyScope !== undefined) {
    // Blind indexes of two rows compare only under one tenant's key, which the plugin cannot
    // tell the two rows share.
    throw refuse(
      l.kind === 'column' ? l.info : l.info.column,
      `${op} another column`,
      `${domainTable.physical} has a key per tenant (keyScope ${domainTable.keyScope.column}): blind indexes of different rows are not comparable`,
      'Compare decrypted values in the application, or search each value by equality with its tenant named.',
    )
  }
  if (l.kind === 'index' || r.kind === 'index' || l.kind === r.kind) a.noteIndexComparison(domain)
  if (
    l.kind === 'index' &&
    r.kind === 'index' &&
    l.info === r.info &&
    (op === '=' || op === '<>' || op === '!=')
  )
    return node
  const info = l.kind === 'column' ? l.info : r.kind === 'column' ? r.info : l.info.column
  const unique = info.spec.indexes
    .map((s) => info.table.indexColumn(s.name)!)
    .find((i) => i.spec.kind === 'unique')
  // Both sides share an index key domain only when they are the same logical column (a self-join).
  if (
    l.kind === 'column' &&
    r.kind === 'column' &&
    l.info === r.info &&
    unique !== undefined &&
    (op === '=' || op === '<>' || op === '!=')
  ) {
    const li = exposedName(left.relation, { kind: 'index', info: unique })
    const ri = exposedName(right.relation, { kind: 'index', info: unique })
    if (li !== undefined && ri !== undefined) {
      if (a.mode === 'verify') {
        throw new QueryRefusedError(
          'PLAINTEXT_SEARCH',
          `A comparison of encrypted column ${info.table.physical}.${info.physical} reached the driver unrewritten.`,
          { table: info.table.logical, column: info.logical, operator: op },
        )
      }
      const compare = rebuild(node, {
        leftOperand: referenceNode(li, (node.leftOperand as ReferenceNode).table),
        rightOperand: referenceNode(ri, (node.rightOperand as ReferenceNode).table),
      })
      if (unique.spec.rotationSlot === undefined) return compare
      return slottedSelfJoin(node, op, compare, info, left, right, unique.spec.rotationSlot)
    }
  }
  throw refuse(
    info,
    `${op} another column`,
    'only the same column of the same table (a self-join) with a unique index can be compared',
  )
}

/** True where the rows an index condition selects can be checked after decryption. */
function checkable(ctx: ConditionContext, op: string): boolean {
  return ctx.pending !== undefined && ctx.positive && (op === '=' || op === '==' || op === 'in')
}

function pendingFilter(ref: Resolved, index: IndexInfo, probes: readonly DeferredValue[]): PendingFilter {
  return { relation: ref.relation, column: index.column, index, probes }
}

/** Why a search-index condition here cannot have its false positives removed. */
function shapeOf(ctx: ConditionContext, op: string): RefusedShape {
  if (NEGATED.has(op)) return 'negated'
  if (ctx.pending === undefined) return ctx.place === 'select' ? 'subquery' : ctx.place
  return ctx.positive ? 'operator' : (ctx.branch ?? 'or')
}

/**
 * A self-join on an index with a rotation slot: equal values are equal in whichever column holds
 * the active version (the plugin cannot know which here), so `=` becomes `(a.email_bidx =
 * b.email_bidx or a.email_bidx_next = b.email_bidx_next)`. `<>` is refused: a NULL in the free
 * column would drop rows from its negation.
 */
function slottedSelfJoin(
  node: BinaryOperationNode,
  op: string,
  compare: OperationNode,
  info: ColumnInfo,
  left: Resolved,
  right: Resolved,
  slot: string,
): OperationNode {
  const index = info.table.indexColumn(slot)!
  const li = exposedName(left.relation, { kind: 'index', info: index })
  const ri = exposedName(right.relation, { kind: 'index', info: index })
  if (op !== '=' || li === undefined || ri === undefined) {
    throw refuse(
      info,
      `${op} another column`,
      `an index with a rotation slot can be compared with itself by = only, with both columns (${index.spec.name}, ${slot}) in scope`,
    )
  }
  const other = rebuild(node, {
    leftOperand: referenceNode(li, (node.leftOperand as ReferenceNode).table),
    rightOperand: referenceNode(ri, (node.rightOperand as ReferenceNode).table),
  })
  return Object.freeze({
    kind: 'ParensNode',
    node: Object.freeze({ kind: 'OrNode', left: compare, right: other }),
  }) as OperationNode
}

/**
 * The tenant a search on a table with per-tenant keys names: an equality on its key-scope column
 * (`tenant_id = 'acme'`, or `in ('acme')`) on the same relation, in the top-level conjunction of
 * the same condition. A search under OR (but the one a column under migration's search is
 * rewritten into, see `PHASE_ORS`) or NOT, through a derived table, or without such an
 * equality is refused: its blind index would be computed under some tenant's key, and the rows
 * of the others would silently not match.
 *
 * @throws QueryRefusedError `TENANT_REQUIRED`
 */
function tenantOf(
  ctx: ConditionContext,
  at: Scope,
  relation: Relation,
  info: ColumnInfo,
  op: string,
): { tenant: string; column: string; qualifier: ReferenceNode['table'] } {
  const scope = info.table.keyScope!
  if ((ctx.positive || ctx.phaseBranch === true) && relation.table === info.table) {
    // An unqualified column names a relation of the condition's own level first: for a relation
    // of an enclosing query (a correlated search in a subquery), only a qualified equality counts.
    const own = at.relations.includes(relation)
    for (const conjunct of conjuncts(ctx.root)) {
      const eq = equality(conjunct, relation.name)
      if (eq === undefined || !isColumn(eq.column, scope.column)) continue
      const left = (conjunct as BinaryOperationNode).leftOperand as Partial<ReferenceNode>
      if (!own && (left.kind !== 'ReferenceNode' || left.table === undefined)) continue
      const tenant = contextValue(eq.value)
      if (tenant !== undefined) return { tenant, column: eq.column, qualifier: left.table }
    }
  }
  throw tenantRequired(info.table, info.logical, `a search on ${info.table.physical}.${info.physical}`, op)
}
