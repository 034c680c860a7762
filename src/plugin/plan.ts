import type { FieldAad } from '../fields/field-cipher.js'
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

/** One result column to decrypt, with the AAD names it is bound to (built once per plan). */
export interface PlanOutput {
  readonly name: string
  readonly column: ColumnInfo
  readonly aad: FieldAad
}

/** What the dialect wrapper does with a query's results. Derived from the final query tree. */
export interface QueryPlan {
  /** Result key → annotated column to decrypt. */
  readonly outputs: ReadonlyMap<string, ColumnInfo>
  /** The same, as a list: what row decryption iterates. */
  readonly outputList: readonly PlanOutput[]
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
  outputs: new Map(),
  outputList: [],
  postFilters: [],
  deferred: false,
  deferredValues: new Set<DeferredValue>(),
  indexComparisons: new Set<string>(),
})

/** Prefix of the hidden aliases that carry ciphertexts for false-positive removal. */
export const HIDDEN_PREFIX = '__kfe_fp_'

/** The list form of a plan's outputs, each with its frozen AAD names. */
export function outputList(outputs: ReadonlyMap<string, ColumnInfo>): readonly PlanOutput[] {
  return Object.freeze(
    [...outputs].map(([name, column]) =>
      Object.freeze({
        name,
        column,
        aad: Object.freeze({ table: column.table.logical, column: column.logical }),
      }),
    ),
  )
}
