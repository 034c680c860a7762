import type { KeyState } from '../keys/key-store.js'
import { slotOfVersion, type TableInfo } from '../schema/schema.js'
import type { RowCheck } from './row-check.js'

/**
 * One column of an index with a rotation slot, as `status` reports it: which live index version
 * lives in it (odd versions in the index's own column, even ones in its slot) and what its rows
 * hold.
 */
export interface SlotColumnStatus {
  /** Physical column: the index's own (`email_bidx`) or its rotation slot (`email_bidx_next`). */
  readonly column: string
  /** 0: the index's own column; 1: its rotation slot. */
  readonly slot: 0 | 1
  /** The live index version that lives in this column; `null` when none does (the column is free). */
  readonly version: number | null
  /** That version's state; `null` when the column is free. */
  readonly state: KeyState | null
  /** Searches probe this column (it holds the active version). */
  readonly searched: boolean
  /**
   * Rows (with a value in the indexed column) by what this column holds: an index version's
   * number; `missing` (lacks its live version's value: not backfilled yet), `mismatch` (the
   * searched column holds a value of no version), `stale` (a free column still holds a value).
   * Scaled from the sample when `status` is not exact.
   */
  readonly rows: Readonly<Record<string, number>>
}

/** An index with a rotation slot: both its columns. */
export interface IndexSlotStatus {
  /** The declared index name (its own column). */
  readonly index: string
  /** The annotated column it indexes (logical name). */
  readonly column: string
  readonly columns: readonly [SlotColumnStatus, SlotColumnStatus]
}

/** A live index key version of the table: its number and state. */
interface LiveVersion {
  readonly version: number
  readonly state: KeyState
}

/**
 * Counts, row by row, what each column of each index with a rotation slot holds (see
 * {@link SlotColumnStatus}). Costs nothing beyond the row checks `status` already makes.
 */
export class SlotTally {
  readonly #table: TableInfo
  readonly #columns: Array<{
    index: string
    column: string
    physical: string
    slot: 0 | 1
    live: LiveVersion | undefined
    searched: boolean
    rows: Record<string, number>
  }> = []

  /**
   * @param live - the table's live index versions (staged, active, decrypt-only)
   * @param activeIndex - the active index version
   */
  constructor(table: TableInfo, live: readonly LiveVersion[], activeIndex: number | undefined) {
    this.#table = table
    for (const column of table.columns.values()) {
      for (const spec of column.spec.indexes) {
        if (spec.rotationSlot === undefined) continue
        for (const [slot, physical] of [
          [0, spec.name],
          [1, spec.rotationSlot],
        ] as const) {
          const here = live.filter((v) => slotOfVersion(v.version) === slot)
          const only = here.length === 1 ? here[0] : undefined
          this.#columns.push({
            index: spec.name,
            column: column.logical,
            physical,
            slot,
            live: only,
            searched: only !== undefined && only.version === activeIndex,
            rows: {},
          })
        }
      }
    }
  }

  /** True when the table has no index with a rotation slot. */
  get empty(): boolean {
    return this.#columns.length === 0
  }

  /** Adds one row's check. */
  add(check: RowCheck): void {
    for (const c of this.#columns) {
      let at: string | undefined
      if (c.searched) {
        const v = check.indexVersions.get(c.index)
        at = v === undefined ? undefined : v === null ? 'mismatch' : String(v)
      } else if (c.live !== undefined) {
        const v = check.slotVersions.get(c.physical)
        at = v === undefined ? undefined : v === null ? 'missing' : String(v)
      } else if (check.failures.includes(`${c.physical}: STALE_INDEX`)) {
        at = 'stale'
      }
      if (at !== undefined) c.rows[at] = (c.rows[at] ?? 0) + 1
    }
  }

  /** The breakdown, counts passed through `scale` (the sample's estimate). */
  result(scale: (n: number) => number): IndexSlotStatus[] {
    const out: IndexSlotStatus[] = []
    for (let i = 0; i < this.#columns.length; i += 2) {
      const pair = [this.#columns[i]!, this.#columns[i + 1]!].map(
        (c): SlotColumnStatus => ({
          column: c.physical,
          slot: c.slot,
          version: c.live?.version ?? null,
          state: c.live?.state ?? null,
          searched: c.searched,
          rows: Object.fromEntries(Object.entries(c.rows).map(([k, n]) => [k, scale(n)])),
        }),
      ) as [SlotColumnStatus, SlotColumnStatus]
      out.push({ index: this.#columns[i]!.index, column: this.#columns[i]!.column, columns: pair })
    }
    return out
  }

  /**
   * What needs doing about the slots: rows left to backfill, one line per column. (Wrong or stale
   * values are failures of the row check, which `status` reports already.)
   */
  attention(slots: readonly IndexSlotStatus[], approx: string): string[] {
    const out: string[] = []
    for (const s of slots) {
      for (const c of s.columns) {
        const missing = c.rows.missing ?? 0
        if (missing > 0)
          out.push(
            `${approx}${missing} rows lack index version ${c.version} in rotation slot ${c.column}: run \`kfe reencrypt ${this.#table.physical}\``,
          )
      }
    }
    return out
  }
}
