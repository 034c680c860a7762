import type { RootOperationNode } from 'kysely'
import type { ColumnInfo, IndexInfo } from '../schema/schema.js'
import type { DeferredValue } from './deferred-value.js'

/**
 * An index condition whose false positives (search index) or tampered matches (unique index: an
 * index value copied from another row) must be removed after the rows come back:
 * the row's ciphertext (selected under a hidden alias) is decrypted and compared with the
 * searched values.
 */
export interface PostFilter {
  /** Hidden output column that carries the ciphertext; removed from the rows returned. */
  readonly hidden: string
  readonly column: ColumnInfo
  readonly index: IndexInfo
  /** The probes of the condition; their plaintexts are the accepted values. */
  readonly probes: readonly DeferredValue[]
  /** The output is one the query selects itself (not hidden): kept in the rows returned. */
  readonly keep?: boolean
}

/** One result column to decrypt: its key in the result rows, and the annotated column. */
export interface PlanOutput {
  readonly name: string
  readonly column: ColumnInfo
  /**
   * Keys of the result row that carry the row's context values, in the order of the table's
   * `context` option (selected by the query, or hidden selections the plugin added). Present
   * exactly when the column's table binds a row context.
   */
  readonly context?: readonly string[]
}

/** What the dialect wrapper does with a query's results. Derived from the final query tree. */
export interface QueryPlan {
  /** The result columns to decrypt. */
  readonly outputs: readonly PlanOutput[]
  readonly postFilters: readonly PostFilter[]
  /** True when the tree holds deferred values that must be resolved before sending. */
  readonly deferred: boolean
  /** Every deferred value in the tree: the parameters must hold exactly these (no swapped-in plaintext). */
  readonly deferredValues: ReadonlySet<DeferredValue>
  /**
   * Logical tables whose blind-index columns are compared with each other (a self-join on an
   * encrypted column). Only exact while one index version is live: the wrapper refuses the
   * query during an index-key rotation.
   */
  readonly indexComparisons: ReadonlySet<string>
  /**
   * Result keys the plugin added to carry row-context values (hidden selections of context
   * columns the query did not select): removed from the rows once decrypted.
   */
  readonly hiddenContext?: readonly string[]
  /**
   * An output may be shadowed by a column the schema verification's catalog lists (a `*` over
   * several relations, analyzed before the catalog was read): the wrapper analyzes the tree again
   * with the catalog, after verification and before sending.
   */
  readonly needsCatalog?: boolean
  /**
   * Column names of tables with encrypted columns that are no column the schema annotates but
   * are spelt like one (unlisted-columns.ts): the wrapper refuses each the catalog does not list
   * either, before sending, since a value beside it would go out in plaintext.
   */
  readonly unlisted?: readonly UnlistedColumn[]
}

/**
 * A column name a query uses on a table with encrypted columns that the schema does not annotate,
 * spelt near an encrypted column's name (a typo, a trailing space: `emial`, `'email '`). A value
 * compared with or written to it is a plain parameter, which the database receives before it
 * rejects the name: refused when the catalog shows that no table it may belong to has it.
 */
export interface UnlistedColumn {
  /** The name as the query spells it. */
  readonly name: string
  /**
   * The base tables it may be a column of: the one a qualified or written name names, or every
   * relation in scope of an unqualified one. It is refused only if none of them has it.
   */
  readonly tables: readonly { readonly schema: string | undefined; readonly name: string }[]
  /**
   * Derived tables and CTEs it may be a column of, by the name the query gives them: each has
   * every output name known, and none is this one.
   */
  readonly derived?: readonly string[]
  /** The encrypted column it is spelt like, named in the refusal. */
  readonly near: ColumnInfo
  /** The name it is spelt like: the column's, or a derived table's output passing it on. */
  readonly spelling: string
}

/** The plan of a query that touches no annotated column: nothing to do. */
export const EMPTY_PLAN: QueryPlan = Object.freeze({
  outputs: [],
  postFilters: [],
  deferred: false,
  deferredValues: new Set<DeferredValue>(),
  indexComparisons: new Set<string>(),
})

/** Prefix of the hidden aliases that carry ciphertexts for false-positive removal. */
export const HIDDEN_PREFIX = '__kfe_fp_'

/**
 * Prefix of the hidden alias that carries the ciphertext of a column stored under another name
 * beside its plaintext (`"email_encrypted" as "__kfe_mig_email"`, migrated-columns.ts): the
 * wrapper decrypts it into the key after the prefix.
 */
export const MAPPED_PREFIX = '__kfe_mig_'

/** Prefix of the hidden aliases that carry row-context values the query did not select. */
export const HIDDEN_CONTEXT_PREFIX = '__kfe_ctx_'

/**
 * The plans of the trees the plugin produced and the wrapper has not run yet, by tree identity.
 * The wrapper takes a tree's plan when the tree runs; a tree it finds no plan for (evicted, run a
 * second time, or built elsewhere) takes the verify pass, which derives the plan again from the
 * tree and refuses plaintext: a miss costs time, never safety.
 *
 * A Map, not a WeakMap: a WeakMap entry per query is an ephemeron the garbage collector must
 * process, which measurably slows every query. Instead entries are deleted when taken, and at most
 * {@link PENDING_PLANS_MAX} trees built but never run (`compile()` alone) are held, oldest
 * dropped first, so no query's values outlive it for long.
 */
export class PendingPlans {
  readonly #plans = new Map<RootOperationNode, QueryPlan>()
  // The tree built last, outside the map: a query is usually run right after it is built, so
  // most queries never touch the map.
  #lastNode: RootOperationNode | undefined
  #lastPlan: QueryPlan | undefined

  /** Records the plan of a tree the plugin just returned. */
  set(node: RootOperationNode, plan: QueryPlan): void {
    if (this.#lastNode !== undefined && this.#lastNode !== node) {
      this.#plans.set(this.#lastNode, this.#lastPlan as QueryPlan)
      if (this.#plans.size > PENDING_PLANS_MAX - 1) {
        const oldest = this.#plans.keys().next().value as RootOperationNode
        this.#plans.delete(oldest)
      }
    }
    this.#lastNode = node
    this.#lastPlan = plan
  }

  /** The plan of `node`, removed from the pending set; `undefined` when there is none. */
  take(node: RootOperationNode): QueryPlan | undefined {
    if (node === this.#lastNode) {
      const plan = this.#lastPlan
      this.#lastNode = undefined
      this.#lastPlan = undefined
      // The same tree may also wait in the map (built, another built, then built again).
      if (this.#plans.size !== 0) this.#plans.delete(node)
      return plan
    }
    if (this.#plans.size === 0) return undefined
    const plan = this.#plans.get(node)
    if (plan !== undefined) this.#plans.delete(node)
    return plan
  }
}

/** Trees built but not yet run that keep their plan: enough for a busy pool's queued queries. */
export const PENDING_PLANS_MAX = 256
