import type {
  DeleteQueryNode,
  InsertQueryNode,
  MergeQueryNode,
  OperationNode,
  RootOperationNode,
  SelectQueryNode,
  UpdateQueryNode,
} from 'kysely'
import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, EncryptedSchema } from '../schema/schema.js'
import type { AnalysisContext, Mode, Outputs, Role } from './analysis-context.js'
import { analyzeDelete } from './analyze-delete.js'
import { opaque } from './analyze-expressions.js'
import { analyzeInsert } from './analyze-insert.js'
import { analyzeMerge } from './analyze-merge.js'
import { analyzeSelect } from './analyze-select.js'
import { analyzeUpdate } from './analyze-update.js'
import { checkCodec } from './column-rules.js'
import { DeferredValue } from './deferred-value.js'
import { mapChildren } from './node-utils.js'
import { collectDeferred, mentionsSchemaTable } from './nodes.js'
import { EMPTY_PLAN, type PlanOutput, type PostFilter, type QueryPlan, type UnlistedColumn } from './plan.js'
import { declaresRelations } from './raw-text.js'
import { refuse } from './refusal.js'
import { rawWordsIn, relationNames } from './relation-names.js'
import { checkSchemaStatement } from './schema-statements.js'
import type { Relation, Scope } from './scope.js'
import { columnsOf, type TableColumns } from './table-columns.js'
import { unmodelledLevel } from './unlisted-columns.js'

/**
 * Analyzes one query tree (see {@link Analyzer}), knowing `columns` of the live tables (see
 * {@link TableColumns}). Most queries of an application touch no
 * encrypted table: those are returned untouched with the empty plan, after one walk without
 * allocation and without building an analyzer.
 *
 * @throws QueryRefusedError `QUERY_REFUSED`, `AMBIGUOUS_COLUMN`, `PLAINTEXT_WRITE`, `PLAINTEXT_SEARCH`
 * @throws CodecError `CODEC_INVALID_VALUE` for a value of the wrong type
 */
export function analyzeQuery(
  schema: EncryptedSchema,
  mode: Mode,
  root: RootOperationNode,
  columns: TableColumns,
): { node: RootOperationNode; plan: QueryPlan } {
  if (!mentionsSchemaTable(root, schema)) return { node: root, plan: EMPTY_PLAN }
  return new Analyzer(schema, mode, columns).analyze(root)
}

/**
 * Walks one query tree with a scope model (tables, aliases, joins, derived tables, CTEs,
 * correlated subqueries), resolves every reference to an annotated column and either rewrites
 * it (see {@link Mode}) or refuses it. Pure: no keys, no I/O. One instance per query.
 *
 * This class holds what one analysis records for the plan and dispatches each query to the file
 * of its statement kind (analyze-select.ts, analyze-insert.ts, analyze-update.ts,
 * analyze-delete.ts, analyze-merge.ts); they reach it only through {@link AnalysisContext}.
 */
export class Analyzer implements AnalysisContext {
  readonly #postFilters: PostFilter[] = []
  readonly #deferredValues = new Set<DeferredValue>()
  /** Made on the first comparison (rare: a self-join); the plan shares an empty set otherwise. */
  #indexComparisons: Set<string> | undefined
  #deferred = false
  /** An output may be shadowed by columns the pending catalog will list (see {@link TableColumns}). */
  #needsCatalog = false
  /** A check wants output names the catalog gives ({@link Analyzer.wantCatalog}). */
  #catalogWanted = false
  /** A `*` over a table met a pending catalog: the names it wants may come from it. */
  #catalogAsked = false
  /** Names spelt like an encrypted column that the schema does not annotate; made on the first. */
  #unlisted: UnlistedColumn[] | undefined
  /** The output names {@link Analyzer.mayBeShadowed} noted; made on the first one. */
  #shadowable: Set<string> | undefined
  /** Root outputs' row-context keys, and the hidden keys carrying them (tables with `context`). */
  #outputContext: ReadonlyMap<string, readonly string[]> | undefined
  #hiddenContext: readonly string[] | undefined
  /** The tree being analyzed, for {@link Analyzer.checkUnseen}. */
  #root: OperationNode | undefined
  /** Every table, alias and CTE name of the tree, lower-cased: made only when a qualifier is unseen. */
  #relationNames: ReadonlySet<string> | undefined
  /** Every identifier of the tree's raw SQL, lower-cased: made only when a qualifier is unseen. */
  #rawWords: ReadonlySet<string> | undefined

  constructor(
    readonly schema: EncryptedSchema,
    readonly mode: Mode,
    readonly columns: TableColumns,
  ) {}

  /**
   * The queries embedded in raw SQL (`sql` template parameters, at any depth), each analyzed as a
   * subquery (a select as a derived table, a write as an opaque one); the raw SQL's own text and
   * values are left as they are.
   *
   * @param declares - raw SQL around `node` has a FROM or JOIN (see declaresRelations)
   */
  #embedded(node: OperationNode, declares = false): OperationNode {
    switch (node.kind) {
      // A select passes its encrypted columns on as they are stored (raw results are not
      // decrypted): `select count(*) from (${db.selectFrom('users').selectAll()}) as x` runs.
      // A select under a raw text that declares relations of its own gets an unmodelled level
      // above it: it may read their columns (helper-126). A write cannot (helper-128).
      case 'SelectQueryNode':
        return this.query(node, declares ? unmodelledLevel(this.schema, undefined) : undefined, 'derived')
          .node
      case 'InsertQueryNode':
      case 'UpdateQueryNode':
      case 'DeleteQueryNode':
        return this.query(node, undefined, 'opaque').node
      case 'MergeQueryNode':
        return analyzeMerge(this, node as MergeQueryNode)
      default:
        return mapChildren(node, (child) =>
          this.#embedded(child, declares || (node.kind === 'RawNode' && declaresRelations(node))),
        )
    }
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
      case 'InsertQueryNode':
      case 'UpdateQueryNode':
      case 'DeleteQueryNode':
        result = this.query(root, undefined, 'root')
        break
      case 'MergeQueryNode':
        // Its outputs are never encrypted (refused), but its subqueries may hold deferred values.
        result = { node: analyzeMerge(this, root as MergeQueryNode), outputs: new Map() }
        break
      case 'RawNode':
        // Raw SQL is opaque by design (docs/guide.md, "Raw SQL"), but not the Kysely queries
        // embedded in it (sql`${db.insertInto(…)}`): they are analyzed as an opaque subquery is,
        // so one built withoutPlugins() is refused in the verify pass instead of sending its
        // plaintext, and one built with the plugin is rewritten.
        if (!mentionsSchemaTable(root, this.schema)) return { node: root, plan: EMPTY_PLAN }
        result = { node: this.#embedded(root), outputs: new Map() }
        break
      default:
        // DDL: sent as written, but for a builder comparison that sets an encrypted column against
        // a value, or a default of one (schema-statements.ts).
        checkSchemaStatement(root, this.schema)
        return { node: root, plan: EMPTY_PLAN }
    }
    // A name near an encrypted column beside a `*` whose columns the catalog will list.
    if (this.#catalogWanted && this.#catalogAsked) this.#needsCatalog = true
    // The rewrite pass notes every deferred value it makes or meets; the verify pass, which runs
    // on trees others may have built, collects them from the final tree.
    if (this.mode === 'verify') collectDeferred(result.node, this.#deferredValues)
    if (this.#deferredValues.size > 0) this.#deferred = true
    const outputs: PlanOutput[] = []
    for (const [name, source] of result.outputs) {
      if (source.kind !== 'column') continue
      const context = this.#outputContext?.get(name)
      if (source.info.table.context.length !== 0 && context === undefined) {
        // Every path that returns such a column adds its context (or refuses): never decrypt unbound.
        throw refuse(source.info, 'row context', 'its row context columns are not read by this query')
      }
      outputs.push(
        context === undefined ? { name, column: source.info } : { name, column: source.info, context },
      )
    }
    // `.explain()`: the rows are the database's plan, not the query's: nothing to decrypt or
    // filter (each plan row lacks the hidden ciphertext, and was dropped as a false positive).
    if ((root as { explain?: unknown }).explain !== undefined) {
      outputs.length = 0
      this.#postFilters.length = 0
    }
    if (
      outputs.length === 0 &&
      this.#postFilters.length === 0 &&
      !this.#deferred &&
      this.#indexComparisons === undefined &&
      !this.#needsCatalog &&
      this.#unlisted === undefined
    ) {
      return { node: result.node as RootOperationNode, plan: EMPTY_PLAN }
    }
    const plan: { -readonly [K in keyof QueryPlan]: QueryPlan[K] } = {
      outputs: Object.freeze(outputs),
      postFilters: this.#postFilters,
      deferred: this.#deferred,
      deferredValues: this.#deferredValues,
      indexComparisons: this.#indexComparisons ?? EMPTY_PLAN.indexComparisons,
    }
    // Set only when present (no spread of a temporary object per query).
    if (this.#hiddenContext !== undefined) plan.hiddenContext = this.#hiddenContext
    if (this.#needsCatalog) plan.needsCatalog = true
    if (this.#unlisted !== undefined) plan.unlisted = Object.freeze(this.#unlisted)
    return { node: result.node as RootOperationNode, plan: Object.freeze(plan) }
  }

  /** {@inheritDoc AnalysisContext.query} */
  query(node: OperationNode, parent: Scope | undefined, role: Role, ctes = parent): Outputs {
    switch (node.kind) {
      case 'SelectQueryNode':
        return analyzeSelect(this, node as SelectQueryNode, parent, role, ctes)
      case 'InsertQueryNode':
        return analyzeInsert(this, node as InsertQueryNode, parent, role, ctes)
      case 'UpdateQueryNode':
        return analyzeUpdate(this, node as UpdateQueryNode, parent, role, ctes)
      case 'DeleteQueryNode':
        return analyzeDelete(this, node as DeleteQueryNode, parent, role, ctes)
      default:
        return {
          // A fresh level: it sees the enclosing query's tables through `parent` and the CTEs of
          // `ctes`. Its own relations (raw SQL) are not known.
          node: opaque(this, node, unmodelledLevel(this.schema, parent, ctes), 'subquery'),
          outputs: new Map(),
        }
    }
  }

  /** {@inheritDoc AnalysisContext.columnsOf} */
  columnsOf(relation: Relation): readonly string[] | undefined {
    if (relation.base === undefined) return relation.columns
    if (this.columns === 'pending') this.#catalogAsked = true
    return columnsOf(this.columns, relation.base.schema, relation.base.name)
  }

  /** {@inheritDoc AnalysisContext.mayBeShadowed} */
  mayBeShadowed(column: ColumnInfo, name: string, by: Relation): void {
    if (this.columns === 'pending') {
      this.#needsCatalog = true
      this.#shadowable ??= new Set()
      this.#shadowable.add(name)
      return
    }
    const unknown =
      by.base === undefined
        ? 'whose columns are not known'
        : this.columns === undefined
          ? 'whose columns are not known with schema verification off'
          : 'which the catalog read by schema verification does not list'
    throw refuse(
      column,
      'select all',
      `output "${name}" could be replaced by a column of the same name of ${by.name}, a later relation ${unknown} (the driver keeps the last column of a name)`,
    )
  }

  /** {@inheritDoc AnalysisContext.wantCatalog} */
  wantCatalog(): void {
    if (this.columns === 'pending') this.#catalogWanted = true
  }

  /** {@inheritDoc AnalysisContext.shadowable} */
  shadowable(name: string): boolean {
    return this.#shadowable?.has(name) ?? false
  }

  /** {@inheritDoc AnalysisContext.noteIndexComparison} */
  noteIndexComparison(table: string): void {
    this.#indexComparisons ??= new Set()
    this.#indexComparisons.add(table)
  }

  /** {@inheritDoc AnalysisContext.noteUnlisted} */
  noteUnlisted(column: UnlistedColumn): void {
    this.#unlisted ??= []
    // A reference is resolved again when its comparison is walked as an expression: note it once.
    const same = (u: UnlistedColumn) =>
      u.name === column.name &&
      u.tables.length === column.tables.length &&
      u.tables.every((t, i) => t === column.tables[i])
    if (!this.#unlisted.some(same)) this.#unlisted.push(column)
  }

  /** {@inheritDoc AnalysisContext.note} */
  note<T extends DeferredValue>(value: T): T {
    this.#deferred = true
    this.#deferredValues.add(value)
    return value
  }

  /** {@inheritDoc AnalysisContext.addPostFilter} */
  addPostFilter(filter: PostFilter): void {
    this.#postFilters.push(filter)
  }

  /** {@inheritDoc AnalysisContext.addOutputContext} */
  addOutputContext(context: ReadonlyMap<string, readonly string[]>, hidden: readonly string[]): void {
    this.#outputContext = context
    this.#hiddenContext = hidden
  }

  /** {@inheritDoc AnalysisContext.encrypt} */
  encrypt(info: ColumnInfo, value: unknown, context?: readonly string[]): DeferredValue {
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
    return this.note(new DeferredValue('encrypt', info, value, undefined, context))
  }

  /**
   * A qualifier no relation in scope answers to, in a query that reads or writes an encrypted
   * table: refused before anything is sent, unless it is a word of raw SQL in the query, which
   * may declare it (Kysely's MySQL `jsonArrayFrom` reads `agg.email` from `… as agg`;
   * `` sql`audit a` ``; see `rawWords` in raw-text.ts; what raw SQL holds is checked on its own,
   * raw-operands.ts). Either it names a table, alias or CTE elsewhere in this query (or one of
   * them but for case), or nothing of the query at all (a misspelt alias,
   * `where('x.email', '=', v)`, or `x.contact` of a derived table's name for an encrypted
   * column): the database rejects the query only after it has received the parameters (`v` in
   * plaintext), or the plugin's model of the query's scopes is wrong. Any column: a derived
   * table's output may carry an encrypted column under any name.
   *
   * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
   */
  checkUnseen(qualifier: string, column: string, scope?: Scope): void {
    this.#relationNames ??= relationNames(this.#root)
    const folded = qualifier.toLowerCase()
    if (this.#relationNames.has(folded)) {
      throw new QueryRefusedError(
        'AMBIGUOUS_COLUMN',
        `"${qualifier}.${column}" names ${qualifier}, which is a relation of this query but not in scope here.`,
        {
          hint: `Reference ${qualifier} only where it is in FROM or JOIN (a derived table does not see its siblings without LATERAL), and spell it exactly.`,
        },
      )
    }
    this.#rawWords ??= rawWordsIn(this.#root)
    const info = encryptedNamed(this.schema, column) ?? (column === '*' ? undefined : scope?.carrying(column))
    const declared = this.#rawWords.has(folded)
    // Raw SQL of the query may declare the relation (MySQL's jsonArrayFrom reads agg.id from
    // "… as agg"), so such a reference is let through: unless its column is named like an
    // encrypted column, or like one a relation of the query passes an encrypted column on as.
    // The plugin cannot tell what the relation is, and a value beside it, in any expression,
    // may be that column's plaintext, sent before the database rejects the name (helper-86's
    // fuzzer: .where(sql`nowhere.id = 1`).where('nowhere.secret', '=', v); helper-88: the same
    // through lower(), between, a cast, case, sql.ref).
    if (declared && info === undefined) return
    throw new QueryRefusedError(
      'AMBIGUOUS_COLUMN',
      `"${qualifier}.${column}" names no relation of this query${declared ? ' the plugin can see (only its raw SQL names it)' : ''}${info === undefined ? '' : `, and ${column} is named like encrypted column ${info.table.physical}.${info.physical} (or its blind index)`}.`,
      {
        ...(info === undefined ? {} : { table: info.table.logical, column: info.logical }),
        hint: 'Qualify the column with the table name or alias used in FROM or JOIN, spelt exactly.',
      },
    )
  }
}

/**
 * The encrypted column of some table of `schema` that `column` names (itself, its blind index, the
 * name queries use for it when it is stored under another, or any of them but for case: MySQL's
 * rule), if any: only to name it in the refusal.
 */
function encryptedNamed(schema: EncryptedSchema, column: string): ColumnInfo | undefined {
  const folded = column.toLowerCase()
  for (const table of schema.tables.values()) {
    const info = table.column(column) ?? table.indexColumn(column)?.column ?? table.columnIgnoringCase(column)
    if (info !== undefined) return info
    // The name queries use for a column stored under another (storedAs, in the plugin's view).
    for (const c of table.columns.values()) if (c.mapped?.name.toLowerCase() === folded) return c
  }
  return undefined
}
