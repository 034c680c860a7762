import type { OperationNode } from 'kysely'
import type { ColumnInfo, EncryptedSchema, IndexInfo } from '../schema/schema.js'
import type { DeferredValue } from './deferred-value.js'
import type { PostFilter, UnlistedColumn } from './plan.js'
import type { ConditionPlace } from './refusal.js'
import type { Relation, Scope, Source } from './scope.js'
import type { TableColumns } from './table-columns.js'

/**
 * The small interface every part of the analyzer works through: the per-statement files
 * (`analyze-select.ts`, `analyze-insert.ts`, `analyze-update.ts`, `analyze-delete.ts`,
 * `analyze-merge.ts`), the scope rules (`analyze-from.ts`), conditions, select lists and
 * expressions depend on this file only, never on `analyzer.ts`, which implements it and
 * dispatches to them. Types flow one way: no part imports the one that calls it.
 */

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

/** A (possibly rewritten) query and the outputs it passes to its parent, by name. */
export interface Outputs {
  readonly node: OperationNode
  readonly outputs: Map<string, Source>
  /**
   * Every output name, in order (duplicates kept), when known: what `*` over the query returns
   * when it is a derived table or CTE (see {@link Relation.columns}).
   */
  readonly names?: readonly string[] | undefined
}

/**
 * How one kind of statement is analyzed (analyze-select.ts, analyze-insert.ts,
 * analyze-update.ts, analyze-delete.ts): in a level of scope of its own (see `statementScope` in
 * analyze-from.ts), returning the rewritten statement and its outputs.
 *
 * @param parent - the enclosing level whose relations the statement sees
 * @param ctes - the level whose CTEs it sees (see {@link Scope}); `parent` unless given
 */
export type StatementAnalysis<N extends OperationNode> = (
  a: AnalysisContext,
  node: N,
  parent: Scope | undefined,
  role: Role,
  ctes?: Scope,
) => Outputs

/** A search-index condition found in a root WHERE, waiting for its hidden ciphertext column. */
export interface PendingFilter {
  readonly relation: Relation
  readonly column: ColumnInfo
  readonly index: IndexInfo
  readonly probes: readonly DeferredValue[]
}

/** Where a condition (WHERE, ON, HAVING) sits, which decides what may be searched in it. */
export interface ConditionContext {
  /** Where search-index conditions go; undefined where their false positives cannot be removed. */
  readonly pending: PendingFilter[] | undefined
  /** True on a path from the WHERE root through AND and parentheses only. */
  readonly positive: boolean
  /** Where the condition is, for refusal messages. */
  readonly place: ConditionPlace
  /** Set where `positive` turned false: under OR, or under NOT. */
  readonly branch?: 'or' | 'not'
  /**
   * True under the ORs of a column under migration's search (`PHASE_ORS`) reached by a positive
   * path only: a search there finds its tenant as on a positive path (per-tenant keys).
   */
  readonly phaseBranch?: boolean
  /**
   * The whole condition (WHERE, ON or HAVING) this one is part of: where a search on a table with
   * per-tenant keys finds its tenant (an equality in the top-level conjunction).
   */
  readonly root?: OperationNode
}

/**
 * One analysis of one query tree: what it knows (schema, mode), what it records for the plan,
 * and the one entry point for a nested query. Implemented by the `Analyzer` (analyzer.ts).
 */
export interface AnalysisContext {
  readonly schema: EncryptedSchema
  readonly mode: Mode
  /** What is known of the live tables' columns (see {@link TableColumns}). */
  readonly columns: TableColumns
  /**
   * Analyzes a nested query (select, insert, update, delete; anything else as an opaque
   * expression) in a level of its own.
   *
   * @param parent - the enclosing level whose relations the query sees
   * @param ctes - the level whose CTEs it sees (see {@link Scope}); `parent` unless given
   */
  query(node: OperationNode, parent: Scope | undefined, role: Role, ctes?: Scope): Outputs
  /**
   * Every column of `relation`, in the order `*` returns them, when known: a base table's from
   * the catalog (see {@link TableColumns}), a derived table's or CTE's output names.
   */
  columnsOf(relation: Relation): readonly string[] | undefined
  /**
   * An output `name` passing `column` on (or its blind index) may be shadowed by a column of the
   * same name of `by`, a later relation of a `*` whose columns are not known: the driver returns
   * the last column of a name. Noted when the catalog is pending (the wrapper analyzes the query
   * again with it, before sending), else refused.
   *
   * @throws QueryRefusedError `QUERY_REFUSED` (operator `select all`)
   */
  mayBeShadowed(column: ColumnInfo, name: string, by: Relation): void
  /**
   * True when {@link mayBeShadowed} noted an output `name` (at any level of the query): which
   * relation's column it carries is known only once the catalog is read, so the check of a
   * unique-index condition must not read that output (the wrapper's pass, with the catalog,
   * could resolve it to another relation's column).
   */
  shadowable(name: string): boolean
  /**
   * Records that a check needs output names of a derived table or CTE that are not known: when
   * the catalog is pending and the query has a `*` over a base table (whose columns the catalog
   * may list), the wrapper analyzes the query again with the catalog before sending; otherwise
   * nothing (raw SQL's names stay unknown, and the check is not made).
   */
  wantCatalog(): void
  /** Records a deferred value of the tree (made or met), for the wrapper's parameter check. */
  note<T extends DeferredValue>(value: T): T
  /** Records that blind-index columns of `table` are compared with each other. */
  noteIndexComparison(table: string): void
  /**
   * Records a column name spelt like an encrypted column that the schema does not annotate, for
   * the wrapper to check against the catalog (unlisted-columns.ts).
   */
  noteUnlisted(column: UnlistedColumn): void
  /** Records a check of decrypted rows against an index condition. */
  addPostFilter(filter: PostFilter): void
  /**
   * Records, for the root query's outputs, the result keys carrying each encrypted output's row
   * context (see context-selections.ts), and the hidden keys to remove from the rows.
   */
  addOutputContext(context: ReadonlyMap<string, readonly string[]>, hidden: readonly string[]): void
  /**
   * A deferred ciphertext of `value` for `info`.
   *
   * @param context - The row's canonical context values, when the table binds a row context.
   * @throws QueryRefusedError `PLAINTEXT_WRITE` in `verify` mode (the plugin was bypassed)
   * @throws CodecError `CODEC_INVALID_VALUE` for a value of the wrong type
   */
  encrypt(info: ColumnInfo, value: unknown, context?: readonly string[]): DeferredValue
  /**
   * Refuses a qualifier no relation in scope answers to that names a relation elsewhere in the
   * tree (or one of them but for case), or none at all: unless raw SQL of the query may declare
   * it and `column` is named like no encrypted column (of the schema, or one `scope` carries).
   *
   * @throws QueryRefusedError `AMBIGUOUS_COLUMN`
   */
  checkUnseen(qualifier: string, column: string, scope?: Scope): void
}
