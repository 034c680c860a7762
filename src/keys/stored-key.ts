import type { KeyError } from '../errors.js'
import type { KeyPurpose, WrappedKey } from './key-provider.js'

/**
 * Lifecycle state of a key version (DESIGN.md §5).
 *
 * - `staged`: readable and searchable by every process, not yet written with.
 * - `active`: THE write key; exactly one per (logical table, purpose).
 * - `decrypt-only`: a former active version, still read and searched while rows are re-encrypted
 *   or re-indexed.
 * - `retired`: no longer searched; still decryptable (data is never lost) but expected unused.
 * - `destroyed`: a tombstone. Every wrapping was erased (crypto-shredding, `KeyStore.destroy`):
 *   the key can never be unwrapped again, reads fail with `KEY_DESTROYED`, and the row stays so
 *   that no key is ever created again under its name.
 */
export type KeyState = 'staged' | 'active' | 'decrypt-only' | 'retired' | 'destroyed'

/** One key version as stored: only ever wrapped. */
export interface StoredKey {
  readonly logicalTable: string
  readonly purpose: KeyPurpose
  readonly version: number
  readonly state: KeyState
  /** One wrapping per KEK that can unwrap this key; empty exactly when the key is `destroyed`. */
  readonly wrappings: readonly WrappedKey[]
  readonly createdAt: Date
  /**
   * The key check value ({@link keyCheckValue}): checked after every unwrap, so a wrong key is
   * named (`KEY_CHECK_FAILED`). Absent for keys stored without one (before it existed, or staged
   * by a caller that did not pass it): those are not checked.
   */
  readonly checkValue?: Uint8Array
}

/**
 * A key-store row that could not be parsed: its fields as far as they could be read, and the
 * `KEY_STORE_CORRUPT` error naming it. One corrupt row never hides the table's other versions.
 */
export interface CorruptKey {
  readonly logicalTable: string
  /** `undefined` when the row's purpose is not one this library knows. */
  readonly purpose: KeyPurpose | undefined
  /** `undefined` when the row's version is not a positive integer. */
  readonly version: number | undefined
  /** `undefined` when the row's state is not one this library knows. */
  readonly state: KeyState | undefined
  readonly error: KeyError
}

/** The rows of a logical table, parsed one by one. */
export interface KeyRows {
  readonly keys: readonly StoredKey[]
  readonly corrupt: readonly CorruptKey[]
}
