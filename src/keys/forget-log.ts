import { keyDestroyed } from './destroyed-key.js'
import type { KeyMaterial } from './key-material.js'
import { findVersion, type TableMeta } from './key-metadata.js'
import type { StoredKey } from './stored-key.js'

/**
 * The order of a key ring's metadata reads and {@link KeyRing.forget}s (after a shred), so that
 * what was read before a key name was forgotten is never cached after it: a metadata load or an
 * unwrap already under way when the tenant was shredded would otherwise put the tenant's key
 * back in this process's caches, where reads (`peekKey`) would use it until the key cache TTL.
 *
 * Holds one number per key name forgotten in this process (shreds are rare), and one per stored
 * key of a metadata read, held weakly (gone with the metadata).
 */
export class ForgetLog {
  /** Counts metadata reads and forgets, in the order they happen. */
  #seq = 0
  /** The {@link ForgetLog.#seq} of each key name's last forget. */
  readonly #forgotAt = new Map<string, number>()
  /** The {@link ForgetLog.#seq} of the metadata read each stored key came from. */
  readonly #readAt = new WeakMap<StoredKey, number>()

  /** A metadata read starts: its number, for {@link ForgetLog.stamp} and {@link ForgetLog.forgottenSince}. */
  read(): number {
    return ++this.#seq
  }

  /** Records that `keys` came from the metadata read numbered `seq`. */
  stamp(keys: readonly StoredKey[], seq: number): void {
    for (const k of keys) this.#readAt.set(k, seq)
  }

  /**
   * The number of the read `stored` came from; 0 for a key the caller read from the key store
   * itself (not through this ring's metadata), at a time this log cannot know.
   */
  readOf(stored: StoredKey): number {
    return this.#readAt.get(stored) ?? 0
  }

  /** `logicalTable` is forgotten now: reads numbered before this are stale for it. */
  forget(logicalTable: string): void {
    this.#forgotAt.set(logicalTable, ++this.#seq)
  }

  /** Whether `logicalTable` was forgotten after the read numbered `seq` started. */
  forgottenSince(logicalTable: string, seq: number): boolean {
    return (this.#forgotAt.get(logicalTable) ?? 0) > seq
  }

  /**
   * `key`, unwrapped from `stored`, which the read numbered `readAt` returned: kept when its key
   * name was not forgotten since that read, or when `reload` (a new read of the name's metadata,
   * after the forget) still finds the version alive. Otherwise it is zeroed and `KEY_DESTROYED`
   * thrown, so no cache holds it again.
   *
   * `reload` is `undefined` inside a transaction: a read there may see a snapshot taken before
   * the forget (REPEATABLE READ), so it cannot prove the version alive, and a key of a name ever
   * forgotten is refused (whenever it was read).
   * @throws KeyError `KEY_DESTROYED`; whatever `reload` throws (the key zeroed).
   */
  async keep(
    key: KeyMaterial,
    stored: StoredKey,
    readAt: number,
    reload: (() => Promise<TableMeta>) | undefined,
  ): Promise<KeyMaterial> {
    if (!this.forgottenSince(stored.logicalTable, reload === undefined ? 0 : readAt)) return key
    let alive = false
    try {
      const now = reload === undefined ? undefined : findVersion(await reload(), stored)
      alive = now !== undefined && now.state !== 'destroyed'
    } finally {
      if (!alive) key.destroy()
    }
    if (!alive) throw keyDestroyed(stored.logicalTable)
    return key
  }
}
