import type { ColumnInfo, IndexInfo } from '../schema/schema.js'
import type { DeferredValue } from './deferred-value.js'

/**
 * A search-index condition whose false positives must be removed after the rows come back:
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
}

/** One result column to decrypt: its key in the result rows, and the annotated column. */
export interface PlanOutput {
  readonly name: string
  readonly column: ColumnInfo
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
