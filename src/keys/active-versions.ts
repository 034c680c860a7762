import { LRUCache } from 'lru-cache'
import type { KeyPurpose } from './key-provider.js'
import type { KeyEvent } from './key-ring-options.js'

/**
 * Rollback protection of a key ring: the active version of each (table, purpose) this process
 * last saw, and the highest it has ever seen. A lower active version than the highest is a
 * rollback, refused for writes unless `allowRollback`; every change of the active version is
 * reported as a {@link KeyEvent}.
 *
 * Bounded (per-tenant keys make one entry per tenant): beyond `max` key names the least recently
 * seen is forgotten, and its protection starts again from the next version seen, as in a process
 * that just started.
 */
export class ActiveVersions {
  readonly #allowRollback: boolean
  readonly #onKeyEvent: ((event: KeyEvent) => void) | undefined
  /** The active version last seen, and the highest ever seen, per `table/purpose`. */
  readonly #seen: LRUCache<string, { last: number; highest: number }>

  /**
   * @param allowRollback - accept a lower active version than the highest seen.
   * @param onKeyEvent - receives each change; exceptions it throws are swallowed.
   * @param max - most key names remembered (two purposes each).
   */
  constructor(allowRollback: boolean, onKeyEvent: ((event: KeyEvent) => void) | undefined, max: number) {
    this.#allowRollback = allowRollback
    this.#onKeyEvent = onKeyEvent
    this.#seen = new LRUCache({ max: 2 * max })
  }

  /** The highest active version seen for (table, purpose); `undefined` before the first. */
  highest(logicalTable: string, purpose: KeyPurpose): number | undefined {
    return this.#seen.get(`${logicalTable}/${purpose}`)?.highest
  }

  /**
   * Records the active version seen for (table, purpose) and reports a change.
   * @returns false when it is lower than the highest seen and rollbacks are not allowed.
   */
  accept(logicalTable: string, purpose: KeyPurpose, version: number): boolean {
    const id = `${logicalTable}/${purpose}`
    const seen = this.#seen.get(id)
    if (seen === undefined) {
      this.#seen.set(id, { last: version, highest: version })
      return true
    }
    if (seen.last === version && version >= seen.highest) return true
    const rollback = version < seen.highest
    const refused = rollback && !this.#allowRollback
    if (seen.last !== version) {
      this.#report({
        type: refused ? 'rollback-refused' : 'active-version-changed',
        logicalTable,
        purpose,
        from: seen.last,
        to: version,
        highest: seen.highest,
        time: new Date(),
      })
    }
    if (refused) {
      // Remember it was reported, but keep the highest: writes stay refused.
      this.#seen.set(id, { last: version, highest: seen.highest })
      return false
    }
    this.#seen.set(id, { last: version, highest: Math.max(seen.highest, version) })
    return true
  }

  #report(event: KeyEvent): void {
    try {
      this.#onKeyEvent?.(Object.freeze(event))
    } catch {
      // An audit hook must never change the outcome of a key operation.
    }
  }
}
