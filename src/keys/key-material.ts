import { inspect } from 'node:util'
import { KeyError } from '../errors.js'
import { adoptKeyBuffer } from '../fields/key-bytes.js'
import type { KeyRef } from './key-provider.js'

/** Something derived from a key (subkeys, HMAC states) that must be wiped with it. */
export interface Destroyable {
  destroy(): void
}

/**
 * An unwrapped 256-bit key in memory, plus whatever has been derived from it.
 *
 * The key cache owns instances: on eviction it calls {@link KeyMaterial.destroy}, which zeroes the
 * key bytes and every derived object. Instances redact themselves in `JSON.stringify`,
 * `util.inspect` and `String()`, so a key never reaches a log by accident.
 */
export class KeyMaterial implements Destroyable {
  readonly ref: KeyRef
  #bytes: Buffer
  #destroyed = false
  readonly #derived = new Map<string, Destroyable>()

  /**
   * Takes ownership of `bytes` (32 bytes); it is zeroed on {@link destroy}. Bytes that share a
   * backing buffer with others (Node's allocation pool) are moved into a buffer of their own and
   * the shared copy zeroed.
   */
  constructor(ref: KeyRef, bytes: Buffer) {
    if (bytes.length !== 32) {
      throw new KeyError('CONFIG_INVALID', `A data key must be 32 bytes, got ${bytes.length}.`, {
        table: ref.logicalTable,
      })
    }
    this.ref = Object.freeze({ ...ref })
    this.#bytes = adoptKeyBuffer(bytes)
  }

  /** The key bytes. Throws `KEY_NOT_FOUND` once destroyed, so a wiped key is never used as zeros. */
  get bytes(): Buffer {
    if (this.#destroyed) {
      throw new KeyError('KEY_NOT_FOUND', 'This key was evicted from the cache and wiped.', {
        table: this.ref.logicalTable,
      })
    }
    return this.#bytes
  }

  get destroyed(): boolean {
    return this.#destroyed
  }

  /**
   * Returns the derived object stored under `slot`, making it on first use. It is destroyed with
   * this key, so derived subkeys live exactly as long as the key they came from.
   */
  derived<T extends Destroyable>(slot: string, make: (bytes: Buffer) => T): T {
    const found = this.#derived.get(slot)
    if (found !== undefined) return found as T
    const made = make(this.bytes)
    this.#derived.set(slot, made)
    return made
  }

  /** Zeroes the key bytes and destroys every derived object. Idempotent. */
  destroy(): void {
    if (this.#destroyed) return
    this.#destroyed = true
    this.#bytes.fill(0)
    for (const d of this.#derived.values()) d.destroy()
    this.#derived.clear()
  }

  toJSON(): unknown {
    return { ref: this.ref, bytes: '[redacted]' }
  }

  toString(): string {
    return `KeyMaterial(${this.ref.logicalTable}/${this.ref.purpose}/v${this.ref.version}, [redacted])`
  }

  [inspect.custom](): string {
    return this.toString()
  }
}
