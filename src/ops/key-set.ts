import type { KeyMaterial } from '../keys/key-material.js'

/**
 * The key sets a job or a scan reads rows with, apart from the code that checks rows with them
 * (row-check.ts), so that what row-check.ts calls (slot-check.ts) can name them without a cycle.
 */

/** Every version of a table's data and index keys, unwrapped, and which ones are active. @internal */
export interface KeySet {
  readonly data: ReadonlyMap<number, KeyMaterial>
  readonly index: ReadonlyMap<number, KeyMaterial>
  readonly activeData: number
  readonly activeIndex: number
  /** Retired index versions: a blind index computed with one is no longer searched. */
  readonly retiredIndex: ReadonlySet<number>
  /** Live index versions (staged, active, decrypt-only): the ones an index's rotation slots hold. */
  readonly liveIndex: readonly number[]
  /**
   * A table with per-tenant keys: picks each row's own set by its tenant (tenant-key-sets.ts). The
   * maps above are then empty and the active versions are the job's targets (a tenant's, or 0 for
   * a job over every tenant).
   */
  readonly tenants?: RowKeySets
}

/** A stored row as a job reads it: primary key, ciphertexts and blind indexes by physical column. */
export type StoredRow = Readonly<Record<string, unknown>>

/**
 * A row's own key set on a table with per-tenant keys, as {@link KeySet.tenants} picks it by the
 * tenant the row holds as read. @internal
 */
export type RowKeys =
  | { readonly kind: 'keys'; readonly keys: KeySet }
  /** The tenant was shredded: the row is unreadable by design (counted apart, never a failure). */
  | { readonly kind: 'shredded' }
  /** The tenant has no usable keys, or the row no usable tenant value: the row fails. */
  | { readonly kind: 'missing' }
  /** Another tenant's row, in a job or scan of one tenant (moved there after it was read). */
  | { readonly kind: 'other' }
  /** The tenant's keys are not loaded yet: load them (outside any transaction), then ask again. */
  | { readonly kind: 'unloaded'; readonly tenant: string }

/** Picks each row's key set on a table with per-tenant keys. @internal */
export interface RowKeySets {
  of(row: StoredRow): RowKeys
}
