import type {
  AliasNode,
  CommonTableExpressionNode,
  DeleteQueryNode,
  InsertQueryNode,
  JoinNode,
  MergeQueryNode,
  OperationNode,
  ReferenceNode,
  RootOperationNode,
  SelectionNode,
  SelectQueryNode,
  UpdateQueryNode,
  WithNode,
} from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema, IndexInfo } from '../schema/schema.js'
import { whereNode } from './analyze-conditions.js'
import { insert, update } from './analyze-writes.js'
import { addAll, checkCodec, exposedName } from './column-rules.js'
import { DeferredValue, isDeferred } from './deferred-value.js'
import { isStarOf, selectedFrom, withoutHidden } from './hidden-selections.js'
import { mapChildren } from './node-utils.js'
import {
  collectDeferred,
  columnName,
  firstEncryptedColumn,
  identifier,
  labelOf,
  mayCombineRows,
  mentionsSchemaTable,
  rebuild,
  rebuildList,
  referenceNode,
  relationNames,
  tableNode,
} from './nodes.js'
import { EMPTY_PLAN, HIDDEN_PREFIX, type PlanOutput, type PostFilter, type QueryPlan } from './plan.js'
import { checkRawText } from './raw-operands.js'
import { type ConditionPlace, type RefusedShape, refuse, searchIndexRefusal } from './refusal.js'
import {
  encryptedColumnOf,
  encryptedIn,
  identifierName,
  PendingCte,
  type Relation,
  type Resolved,
  rawTable,
  Scope,
  type Source,
  tableName,
} from './scope.js'
import { refuseWholeRow } from './whole-row.js'

/**
 * `rewrite`: the plugin's pass — plaintext written to or compared with an annotated column is
 * replaced by deferred values. `verify`: the dialect wrapper's pass over the final tree — any
 * plaintext that would still need rewriting means the plugin was bypassed, and is an error.
 */
export type Mode = 'rewrite' | 'verify'

/** Where an output came from: the relation a plain reference resolved through, or `null` (a subquery). */
export type Origin = Relation | null

/** How a query's outputs are used by its parent. */
export type Role = 'root' | 'derived' | 'scalar' | 'exists' | 'opaque'

export interface Outputs {
  readonly node: OperationNode
  readonly outputs: Map<string, Source>
}

/** A search-index condition found in a root WHERE, waiting for its hidden ciphertext column. */
export interface PendingFilter {
  readonly relation: Relation
  readonly column: ColumnInfo
  readonly index: IndexInfo
  readonly probes: readonly DeferredValue[]
}

export interface ConditionContext {
  /** Where search-index conditions go; undefined where their false positives cannot be removed. */
  readonly pending: PendingFilter[] | undefined
  /** True on a path from the WHERE root through AND and parentheses only. */
  readonly positive: boolean
  /** Where the condition is, for refusal messages. */
  readonly place: ConditionPlace
  /** Set where `positive` turned false: under OR, or under NOT. */
  readonly branch?: 'or' | 'not'
}

/**
 * Analyzes one query tree (see {@link Analyzer}). Most queries of an application touch no
 * encrypted table: those are returned untouched with the empty plan, after one walk without
 * allocation and without building an analyzer.
 */
export function analyzeQuery(
  schema: EncryptedSchema,
  mode: Mode,
  root: RootOperationNode,
): { node: RootOperationNode; plan: QueryPlan } {
  if (!mentionsSchemaTable(root, schema)) return { node: root, plan: EMPTY_PLAN }
  return new Analyzer(schema, mode).analyze(root)
}

/**
 * Walks one query tree with a scope model (tables, aliases, joins, derived tables, CTEs,
 * correlated subqueries), resolves every reference to an annotated column and either rewrites
 * it (see {@link Mode}) or refuses it. Pure: no keys, no I/O. One instance per query.
 */
export class Analyzer {
  readonly #postFilters: PostFilter[] = []
  readonly #deferredValues = new Set<DeferredValue>()
  readonly #indexComparisons = new Set<string>()
  #deferred = false
  /** The tree being analyzed, for {@link Analyzer.checkUnseen}. */
  #root: OperationNode | undefined
  /** Every table, alias and CTE name of the tree, lower-cased: made only when a qualifier is unseen. */
  #relationNames: ReadonlySet<string> | undefined

  constructor(
    readonly schema: EncryptedSchema,
    readonly mode: Mode,
  ) {}

  /** Records that blind-index columns of `table` are compared with each other. */
  noteIndexComparison(table: string): void {
    this.#indexComparisons.add(table)
  }

  /** Records a deferred value of the tree (made or met), for the wrapper's parameter check. */
  note<T extends DeferredValue>(value: T): T {
    this.#deferred = true
    this.#deferredValues.add(value)
    return value
  }

  /**
   * @returns the (possibly rewritten) tree and the plan for its results
   * @throws QueryRefusedError `QUERY_REFUSED`, `AMBIGUOUS_COLUMN`, `PLAINTEXT_WRITE`, `PLAINTEXT_SEARCH`
   * @throws CodecError `CODEC_INVALID_VALUE` for a value of the wrong type
   */
  analyze(root: RootOperationNode): { node: RootOperationNode; plan: QueryPlan } {
    this.#root = root
    let result: Outputs
    switch (root.kind) {
      case 'SelectQueryNode':
        result = this.select(root, undefined, 'root')
        break
      case 'InsertQueryNode':
      case 'UpdateQueryNode':
      case 'DeleteQueryNode':
        result = this.write(root, undefined, 'root')
        break
      case 'MergeQueryNode':
        // Its outputs are never encrypted (refused), but its subqueries may hold deferred values.
        result = { node: this.merge(root as MergeQueryNode), outputs: new Map() }
        break
      default:
        // DDL and raw SQL: raw SQL is opaque by design (docs/guide.md, "Raw SQL").
        return { node: root, plan: EMPTY_PLAN }
    }
    // The rewrite pass notes every deferred value it makes or meets; the verify pass, which runs
    // on trees others may have built, collects them from the final tree.
    if (this.mode === 'verify') collectDeferred(result.node, this.#deferredValues)
    if (this.#deferredValues.size > 0) this.#deferred = true
    const outputs: PlanOutput[] = []
    for (const [name, source] of result.outputs) {
      if (source.kind === 'column') outputs.push({ name, column: source.info })
    }
    if (
      outputs.length === 0 &&
      this.#postFilters.length === 0 &&
      !this.#deferred &&
      this.#indexComparisons.size === 0
    ) {
      return { node: result.node as RootOperationNode, plan: EMPTY_PLAN }
    }
    return {
      node: result.node as RootOperationNode,
      plan: Object.freeze({
        outputs: Object.freeze(outputs),
        postFilters: this.#postFilters,
        deferred: this.#deferred,
        deferredValues: this.#deferredValues,
        indexComparisons: this.#indexComparisons,
      }),
    }
  }

  // ── queries ────────────────────────────────────────────────────────────────────────────────

  /**
   * @param parent - the enclosing level whose relations the query sees
   * @param ctes - the level whose CTEs it sees (see {@link Scope}); `parent` unless given
   */
  query(node: OperationNode, parent: Scope | undefined, role: Role, ctes = parent): Outputs {
    switch (node.kind) {
      case 'SelectQueryNode':
        return this.select(node as SelectQueryNode, parent, role, ctes)
      case 'InsertQueryNode':
      case 'UpdateQueryNode':
      case 'DeleteQueryNode':
        return this.write(node as InsertQueryNode | UpdateQueryNode | DeleteQueryNode, parent, role, ctes)
      default:
        return {
          // A fresh level: it sees the enclosing query's tables through `parent` and the CTEs of `ctes`.
          node: this.opaque(node, new Scope(this.schema, parent, ctes), 'subquery'),
          outputs: new Map(),
        }
    }
  }

  select(node: SelectQueryNode, parent: Scope | undefined, role: Role, ctes = parent): Outputs {
    const scope = new Scope(this.schema, parent, ctes)
    const patch: Record<string, unknown> = {}
    if (node.with) patch.with = this.with(node.with, scope)
    if (node.from) patch.from = this.froms(node.from, scope, parent)
    if (node.joins) patch.joins = rebuildList(node.joins, (j) => this.join(j, scope, parent))
    // A subquery built from `db` was transformed once as a query of its own, which may have
    // added hidden selections for its index conditions: as a subquery it returns no rows itself.
    const own = role === 'root' || !node.selections ? node.selections : withoutHidden(node.selections)
    const { nodes, outputs, origins } = this.selections(own ?? [], scope)
    if (node.selections) patch.selections = nodes
    if (role === 'derived') this.checkIndexPairs(outputs, origins)
    const pending: PendingFilter[] | undefined = role === 'root' ? [] : undefined
    if (node.where)
      patch.where = whereNode(this, node.where, scope, {
        pending,
        positive: true,
        place: role === 'root' ? 'select' : 'subquery',
      })
    if (node.groupBy) patch.groupBy = this.opaque(node.groupBy, scope, 'group by')
    if (node.orderBy) patch.orderBy = this.opaque(node.orderBy, scope, 'order by')
    if (node.distinctOn)
      patch.distinctOn = rebuildList(node.distinctOn, (n) => this.opaque(n, scope, 'distinct on'))
    if (node.having)
      patch.having = whereNode(this, node.having, scope, {
        pending: undefined,
        positive: false,
        place: 'having',
      })
    for (const key of ['limit', 'offset', 'fetch', 'top'] as const) {
      if (node[key]) patch[key] = this.opaque(node[key] as OperationNode, scope, 'expression')
    }
    for (const key of ['frontModifiers', 'endModifiers'] as const) {
      if (node[key]) patch[key] = rebuildList(node[key], (n) => this.opaque(n, scope, 'expression'))
    }
    const annotated = firstColumn(outputs)
    if (node.setOperations) {
      patch.setOperations = node.setOperations.map((op) => {
        // A branch sees the enclosing query, not this one's tables; but every CTE of this query.
        const branch = this.query(
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
      const filters = this.postFilterable(node, pending)
      if (filters.length > 0) {
        patch.selections = this.hiddenSelections(
          (patch.selections ?? node.selections ?? []) as SelectionNode[],
          filters,
          outputs,
          origins,
        )
      }
    }
    return { node: rebuild(node, patch), outputs }
  }

  write(
    node: InsertQueryNode | UpdateQueryNode | DeleteQueryNode,
    parent: Scope | undefined,
    role: Role,
    ctes = parent,
  ): Outputs {
    const scope = new Scope(this.schema, parent, ctes)
    const patch: Record<string, unknown> = {}
    if (node.with) patch.with = this.with(node.with, scope)
    if (node.kind === 'InsertQueryNode') insert(this, node, scope, patch)
    else if (node.kind === 'UpdateQueryNode') update(this, node, scope, parent, patch)
    else {
      // MySQL's multi-table DELETE names its targets by relations of USING and its joins
      // (`delete from a using users as a`): such a target stands for that relation and adds
      // none. Others are added first, in SQL's order (RETURNING * lists them first).
      const bound = node.using === undefined ? undefined : usingNames(node.using.tables, node.joins)
      patch.from = rebuild(node.from, {
        froms: rebuildList(node.from.froms, (f) =>
          bound !== undefined && f.kind === 'TableNode' && bound.has(tableName(f).name)
            ? f
            : this.fromItem(f, scope, parent, true),
        ),
      })
      if (node.using) {
        patch.using = rebuild(node.using, {
          tables: rebuildList(node.using.tables, (t) => this.fromItem(t, scope, parent)),
        })
      }
      if (node.joins) patch.joins = rebuildList(node.joins, (j) => this.join(j, scope, parent))
      if (node.where)
        patch.where = whereNode(this, node.where, scope, {
          pending: undefined,
          positive: true,
          place: 'delete',
        })
      if (node.orderBy) patch.orderBy = this.opaque(node.orderBy, scope, 'order by')
    }
    let outputs = new Map<string, Source>()
    if (node.returning) {
      const r = this.selections(node.returning.selections, scope)
      patch.returning = rebuild(node.returning, { selections: r.nodes })
      outputs = r.outputs
      if (role === 'derived') this.checkIndexPairs(outputs, r.origins)
    }
    if (role === 'opaque') {
      const hit = firstColumn(outputs)
      if (hit !== undefined) throw refuse(hit.info, 'subquery', 'its result is used in an expression')
    }
    return { node: rebuild(node, patch), outputs }
  }

  /**
   * MERGE is refused on a table with encrypted columns, as a target or as its source; a subquery
   * source is analyzed like a derived table, and may not pass an encrypted column on.
   */
  merge(node: MergeQueryNode): OperationNode {
    const scope = new Scope(this.schema, undefined)
    const patch: Record<string, unknown> = {}
    if (node.with) patch.with = this.with(node.with, scope)
    const into = scope.addTable(node.into, true)?.table?.columns.values().next().value
    if (into !== undefined) throw refuse(into, 'merge')
    if (node.using) {
      const before = scope.relations.length
      const table = this.fromItem(node.using.table, scope, undefined)
      const source = scope.relations[before]
      const carried = source === undefined ? undefined : encryptedIn(source)
      if (carried !== undefined) throw refuse(carried, 'merge')
      patch.using = rebuild(node.using, {
        table,
        ...(node.using.on ? { on: this.opaque(node.using.on, scope, 'merge') } : {}),
      })
    }
    const rest = mapChildren(node, (child) =>
      child === node.into || child === node.using || child === node.with
        ? child
        : this.opaque(child, scope, 'merge'),
    )
    return rebuild(rest, patch)
  }

  with(node: WithNode, scope: Scope): WithNode {
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
      const result = this.query(cte.expression, scope, 'derived')
      const { name } = tableName(cte.name.table)
      const annotated = firstColumn(result.outputs)
      if (cte.name.columns !== undefined && annotated !== undefined) {
        throw refuse(annotated.info, 'cte column list', 'name the columns inside the CTE query instead')
      }
      scope.addCte(name, result.outputs)
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

  /** @param write - the items are tables the statement writes (DELETE FROM): see {@link Scope.addTable} */
  froms(node: OperationNode, scope: Scope, parent: Scope | undefined, write = false): OperationNode {
    const froms = (node as unknown as { froms: ReadonlyArray<OperationNode> }).froms
    return rebuild(node, { froms: rebuildList(froms, (f) => this.fromItem(f, scope, parent, write)) })
  }

  /** @param write - a table the statement writes (UPDATE, DELETE FROM): see {@link Scope.addTable} */
  fromItem(node: OperationNode, scope: Scope, parent: Scope | undefined, write = false): OperationNode {
    if (node.kind === 'AliasNode') {
      const alias = node as AliasNode
      if (alias.node.kind !== 'TableNode' && rawTable(alias.node) === undefined) {
        this.refuseRawTable(alias.node)
        // A derived table: its own scope sees the enclosing query's tables (not its siblings),
        // and every CTE of this query.
        const result = this.query(alias.node, parent, 'derived', scope)
        scope.addDerived(identifierName(alias.alias), result.outputs)
        return rebuild(alias, { node: result.node })
      }
    }
    if (scope.addTable(node, write) !== undefined) return node
    this.refuseRawTable(node)
    return this.opaque(node, scope, 'expression')
  }

  /**
   * A FROM, JOIN or written table given as raw SQL (other than a bare `sql.table(…)`) that names
   * an encrypted table: the plugin cannot tell which relation it makes, so it could neither
   * rewrite conditions on it nor decrypt its columns.
   *
   * @throws QueryRefusedError `QUERY_REFUSED`
   */
  refuseRawTable(node: OperationNode): void {
    if (node.kind !== 'RawNode') return
    const read = firstEncryptedColumn(node, this.schema)
    if (read !== undefined)
      throw refuse(read, 'raw sql', 'a table in raw SQL; use the table name, or sql.table() alone')
  }

  join(node: JoinNode, scope: Scope, parent: Scope | undefined): JoinNode {
    const lateral = node.joinType.startsWith('Lateral')
    const patch: Record<string, unknown> = {
      table: this.fromItem(node.table, scope, lateral ? scope : parent),
    }
    if (node.on)
      patch.on = whereNode(this, node.on, scope, { pending: undefined, positive: true, place: 'join' })
    return rebuild(node, patch)
  }

  // ── selections ─────────────────────────────────────────────────────────────────────────────

  /**
   * The outputs of a select list (or RETURNING) and where each came from: the relation a plain
   * reference resolved through, or `null` for a subquery's output.
   */
  selections(
    selections: ReadonlyArray<SelectionNode>,
    scope: Scope,
  ): { nodes: ReadonlyArray<SelectionNode>; outputs: Map<string, Source>; origins: Map<string, Origin> } {
    const outputs = new Map<string, Source>()
    const origins = new Map<string, Origin>()
    // MySQL lets a subquery of the select list read the aliases before it (not after: "forward
    // reference in item list"): it sees this map as it fills.
    scope.setAliases(outputs)
    // Two outputs of one name come back as one key (the driver keeps one of them): when either is
    // encrypted, the plan could decrypt the other's value, so the list is refused, unless both are
    // the same encrypted column (`u1.email, u2.email`: either value decrypts under its key).
    const named = new Set<string>()
    const claim = (name: string, source: Source | undefined): void => {
      const prior = outputs.get(name)
      const annotated = source ?? prior
      const same =
        source !== undefined &&
        prior !== undefined &&
        source.kind === prior.kind &&
        source.info === prior.info
      if (named.has(name) && annotated !== undefined && !same) {
        const info = annotated.kind === 'column' ? annotated.info : annotated.info.column
        throw refuse(info, 'alias', `two outputs of the select list are named "${name}"`)
      }
      named.add(name)
    }
    const nodes = rebuildList(selections, (s) => {
      const sel = s.selection
      if (sel.kind === 'SelectAllNode') {
        for (const r of scope.relations) if (!r.qualifiedOnly) addAll(outputs, r, origins)
        return s
      }
      if (sel.kind === 'ReferenceNode' && sel.column.kind === 'SelectAllNode') {
        const qualifier = sel.table === undefined ? undefined : tableName(sel.table).name
        // `q.*` may name a relation of an enclosing query (LATERAL, correlated subqueries).
        const relation = qualifier === undefined ? undefined : scope.relationNamed(qualifier)
        if (relation !== undefined) addAll(outputs, relation, origins)
        else if (qualifier !== undefined) this.checkUnseen(qualifier, '*')
        return s
      }
      if (sel.kind === 'ReferenceNode' || sel.kind === 'ColumnNode') {
        const ref = this.reference(sel, scope)
        claim(columnName(sel), ref?.source)
        if (ref !== undefined) {
          outputs.set(columnName(sel), ref.source)
          origins.set(columnName(sel), ref.relation)
        }
        return s
      }
      if (sel.kind === 'AliasNode') {
        const name = identifierName(sel.alias)
        const inner = sel.node
        const ref = this.reference(inner, scope)
        if (inner.kind !== 'SelectQueryNode') claim(name, ref?.source)
        if (ref !== undefined) {
          if (ref.source.kind === 'column' && Buffer.byteLength(name) > 63) {
            // PostgreSQL truncates identifiers to 63 bytes: the result key would not match the plan.
            throw refuse(ref.source.info, 'alias', 'aliases of encrypted columns must be at most 63 bytes')
          }
          outputs.set(name, ref.source)
          origins.set(name, ref.relation)
          return s
        }
        if (inner.kind === 'SelectQueryNode') {
          const sub = this.select(inner as SelectQueryNode, scope, 'scalar')
          const only = sub.outputs.size === 1 ? [...sub.outputs.values()][0] : undefined
          const passes = only !== undefined && (inner as SelectQueryNode).selections?.length === 1
          claim(name, passes ? only : undefined)
          if (passes && only !== undefined) {
            outputs.set(name, only)
            origins.set(name, null)
          } else {
            const hit = [...sub.outputs.values()].find((o) => o.kind === 'column')
            if (hit?.kind === 'column')
              throw refuse(hit.info, 'subquery', 'a scalar subquery must select exactly one column')
          }
          return rebuild(s, { selection: rebuild(sel, { node: sub.node }) })
        }
        claim(name, undefined)
        return rebuild(s, { selection: rebuild(sel, { node: this.opaque(inner, scope, 'expression') }) })
      }
      return rebuild(s, { selection: this.opaque(sel, scope, 'expression') })
    })
    return { nodes, outputs, origins }
  }

  /**
   * The outputs of a derived table or CTE, which later queries search through: a blind index it
   * passes on must come from the same relation as the encrypted column it indexes (plain
   * references both), or a search on the column would match another row's index.
   *
   * @throws QueryRefusedError `QUERY_REFUSED`
   */
  checkIndexPairs(outputs: ReadonlyMap<string, Source>, origins: ReadonlyMap<string, Origin>): void {
    for (const [name, source] of outputs) {
      if (source.kind !== 'index') continue
      for (const [other, paired] of outputs) {
        if (paired.kind !== 'column' || paired.info !== source.info.column) continue
        const from = origins.get(name) ?? null
        if (from !== null && from === (origins.get(other) ?? null)) continue
        throw refuse(
          paired.info,
          'derived table',
          `"${other}" and "${name}" (its blind index ${source.info.physical}) must both be plain columns of one relation`,
        )
      }
    }
  }

  /**
   * The index conditions whose rows can be checked after decryption. A search (truncated) index
   * needs it: a query shape that combines or counts rows before the check is refused. A unique
   * index is checked too (a row whose index was copied from another row is dropped), where the
   * shape allows; elsewhere the unique index is trusted.
   *
   * @throws QueryRefusedError `QUERY_REFUSED` for a search index in a shape that cannot be checked
   */
  postFilterable(node: SelectQueryNode, pending: readonly PendingFilter[]): readonly PendingFilter[] {
    const search = pending.find((p) => p.index.spec.kind === 'search')
    let blocker: RefusedShape | undefined
    if (node.distinctOn) blocker = 'distinct on'
    else if (node.groupBy || node.having) blocker = 'group by'
    else if (node.setOperations) blocker = 'a set operation'
    else if (
      node.frontModifiers?.some((m) => (m as unknown as { modifier?: string }).modifier === 'Distinct')
    )
      blocker = 'distinct'
    else if (mayCombineRows([...(node.selections ?? []), ...(node.orderBy ? [node.orderBy] : [])]))
      blocker = 'an aggregate, a window or an unknown function'
    // Dropping a row after LIMIT returns fewer rows: wrong for false positives, which are
    // expected; right for a unique index, where a mismatch means a tampered index.
    if (
      blocker === undefined &&
      search !== undefined &&
      (node.limit || node.offset || node.fetch || node.top)
    )
      blocker = 'limit/offset'
    if (blocker === undefined) return pending
    if (search !== undefined) throw searchIndexRefusal(search.index, blocker)
    return []
  }

  /** Finds or adds the hidden selections carrying the ciphertexts of search-index conditions. */
  hiddenSelections(
    selections: ReadonlyArray<SelectionNode>,
    pending: readonly PendingFilter[],
    outputs: Map<string, Source>,
    origins: ReadonlyMap<string, Origin>,
  ): ReadonlyArray<SelectionNode> {
    const next = [...selections]
    let counter = 0
    const existing = new Map<string, string>()
    for (const s of selections) {
      const sel = s.selection
      if (sel.kind !== 'AliasNode') continue
      const name = identifierName(sel.alias)
      // Only the plugin's own names (prefix and a number) are hidden selections; a user alias
      // that merely starts like one must not derail the numbering.
      const number = name.startsWith(HIDDEN_PREFIX) ? name.slice(HIDDEN_PREFIX.length) : ''
      if (!/^\d+$/.test(number) || sel.node.kind !== 'ReferenceNode') continue
      counter = Math.max(counter, Number(number) + 1)
      const ref = sel.node as ReferenceNode
      const qualifier = ref.table === undefined ? '' : tableName(ref.table).name
      existing.set(`${qualifier}\0${columnName(ref)}`, name)
    }
    for (const p of pending) {
      const unique = p.index.spec.kind === 'unique'
      if (unique) {
        // The column is selected already, from the same relation: check that output, and keep it.
        const shown = selectedFrom(outputs, origins, p)
        if (shown !== undefined) {
          this.#postFilters.push(
            Object.freeze({ hidden: shown, column: p.column, index: p.index, probes: p.probes, keep: true }),
          )
          continue
        }
      }
      const exposed = exposedName(p.relation, { kind: 'column', info: p.column })
      // A derived table that does not pass the column on: its unique index is trusted.
      if (exposed === undefined && unique) continue
      if (exposed === undefined)
        throw refuse(
          p.column,
          'search index',
          `the derived table ${p.relation.name} does not select ${p.column.physical}`,
        )
      const key = `${p.relation.name}\0${exposed}`
      let hidden = existing.get(key)
      if (hidden === undefined) {
        // A tree rewritten elsewhere without the check of its unique index: the index is trusted.
        if (this.mode === 'verify' && unique) continue
        if (this.mode === 'verify') {
          throw new QueryRefusedError(
            'PLAINTEXT_SEARCH',
            'A search-index condition lost its hidden ciphertext column.',
            {
              table: p.column.table.logical,
              column: p.column.logical,
            },
          )
        }
        hidden = `${HIDDEN_PREFIX}${counter++}`
        existing.set(key, hidden)
        const ref = referenceNode(exposed, tableNode(p.relation.name))
        next.push(
          Object.freeze({
            kind: 'SelectionNode',
            selection: Object.freeze({ kind: 'AliasNode', node: ref, alias: identifier(hidden) }),
          }) as SelectionNode,
        )
        outputs.set(hidden, { kind: 'column', info: p.column })
      }
      this.#postFilters.push(Object.freeze({ hidden, column: p.column, index: p.index, probes: p.probes }))
    }
    return Object.freeze(next)
  }

  // ── conditions ─────────────────────────────────────────────────────────────────────────────

  // ── helpers ────────────────────────────────────────────────────────────────────────────────

  /**
   * @throws QueryRefusedError `QUERY_REFUSED` for an unqualified name that is no encrypted
   *   column but a relation carrying one: a whole-row value (`select u from users as u`)
   */
  reference(node: OperationNode, scope: Scope): Resolved | undefined {
    if (node.kind === 'ColumnNode') return this.unqualified(columnName(node), scope)
    if (node.kind !== 'ReferenceNode') return undefined
    const ref = node as ReferenceNode
    if (ref.column.kind !== 'ColumnNode') return undefined
    const column = identifierName(ref.column.column)
    if (ref.table === undefined) return this.unqualified(column, scope)
    const qualifier = tableName(ref.table).name
    const resolved = scope.resolve(column, qualifier)
    if (resolved === undefined && !scope.sees(qualifier)) this.checkUnseen(qualifier, column)
    return resolved
  }

  unqualified(column: string, scope: Scope): Resolved | undefined {
    const resolved = scope.resolve(column, undefined)
    if (resolved === undefined) refuseWholeRow(scope, column, `"${column}" as a value`)
    return resolved
  }

  /**
   * A qualifier no relation in scope answers to, that names a table, alias or CTE elsewhere in
   * this query (or one of them but for case): either the database rejects the query, after it
   * has received the parameters, or the plugin's model of the query's scopes is wrong. Both are
   * refused before anything is sent.
   *
   * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
   */
  checkUnseen(qualifier: string, column: string): void {
    this.#relationNames ??= relationNames(this.#root)
    if (!this.#relationNames.has(qualifier.toLowerCase())) return
    throw new QueryRefusedError(
      'AMBIGUOUS_COLUMN',
      `"${qualifier}.${column}" names ${qualifier}, which is a relation of this query but not in scope here.`,
      {
        hint: `Reference ${qualifier} only where it is in FROM or JOIN (a derived table does not see its siblings without LATERAL), and spell it exactly.`,
      },
    )
  }

  sourceIn(info: ColumnInfo | undefined, index: IndexInfo | undefined): Source | undefined {
    if (info !== undefined) return { kind: 'column', info }
    if (index !== undefined) return { kind: 'index', info: index }
    return undefined
  }

  encrypt(info: ColumnInfo, value: unknown): DeferredValue {
    if (this.mode === 'verify') {
      throw new QueryRefusedError(
        'PLAINTEXT_WRITE',
        `A plaintext value for encrypted column ${info.table.physical}.${info.physical} reached the driver; nothing was sent.`,
        {
          table: info.table.logical,
          column: info.logical,
          hint: 'The query bypassed the plugin (withoutPlugins(), another plugin, or a query compiled elsewhere): add encryption.plugin.',
        },
      )
    }
    checkCodec(info, value)
    this.#deferred = true
    return this.note(new DeferredValue('encrypt', info, value))
  }

  /**
   * Walks an expression the plugin does not interpret. Any reference to an annotated column in it
   * is refused, labelled with the innermost construct (function, cast, order by, …); subqueries in
   * it are analyzed in their own scope.
   */
  opaque(node: OperationNode, scope: Scope, label: string): OperationNode {
    switch (node.kind) {
      case 'ReferenceNode':
      case 'ColumnNode': {
        if (isStarOf(node) && label !== 'aggregate count') {
          const { name } = tableName((node as ReferenceNode).table!)
          refuseWholeRow(scope, name, `${name}.* in ${label}`)
        }
        const ref = this.reference(node, scope)
        if (ref?.source.kind === 'column') throw refuse(ref.source.info, label)
        return node
      }
      case 'ValueNode': {
        const v = node as unknown as { value: unknown }
        if (isDeferred(v.value)) this.note(v.value)
        return node
      }
      case 'SelectQueryNode':
      case 'InsertQueryNode':
      case 'UpdateQueryNode':
      case 'DeleteQueryNode':
        return this.query(node, scope, 'opaque').node
      case 'TableNode': {
        // A table as a function's argument (json_agg(t), to_json(t)): a whole-row value.
        const { schema, name } = tableName(node)
        refuseWholeRow(scope, name, `${name} in ${label}`, schema)
        return node
      }
      case 'SelectModifierNode':
        // FOR UPDATE OF t names tables to lock; it holds no value.
        return node
      case 'RawNode':
        checkRawText(scope, node)
        return mapChildren(node, (child) => this.opaque(child, scope, labelOf(node, label)))
      default:
        return mapChildren(node, (child) => this.opaque(child, scope, labelOf(node, label)))
    }
  }
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

/** The first output that passes an annotated column's plaintext on, if any. */
function firstColumn(outputs: ReadonlyMap<string, Source>): Extract<Source, { kind: 'column' }> | undefined {
  for (const source of outputs.values()) if (source.kind === 'column') return source
  return undefined
}
