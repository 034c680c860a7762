import type {
  AliasNode,
  BinaryOperationNode,
  ColumnUpdateNode,
  CommonTableExpressionNode,
  DeleteQueryNode,
  InsertQueryNode,
  JoinNode,
  OperationNode,
  ReferenceNode,
  RootOperationNode,
  SelectionNode,
  SelectQueryNode,
  UpdateQueryNode,
  WithNode,
} from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema, IndexInfo, TableInfo } from '../schema/schema.js'
import { addAll, checkCodec, exposedName, isValuesCall, NEGATED, pickIndex } from './column-rules.js'
import { DeferredValue, isDeferred } from './deferred-value.js'
import { mapChildren } from './node-utils.js'
import {
  collectDeferred,
  columnName,
  columnNode,
  containsAggregate,
  DEFAULT,
  DEFAULT_NODE,
  EXPRESSION,
  identifier,
  LITERAL,
  labelOf,
  listValues,
  mentionsSchemaTable,
  nodeValue,
  rebuild,
  rebuildList,
  referenceNode,
  tableNode,
  valueNode,
} from './nodes.js'
import { EMPTY_PLAN, HIDDEN_PREFIX, type PostFilter, type QueryPlan } from './plan.js'
import { refuse } from './refusal.js'
import { identifierName, type Relation, type Resolved, Scope, type Source, tableName } from './scope.js'

/**
 * `rewrite`: the plugin's pass — plaintext written to or compared with an annotated column is
 * replaced by deferred values. `verify`: the dialect wrapper's pass over the final tree — any
 * plaintext that would still need rewriting means the plugin was bypassed, and is an error.
 */
export type Mode = 'rewrite' | 'verify'

/** How a query's outputs are used by its parent. */
type Role = 'root' | 'derived' | 'scalar' | 'exists' | 'opaque'

interface Outputs {
  readonly node: OperationNode
  readonly outputs: Map<string, Source>
}

/** A search-index condition found in a root WHERE, waiting for its hidden ciphertext column. */
interface PendingFilter {
  readonly relation: Relation
  readonly column: ColumnInfo
  readonly index: IndexInfo
  readonly probes: readonly DeferredValue[]
}

interface ConditionContext {
  /** Where search-index conditions go; undefined where their false positives cannot be removed. */
  readonly pending: PendingFilter[] | undefined
  /** True on a path from the WHERE root through AND and parentheses only. */
  readonly positive: boolean
}

const EQUALITY = new Set(['=', '==', '!=', '<>', 'in', 'not in'])
const NULL_TESTS = new Set(['is', 'is not'])
/**
 * The annotated column named exactly `name`; a name that matches one only when case is ignored
 * (as MySQL matches column names) is refused rather than taken for a plain column.
 */
function exact(table: TableInfo, name: string): ColumnInfo | undefined {
  const info = table.column(name)
  if (info !== undefined || table.indexColumn(name) !== undefined) return info
  const near = table.columnIgnoringCase(name)
  if (near !== undefined) {
    throw new QueryRefusedError(
      'AMBIGUOUS_COLUMN',
      `"${name}" differs only in case from encrypted column ${table.physical}.${near.physical}.`,
      {
        table: near.table.logical,
        column: near.logical,
        hint: `Spell it exactly "${near.physical}".`,
      },
    )
  }
  return undefined
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

  constructor(
    private readonly schema: EncryptedSchema,
    private readonly mode: Mode,
  ) {}

  /** Records a deferred value of the tree (made or met), for the wrapper's parameter check. */
  #note<T extends DeferredValue>(value: T): T {
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
    // Most queries of an application touch no encrypted table: leave them untouched, cheaply.
    if (!mentionsSchemaTable(root, this.schema)) return { node: root, plan: EMPTY_PLAN }
    let result: Outputs
    switch (root.kind) {
      case 'SelectQueryNode':
        result = this.#select(root, undefined, 'root')
        break
      case 'InsertQueryNode':
      case 'UpdateQueryNode':
      case 'DeleteQueryNode':
        result = this.#write(root, undefined, 'root')
        break
      case 'MergeQueryNode':
        return { node: this.#merge(root) as RootOperationNode, plan: EMPTY_PLAN }
      default:
        // DDL and raw SQL: raw SQL is opaque by design (docs/guide.md, "Raw SQL").
        return { node: root, plan: EMPTY_PLAN }
    }
    // The rewrite pass notes every deferred value it makes or meets; the verify pass, which runs
    // on trees others may have built, collects them from the final tree.
    if (this.mode === 'verify') collectDeferred(result.node, this.#deferredValues)
    if (this.#deferredValues.size > 0) this.#deferred = true
    const outputs = new Map<string, ColumnInfo>()
    for (const [name, source] of result.outputs) if (source.kind === 'column') outputs.set(name, source.info)
    if (
      outputs.size === 0 &&
      this.#postFilters.length === 0 &&
      !this.#deferred &&
      this.#indexComparisons.size === 0
    ) {
      return { node: result.node as RootOperationNode, plan: EMPTY_PLAN }
    }
    return {
      node: result.node as RootOperationNode,
      plan: Object.freeze({
        outputs,
        postFilters: this.#postFilters,
        deferred: this.#deferred,
        deferredValues: this.#deferredValues,
        indexComparisons: this.#indexComparisons,
      }),
    }
  }

  // ── queries ────────────────────────────────────────────────────────────────────────────────

  #query(node: OperationNode, parent: Scope | undefined, role: Role): Outputs {
    switch (node.kind) {
      case 'SelectQueryNode':
        return this.#select(node as SelectQueryNode, parent, role)
      case 'InsertQueryNode':
      case 'UpdateQueryNode':
      case 'DeleteQueryNode':
        return this.#write(node as InsertQueryNode | UpdateQueryNode | DeleteQueryNode, parent, role)
      default:
        return {
          node: this.#opaque(node, parent ?? new Scope(this.schema, undefined), 'subquery'),
          outputs: new Map(),
        }
    }
  }

  #select(node: SelectQueryNode, parent: Scope | undefined, role: Role): Outputs {
    const scope = new Scope(this.schema, parent)
    const patch: Record<string, unknown> = {}
    if (node.with) patch.with = this.#with(node.with, scope)
    if (node.from) patch.from = this.#froms(node.from, scope, parent)
    if (node.joins) patch.joins = node.joins.map((j) => this.#join(j, scope, parent))
    const pending: PendingFilter[] | undefined = role === 'root' ? [] : undefined
    if (node.where) patch.where = this.#whereNode(node.where, scope, { pending, positive: true })
    const { nodes, outputs } = this.#selections(node.selections ?? [], scope)
    if (node.selections) patch.selections = nodes
    if (node.groupBy) patch.groupBy = this.#opaque(node.groupBy, scope, 'group by')
    if (node.orderBy) patch.orderBy = this.#opaque(node.orderBy, scope, 'order by')
    if (node.distinctOn) patch.distinctOn = node.distinctOn.map((n) => this.#opaque(n, scope, 'distinct on'))
    if (node.having)
      patch.having = this.#whereNode(node.having, scope, { pending: undefined, positive: false })
    for (const key of ['limit', 'offset', 'fetch', 'top'] as const) {
      if (node[key]) patch[key] = this.#opaque(node[key] as OperationNode, scope, 'expression')
    }
    for (const key of ['frontModifiers', 'endModifiers'] as const) {
      if (node[key]) patch[key] = rebuildList(node[key], (n) => this.#opaque(n, scope, 'expression'))
    }
    const annotated = [...outputs.values()].find((s) => s.kind === 'column')
    if (node.setOperations) {
      patch.setOperations = node.setOperations.map((op) => {
        const branch = this.#query(
          (op as unknown as { expression: OperationNode }).expression,
          parent,
          'derived',
        )
        const hit = [...branch.outputs.values()].find((s) => s.kind === 'column') ?? annotated
        if (hit?.kind === 'column') throw refuse(hit.info, 'set operation')
        return Object.freeze({ ...op, expression: branch.node })
      })
    }
    if (annotated?.kind === 'column') {
      if (node.frontModifiers?.some((m) => (m as unknown as { modifier?: string }).modifier === 'Distinct')) {
        throw refuse(annotated.info, 'distinct')
      }
      if (role === 'opaque') throw refuse(annotated.info, 'subquery', 'its result is used in an expression')
    }
    if (pending !== undefined && pending.length > 0) {
      this.#checkPostFilterable(node, pending)
      patch.selections = this.#hiddenSelections(
        (patch.selections ?? node.selections ?? []) as SelectionNode[],
        pending,
        outputs,
      )
    }
    return { node: rebuild(node, patch), outputs }
  }

  #write(
    node: InsertQueryNode | UpdateQueryNode | DeleteQueryNode,
    parent: Scope | undefined,
    role: Role,
  ): Outputs {
    const scope = new Scope(this.schema, parent)
    const patch: Record<string, unknown> = {}
    if (node.with) patch.with = this.#with(node.with, scope)
    if (node.kind === 'InsertQueryNode') this.#insert(node, scope, patch)
    else if (node.kind === 'UpdateQueryNode') this.#update(node, scope, parent, patch)
    else {
      patch.from = this.#froms(node.from, scope, parent)
      if (node.using) {
        patch.using = rebuild(node.using, {
          tables: node.using.tables.map((t) => this.#fromItem(t, scope, parent)),
        })
      }
      if (node.joins) patch.joins = node.joins.map((j) => this.#join(j, scope, parent))
      if (node.where) patch.where = this.#whereNode(node.where, scope, { pending: undefined, positive: true })
      if (node.orderBy) patch.orderBy = this.#opaque(node.orderBy, scope, 'order by')
    }
    let outputs = new Map<string, Source>()
    if (node.returning) {
      const r = this.#selections(node.returning.selections, scope)
      patch.returning = rebuild(node.returning, { selections: r.nodes })
      outputs = r.outputs
    }
    if (role === 'opaque') {
      const hit = [...outputs.values()].find((s) => s.kind === 'column')
      if (hit?.kind === 'column') throw refuse(hit.info, 'subquery', 'its result is used in an expression')
    }
    return { node: rebuild(node, patch), outputs }
  }

  #insert(node: InsertQueryNode, scope: Scope, patch: Record<string, unknown>): void {
    const relation = node.into ? scope.addTable(node.into) : undefined
    const table = relation?.table
    if (table === undefined) {
      if (node.values) patch.values = this.#query(node.values, scope, 'opaque').node
      return
    }
    const columns = (node.columns ?? []).map((c) => identifierName(c.column))
    const sources = columns.map((c) => this.#sourceIn(exact(table, c), table.indexColumn(c)))
    const annotated = sources.flatMap((s, i) => (s?.kind === 'column' ? [{ info: s.info, at: i }] : []))
    if (node.values && node.values.kind !== 'ValuesNode') {
      // Without a column list, INSERT … SELECT fills every column, encrypted ones included.
      const first =
        annotated[0]?.info ?? (node.columns === undefined ? table.columns.values().next().value : undefined)
      if (first !== undefined) throw refuse(first, 'insert … select')
    }
    // Index columns to add beside each annotated column (absent on the first pass only).
    const present = new Set(columns)
    const added: Array<{ index: IndexInfo; from: number }> = []
    for (const { info, at } of annotated) {
      for (const spec of info.spec.indexes) {
        const index = table.indexColumn(spec.name)!
        if (!present.has(index.physical)) added.push({ index, from: at })
      }
    }
    if (node.values?.kind === 'ValuesNode') {
      const values = node.values as unknown as { values: ReadonlyArray<OperationNode> }
      patch.values = rebuild(node.values, {
        values: values.values.map((row) => this.#insertRow(row, sources, added)),
      })
    }
    if (added.length > 0) {
      patch.columns = Object.freeze([
        ...(node.columns ?? []),
        ...added.map((a) => columnNode(a.index.physical)),
      ])
    }
    // ON CONFLICT … DO UPDATE may read the proposed row as `excluded`.
    scope.relations.push({ name: 'excluded', table, derived: undefined, qualifiedOnly: true })
    if (node.onConflict) {
      const oc = node.onConflict
      const ocPatch: Record<string, unknown> = {}
      if (oc.updates) ocPatch.updates = this.#updates(oc.updates, scope, relation)
      if (oc.updateWhere)
        ocPatch.updateWhere = this.#whereNode(oc.updateWhere, scope, { pending: undefined, positive: true })
      if (oc.indexWhere)
        ocPatch.indexWhere = this.#whereNode(oc.indexWhere, scope, { pending: undefined, positive: true })
      patch.onConflict = rebuild(oc, ocPatch)
    }
    if (node.onDuplicateKey) {
      patch.onDuplicateKey = rebuild(node.onDuplicateKey, {
        updates: this.#updates(node.onDuplicateKey.updates, scope, relation),
      })
    }
  }

  #insertRow(
    row: OperationNode,
    sources: ReadonlyArray<Source | undefined>,
    added: ReadonlyArray<{ index: IndexInfo; from: number }>,
  ): OperationNode {
    const primitive = row.kind === 'PrimitiveValueListNode'
    const items = [...(row as unknown as { values: ReadonlyArray<unknown> }).values]
    const plaintexts = new Map<number, unknown>()
    let changed = false
    sources.forEach((source, i) => {
      if (source === undefined) return
      const item = items[i]
      const value = primitive ? item : nodeValue(item as OperationNode)
      if (source.kind === 'index') {
        this.#checkIndexWrite(source.info, item, primitive)
        return
      }
      if (isDeferred(value)) {
        this.#note(value)
        this.#deferred = true
        return
      }
      if (value === DEFAULT || value === null || value === undefined) return
      if (value === EXPRESSION) throw refuse(source.info, 'expression', 'only plain values can be written')
      if (value === LITERAL) throw refuse(source.info, 'sql.lit')
      const deferred = this.#encrypt(source.info, value)
      plaintexts.set(i, value)
      items[i] = primitive ? deferred : valueNode(deferred)
      changed = true
    })
    for (const { index, from } of added) {
      const item = items[from]
      const current = primitive ? item : nodeValue(item as OperationNode)
      const plaintext = plaintexts.get(from)
      let next: unknown
      if (plaintext !== undefined)
        next = this.#note(new DeferredValue('index', index.column, plaintext, index))
      else if (current === DEFAULT) next = DEFAULT
      else next = null
      items.push(primitive ? next : next === DEFAULT ? DEFAULT_NODE : valueNode(next))
      changed = true
    }
    if (!changed) return row
    return Object.freeze({ ...row, values: Object.freeze(items) })
  }

  #update(
    node: UpdateQueryNode,
    scope: Scope,
    parent: Scope | undefined,
    patch: Record<string, unknown>,
  ): void {
    if (node.table?.kind === 'ListNode') {
      // MySQL's multi-table UPDATE: `updateTable([a, b])`.
      const list = node.table as unknown as { items: ReadonlyArray<OperationNode> }
      patch.table = rebuild(node.table, { items: list.items.map((t) => this.#fromItem(t, scope, parent)) })
    } else if (node.table) {
      patch.table = this.#fromItem(node.table, scope, parent)
    }
    const single = node.table?.kind === 'ListNode' ? undefined : scope.relations[0]
    if (node.from) patch.from = this.#froms(node.from, scope, parent)
    if (node.joins) patch.joins = node.joins.map((j) => this.#join(j, scope, parent))
    if (node.updates) patch.updates = this.#updates(node.updates, scope, single)
    if (node.where) patch.where = this.#whereNode(node.where, scope, { pending: undefined, positive: true })
    if (node.orderBy) patch.orderBy = this.#opaque(node.orderBy, scope, 'order by')
  }

  /** The relation and annotated column (or index column) a SET target names, if any. */
  #setTarget(
    column: OperationNode,
    scope: Scope,
    target: Relation | undefined,
  ): { relation: Relation; info?: ColumnInfo; index?: IndexInfo } | undefined {
    let relation: Relation | undefined
    let name: string
    if (column.kind === 'ColumnNode') {
      name = columnName(column)
      relation = target
      if (relation === undefined) {
        const hit = scope.resolve(name, undefined)
        relation = hit?.relation
      }
    } else if (column.kind === 'ReferenceNode' && (column as ReferenceNode).column.kind === 'ColumnNode') {
      const ref = column as ReferenceNode
      name = columnName(ref)
      const hit = scope.resolve(name, ref.table === undefined ? undefined : tableName(ref.table).name)
      relation = hit?.relation ?? (ref.table === undefined ? target : undefined)
    } else {
      // A raw SET target: refuse it on any table with encrypted columns, since we cannot tell.
      const annotated = scope.relations.find((r) => r.table !== undefined)
      const first = annotated?.table?.columns.values().next().value
      if (first !== undefined) throw refuse(first, 'raw sql', 'a SET target that is not a plain column name')
      return undefined
    }
    const table = relation?.table
    if (relation === undefined || table === undefined) return undefined
    return { relation, info: exact(table, name), index: table.indexColumn(name) }
  }

  /**
   * SET items of UPDATE, ON CONFLICT DO UPDATE and ON DUPLICATE KEY UPDATE. `target` is the one
   * table being written, when there is one; multi-table updates resolve each (qualified) target.
   */
  #updates(
    updates: ReadonlyArray<ColumnUpdateNode>,
    scope: Scope,
    target: Relation | undefined,
  ): ReadonlyArray<OperationNode> {
    const targets = updates.map((u) => this.#setTarget(u.column, scope, target))
    const present = new Set(
      targets.flatMap((t, i) =>
        t === undefined ? [] : [`${t.relation.name}\0${columnName(updates[i]!.column)}`],
      ),
    )
    const out: OperationNode[] = []
    for (const [at, u] of updates.entries()) {
      const hit = targets[at]
      const table = hit?.relation.table
      const name = columnName(u.column)
      const info = hit?.info
      const index = hit?.index
      if (index !== undefined) {
        this.#checkIndexWrite(index, u.value, false)
        out.push(u)
        continue
      }
      if (info === undefined || table === undefined || hit === undefined) {
        out.push(rebuild(u, { value: this.#opaque(u.value, scope, 'update') }))
        continue
      }
      const qualifierOf = (n: OperationNode) =>
        n.kind === 'ReferenceNode' ? (n as ReferenceNode).table : undefined
      const value = nodeValue(u.value)
      let indexValue: (index: IndexInfo) => OperationNode
      if (value === null) {
        indexValue = () => valueNode(null)
        out.push(u)
      } else if (isDeferred(value)) {
        this.#note(value)
        this.#deferred = true
        out.push(u)
        indexValue = () => valueNode(null) // only reached when the index update is missing: refused below
      } else if (value === EXPRESSION && isValuesCall(u.value, info, (n) => this.#reference(n, scope))) {
        // MySQL/MariaDB `values(col)` in ON DUPLICATE KEY UPDATE: the proposed row's ciphertext.
        indexValue = (i) =>
          rebuild(u.value, { arguments: Object.freeze([referenceNode(i.physical, undefined)]) })
        out.push(u)
      } else if (value === EXPRESSION) {
        const ref = this.#reference(u.value, scope)
        if (ref?.source.kind !== 'column' || ref.source.info !== info) {
          throw refuse(
            info,
            'expression',
            'only plain values, NULL, or the same column (e.g. excluded.col) can be written',
          )
        }
        // Copying the same logical column (excluded.email, or t.email) keeps AAD and keys valid.
        const qualifier = (u.value as ReferenceNode).table
        indexValue = (i) => referenceNode(i.physical, qualifier)
        out.push(u)
      } else if (value === LITERAL || value === DEFAULT) {
        throw refuse(info, value === LITERAL ? 'sql.lit' : 'expression')
      } else {
        out.push(rebuild(u, { value: valueNode(this.#encrypt(info, value)) }))
        indexValue = (i) => valueNode(this.#note(new DeferredValue('index', info, value, i)))
      }
      for (const spec of info.spec.indexes) {
        const i = table.indexColumn(spec.name)!
        if (present.has(`${hit.relation.name}\0${i.physical}`)) continue
        if (isDeferred(value)) {
          throw new QueryRefusedError(
            'PLAINTEXT_WRITE',
            `Update of ${table.physical}.${name} lacks its blind index ${i.physical}.`,
            {
              table: table.logical,
              column: info.logical,
              hint: 'Do not remove the index updates the plugin adds.',
            },
          )
        }
        out.push(
          Object.freeze({
            kind: 'ColumnUpdateNode',
            column:
              u.column.kind === 'ReferenceNode'
                ? referenceNode(i.physical, qualifierOf(u.column))
                : columnNode(i.physical),
            value: indexValue(i),
          }) as ColumnUpdateNode,
        )
      }
    }
    return Object.freeze(out)
  }

  #merge(node: OperationNode): OperationNode {
    const m = node as unknown as { into: OperationNode; using?: JoinNode }
    const scope = new Scope(this.schema, undefined)
    for (const item of [m.into, m.using?.table]) {
      const relation = item === undefined ? undefined : scope.addTable(item)
      const first = relation?.table?.columns.values().next().value
      if (first !== undefined) throw refuse(first, 'merge')
    }
    return this.#opaque(node, scope, 'merge')
  }

  #with(node: WithNode, scope: Scope): WithNode {
    const expressions = node.expressions.map((cte: CommonTableExpressionNode) => {
      const result = this.#query(cte.expression, scope, 'derived')
      const { name } = tableName(cte.name.table)
      const annotated = [...result.outputs.values()].find((s) => s.kind === 'column')
      if (cte.name.columns !== undefined && annotated?.kind === 'column') {
        throw refuse(annotated.info, 'cte column list', 'name the columns inside the CTE query instead')
      }
      scope.ctes.set(name, result.outputs)
      return rebuild(cte, { expression: result.node })
    })
    return rebuild(node, { expressions })
  }

  #froms(node: OperationNode, scope: Scope, parent: Scope | undefined): OperationNode {
    const froms = (node as unknown as { froms: ReadonlyArray<OperationNode> }).froms
    return rebuild(node, { froms: froms.map((f) => this.#fromItem(f, scope, parent)) })
  }

  #fromItem(node: OperationNode, scope: Scope, parent: Scope | undefined): OperationNode {
    if (node.kind === 'AliasNode') {
      const alias = node as AliasNode
      if (alias.node.kind !== 'TableNode') {
        // A derived table: its own scope sees only the enclosing query (not siblings).
        const result = this.#query(alias.node, parent, 'derived')
        scope.addDerived(identifierName(alias.alias), result.outputs)
        return rebuild(alias, { node: result.node })
      }
    }
    if (scope.addTable(node) !== undefined) return node
    return this.#opaque(node, scope, 'expression')
  }

  #join(node: JoinNode, scope: Scope, parent: Scope | undefined): JoinNode {
    const lateral = node.joinType.startsWith('Lateral')
    const patch: Record<string, unknown> = {
      table: this.#fromItem(node.table, scope, lateral ? scope : parent),
    }
    if (node.on) patch.on = this.#whereNode(node.on, scope, { pending: undefined, positive: true })
    return rebuild(node, patch)
  }

  // ── selections ─────────────────────────────────────────────────────────────────────────────

  #selections(
    selections: ReadonlyArray<SelectionNode>,
    scope: Scope,
  ): { nodes: ReadonlyArray<SelectionNode>; outputs: Map<string, Source> } {
    const outputs = new Map<string, Source>()
    const nodes = selections.map((s) => {
      const sel = s.selection
      if (sel.kind === 'SelectAllNode') {
        for (const r of scope.relations) if (!r.qualifiedOnly) addAll(outputs, r)
        return s
      }
      if (sel.kind === 'ReferenceNode' && sel.column.kind === 'SelectAllNode') {
        const qualifier = sel.table === undefined ? undefined : tableName(sel.table).name
        const relation = scope.relations.find((r) => r.name === qualifier)
        if (relation !== undefined) addAll(outputs, relation)
        return s
      }
      if (sel.kind === 'ReferenceNode' || sel.kind === 'ColumnNode') {
        const ref = this.#reference(sel, scope)
        if (ref !== undefined) outputs.set(columnName(sel), ref.source)
        return s
      }
      if (sel.kind === 'AliasNode') {
        const name = identifierName(sel.alias)
        const inner = sel.node
        const ref = this.#reference(inner, scope)
        if (ref !== undefined) {
          if (ref.source.kind === 'column' && Buffer.byteLength(name) > 63) {
            // PostgreSQL truncates identifiers to 63 bytes: the result key would not match the plan.
            throw refuse(ref.source.info, 'alias', 'aliases of encrypted columns must be at most 63 bytes')
          }
          outputs.set(name, ref.source)
          return s
        }
        if (inner.kind === 'SelectQueryNode') {
          const sub = this.#select(inner as SelectQueryNode, scope, 'scalar')
          const only = sub.outputs.size === 1 ? [...sub.outputs.values()][0] : undefined
          if (only !== undefined && (inner as SelectQueryNode).selections?.length === 1)
            outputs.set(name, only)
          else {
            const hit = [...sub.outputs.values()].find((o) => o.kind === 'column')
            if (hit?.kind === 'column')
              throw refuse(hit.info, 'subquery', 'a scalar subquery must select exactly one column')
          }
          return rebuild(s, { selection: rebuild(sel, { node: sub.node }) })
        }
        return rebuild(s, { selection: rebuild(sel, { node: this.#opaque(inner, scope, 'expression') }) })
      }
      return rebuild(s, { selection: this.#opaque(sel, scope, 'expression') })
    })
    return { nodes: Object.freeze(nodes), outputs }
  }

  #checkPostFilterable(node: SelectQueryNode, pending: readonly PendingFilter[]): void {
    const first = pending[0]!
    const why = (what: string) =>
      refuse(
        first.column,
        `search index with ${what}`,
        `index ${first.index.physical} is truncated (false positives are removed after the query), which ${what} would break; use a unique index`,
      )
    if (node.limit || node.offset || node.fetch || node.top) throw why('limit/offset')
    if (node.distinctOn) throw why('distinct on')
    if (node.groupBy || node.having) throw why('group by')
    if (node.setOperations) throw why('a set operation')
    if (node.frontModifiers?.some((m) => (m as unknown as { modifier?: string }).modifier === 'Distinct'))
      throw why('distinct')
    if (containsAggregate(node.selections ?? [])) throw why('an aggregate')
  }

  /** Finds or adds the hidden selections carrying the ciphertexts of search-index conditions. */
  #hiddenSelections(
    selections: ReadonlyArray<SelectionNode>,
    pending: readonly PendingFilter[],
    outputs: Map<string, Source>,
  ): ReadonlyArray<SelectionNode> {
    const next = [...selections]
    let counter = 0
    const existing = new Map<string, string>()
    for (const s of selections) {
      const sel = s.selection
      if (sel.kind !== 'AliasNode') continue
      const name = identifierName(sel.alias)
      if (!name.startsWith(HIDDEN_PREFIX)) continue
      counter = Math.max(counter, Number(name.slice(HIDDEN_PREFIX.length)) + 1)
      const ref = sel.node as ReferenceNode
      const qualifier = ref.table === undefined ? '' : tableName(ref.table).name
      existing.set(`${qualifier}\0${columnName(ref)}`, name)
    }
    for (const p of pending) {
      const exposed = exposedName(p.relation, { kind: 'column', info: p.column })
      if (exposed === undefined)
        throw refuse(
          p.column,
          'search index',
          `the derived table ${p.relation.name} does not select ${p.column.physical}`,
        )
      const key = `${p.relation.name}\0${exposed}`
      let hidden = existing.get(key)
      if (hidden === undefined) {
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

  #whereNode<T extends OperationNode>(node: T, scope: Scope, ctx: ConditionContext): T {
    const inner = node as unknown as { where?: OperationNode; on?: OperationNode; having?: OperationNode }
    const key = 'where' in inner ? 'where' : 'on' in inner ? 'on' : 'having'
    return rebuild(node, { [key]: this.#condition(inner[key]!, scope, ctx) })
  }

  #condition(node: OperationNode, scope: Scope, ctx: ConditionContext): OperationNode {
    switch (node.kind) {
      case 'AndNode': {
        const n = node as unknown as { left: OperationNode; right: OperationNode }
        return rebuild(node, {
          left: this.#condition(n.left, scope, ctx),
          right: this.#condition(n.right, scope, ctx),
        })
      }
      case 'OrNode': {
        const n = node as unknown as { left: OperationNode; right: OperationNode }
        const c = { ...ctx, positive: false }
        return rebuild(node, {
          left: this.#condition(n.left, scope, c),
          right: this.#condition(n.right, scope, c),
        })
      }
      case 'ParensNode': {
        const n = node as unknown as { node: OperationNode }
        return rebuild(node, { node: this.#condition(n.node, scope, ctx) })
      }
      case 'UnaryOperationNode': {
        const n = node as unknown as { operator: OperationNode; operand: OperationNode }
        const op = (n.operator as unknown as { operator?: string }).operator
        if (op === 'not')
          return rebuild(node, { operand: this.#condition(n.operand, scope, { ...ctx, positive: false }) })
        if (op === 'exists' || op === 'not exists')
          return rebuild(node, { operand: this.#query(n.operand, scope, 'exists').node })
        return this.#opaque(node, scope, op ?? 'expression')
      }
      case 'BinaryOperationNode':
        return this.#comparison(node as BinaryOperationNode, scope, ctx)
      default:
        return this.#opaque(node, scope, 'expression')
    }
  }

  #comparison(node: BinaryOperationNode, scope: Scope, ctx: ConditionContext): OperationNode {
    const op = (node.operator as unknown as { operator?: string }).operator ?? 'operator'
    const left = this.#reference(node.leftOperand, scope)
    const right = this.#reference(node.rightOperand, scope)
    if (left === undefined && right === undefined) {
      const patch = {
        leftOperand: this.#opaque(node.leftOperand, scope, op),
        rightOperand: this.#opaque(node.rightOperand, scope, op),
      }
      return rebuild(node, patch)
    }
    if (left !== undefined && right !== undefined) return this.#columnToColumn(node, op, left, right)
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
      for (const p of probes) this.#note(p)
      if (probes.length > 0 && ref.source.info.spec.kind === 'search') {
        if (ctx.pending === undefined || !ctx.positive || (op !== 'in' && op !== '=')) {
          throw refuse(
            ref.source.info.column,
            op,
            `search index ${ref.source.info.physical} needs its false positives removed, which is only possible in the WHERE of a SELECT, outside OR/NOT`,
          )
        }
        ctx.pending.push({
          relation: ref.relation,
          column: ref.source.info.column,
          index: ref.source.info,
          probes,
        })
      }
      return node
    }
    const info = ref.source.info
    if (NULL_TESTS.has(op)) {
      if (other.kind === 'ValueNode' && (other as unknown as { value: unknown }).value === null) return node
      throw refuse(info, op)
    }
    if (!EQUALITY.has(op)) throw refuse(info, op)
    const values = listValues(other)
    if (values === undefined) throw refuse(info, op, 'compared with an expression, not a value')
    if (values.length === 1 && values[0] === null && (op === '=' || op === '!=' || op === '<>')) return node
    for (const v of values) {
      if (v === LITERAL) throw refuse(info, 'sql.lit')
      if (v === null || v === undefined || typeof v === 'symbol')
        throw refuse(info, op, 'NULL or an expression inside the list')
    }
    const index = pickIndex(info, op)
    if (this.mode === 'verify') {
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
    if (index.spec.kind === 'search' && (ctx.pending === undefined || !ctx.positive || NEGATED.has(op))) {
      throw refuse(
        info,
        op,
        `search index ${index.physical} has false positives, which can only be removed in the WHERE of a SELECT, outside OR/NOT and <>/not in; declare a unique index (no bits) for this`,
      )
    }
    const probes = values.map((v) => {
      checkCodec(info, v)
      return this.#note(new DeferredValue('probe', info, v, index))
    })
    this.#deferred = true
    if (index.spec.kind === 'search')
      ctx.pending!.push({ relation: ref.relation, column: info, index, probes })
    const exposed = exposedName(ref.relation, { kind: 'index', info: index })
    if (exposed === undefined)
      throw refuse(
        info,
        op,
        `the derived table ${ref.relation.name} does not select the blind index column ${index.physical}`,
      )
    const qualifier = (refNode as ReferenceNode).table
    return Object.freeze({
      kind: 'BinaryOperationNode',
      leftOperand: referenceNode(exposed, qualifier),
      operator: Object.freeze({ kind: 'OperatorNode', operator: NEGATED.has(op) ? 'not in' : 'in' }),
      rightOperand: Object.freeze({ kind: 'ValueListNode', values: Object.freeze(probes.map(valueNode)) }),
    }) as BinaryOperationNode
  }

  #columnToColumn(node: BinaryOperationNode, op: string, left: Resolved, right: Resolved): OperationNode {
    const l = left.source
    const r = right.source
    const domain = (l.kind === 'column' ? l.info : l.info.column).table.logical
    if (l.kind === 'index' || r.kind === 'index' || l.kind === r.kind) this.#indexComparisons.add(domain)
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
        if (this.mode === 'verify') {
          throw new QueryRefusedError(
            'PLAINTEXT_SEARCH',
            `A comparison of encrypted column ${info.table.physical}.${info.physical} reached the driver unrewritten.`,
            { table: info.table.logical, column: info.logical, operator: op },
          )
        }
        return rebuild(node, {
          leftOperand: referenceNode(li, (node.leftOperand as ReferenceNode).table),
          rightOperand: referenceNode(ri, (node.rightOperand as ReferenceNode).table),
        })
      }
    }
    throw refuse(
      info,
      `${op} another column`,
      'only the same column of the same table (a self-join) with a unique index can be compared',
    )
  }

  // ── helpers ────────────────────────────────────────────────────────────────────────────────

  #reference(node: OperationNode, scope: Scope): Resolved | undefined {
    if (node.kind === 'ColumnNode') return scope.resolve(columnName(node), undefined)
    if (node.kind !== 'ReferenceNode') return undefined
    const ref = node as ReferenceNode
    if (ref.column.kind !== 'ColumnNode') return undefined
    return scope.resolve(
      identifierName(ref.column.column),
      ref.table === undefined ? undefined : tableName(ref.table).name,
    )
  }

  #sourceIn(info: ColumnInfo | undefined, index: IndexInfo | undefined): Source | undefined {
    if (info !== undefined) return { kind: 'column', info }
    if (index !== undefined) return { kind: 'index', info: index }
    return undefined
  }

  #encrypt(info: ColumnInfo, value: unknown): DeferredValue {
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
    return this.#note(new DeferredValue('encrypt', info, value))
  }

  #checkIndexWrite(index: IndexInfo, item: unknown, primitive: boolean): void {
    const value = primitive ? item : nodeValue(item as OperationNode)
    if (value === null || value === undefined || value === DEFAULT || value instanceof Uint8Array) return
    if (isDeferred(value)) {
      this.#note(value)
      this.#deferred = true
      return
    }
    if (value === EXPRESSION && !primitive && this.#isSameIndexRef(item as OperationNode, index)) return
    throw refuse(index.column, 'write to blind index column', `${index.physical} is maintained by the plugin`)
  }

  #isSameIndexRef(node: OperationNode, index: IndexInfo): boolean {
    return node.kind === 'ReferenceNode' && columnName(node) === index.physical
  }

  /**
   * Walks an expression the plugin does not interpret. Any reference to an annotated column in it
   * is refused, labelled with the innermost construct (function, cast, order by, …); subqueries in
   * it are analyzed in their own scope.
   */
  #opaque(node: OperationNode, scope: Scope, label: string): OperationNode {
    switch (node.kind) {
      case 'ReferenceNode':
      case 'ColumnNode': {
        const ref = this.#reference(node, scope)
        if (ref?.source.kind === 'column') throw refuse(ref.source.info, label)
        return node
      }
      case 'ValueNode': {
        const v = node as unknown as { value: unknown }
        if (isDeferred(v.value)) this.#note(v.value)
        return node
      }
      case 'SelectQueryNode':
      case 'InsertQueryNode':
      case 'UpdateQueryNode':
      case 'DeleteQueryNode':
        return this.#query(node, scope, 'opaque').node
      default:
        return mapChildren(node, (child) => this.#opaque(child, scope, labelOf(node, label)))
    }
  }
}
