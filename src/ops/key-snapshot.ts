import { type RawBuilder, sql } from 'kysely'
import type { KeyPurpose } from '../keys/key-provider.js'
import type { KeyRing } from '../keys/key-ring.js'
import type { StoredKey } from '../keys/stored-key.js'
import type { OpsContext } from './context.js'

/**
 * A job worker's view of one table's key versions and states, checked against the key table at
 * every claim instead of re-read once per metadata TTL: the claim statement also returns the key
 * table's rows of the table as one string ({@link keyFingerprint}), and a batch whose view differs
 * from it rolls back, reloads and runs again. So a worker never writes with a version the key table
 * no longer lists as active (a stricter guarantee than the TTL's), and the key table costs no round
 * trip of its own per batch. Unwrapped keys still come from the ring's cache on every batch (its TTL
 * and a provider outage behave as before).
 *
 * When a view loaded afresh still differs (a key row the ring cannot parse is counted by the
 * database, not by the ring), the worker falls back to the ring's own per-TTL reads for the rest of
 * its run.
 * @internal
 */
export class KeySnapshot {
  readonly #ctx: OpsContext
  readonly #logical: string
  #versions = new Map<KeyPurpose, readonly StoredKey[]>()
  #viaRing = false
  #view: OpsContext | undefined

  constructor(ctx: OpsContext, logicalTable: string) {
    this.#ctx = ctx
    this.#logical = logicalTable
  }

  /**
   * The context a batch loads its keys through: its ring answers `versions` of this table from the
   * view (loaded from the ring when empty) and everything else as the ring does.
   */
  context(): OpsContext {
    if (this.#viaRing) return this.#ctx
    if (this.#view === undefined) {
      const ring = this.#ctx.ring
      const versions = async (logicalTable: string, purpose: KeyPurpose): Promise<readonly StoredKey[]> => {
        if (logicalTable !== this.#logical) return ring.versions(logicalTable, purpose)
        const held = this.#versions.get(purpose)
        if (held !== undefined) return held
        const loaded = await ring.versions(logicalTable, purpose)
        this.#versions.set(purpose, loaded)
        return loaded
      }
      const view = new Proxy(ring, {
        get(target, prop) {
          if (prop === 'versions') return versions
          const value = Reflect.get(target, prop, target) as unknown
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
        },
      }) as KeyRing
      this.#view = Object.freeze({ ...this.#ctx, ring: view })
    }
    return this.#view
  }

  /** Whether the key table's rows of the table, as the claim read them, are this view's. */
  matches(fingerprint: string | null | undefined): boolean {
    if (this.#viaRing) return true
    const rows = [...(this.#versions.get('data') ?? []), ...(this.#versions.get('index') ?? [])]
    if (!this.#versions.has('data') || !this.#versions.has('index')) return false
    const mine = rows
      .map((k) => `${k.purpose}:${k.version}:${k.state}`)
      .sort(byPurposeThenVersion)
      .join(',')
    return mine === (fingerprint ?? '')
  }

  /** Empties the view and the ring's metadata: the next load reads the key table. */
  reset(): void {
    this.#versions = new Map()
    this.#ctx.ring.refresh()
  }

  /** From now on, the ring's own per-TTL reads (see the class). */
  fallBack(): void {
    this.#viaRing = true
  }
}

function byPurposeThenVersion(a: string, b: string): number {
  const [pa, va] = a.split(':') as [string, string]
  const [pb, vb] = b.split(':') as [string, string]
  return pa < pb ? -1 : pa > pb ? 1 : Number(va) - Number(vb)
}

/**
 * The key table's rows of `logicalTable` as one string, `purpose:version:state` joined by commas
 * in purpose then version order (null when it has none): a scalar subquery for the claim statement.
 * Not a locking read (the claim's `FOR UPDATE` locks the batch row only).
 */
export function keyFingerprint(ctx: OpsContext, logicalTable: string): RawBuilder<string | null> {
  const keys = sql.table(ctx.store.tableName)
  return ctx.family === 'mysql'
    ? sql<
        string | null
      >`(select group_concat(concat(purpose, ':', version, ':', state) order by purpose, version separator ',') from ${keys} where logical_table = ${logicalTable})`
    : sql<
        string | null
      >`(select string_agg(purpose || ':' || version || ':' || state, ',' order by purpose, version) from ${keys} where logical_table = ${logicalTable})`
}
