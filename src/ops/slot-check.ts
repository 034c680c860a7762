import { timingSafeEqual } from 'node:crypto'
import type { BlindIndexSpec } from '../blindindex/blind-index.js'
import { indexValue } from '../plugin/resolve-values.js'
import { slotOfVersion, type TableInfo } from '../schema/schema.js'
import type { KeySet, StoredRow } from './key-set.js'

/** What the rotation-slot columns of one row hold, accumulated over its indexes. @internal */
export interface SlotState {
  /** Version found in each non-searched slot column (null: lacks its live version's value). */
  readonly versions: Map<string, number | null>
  /** A slot column differs from what the live versions make it. */
  pending: boolean
}

/**
 * Checks both columns of one index with a rotation slot (docs/operations.md): each must hold the
 * blind index under the live version that lives in it (odd versions in the index's own column,
 * even ones in its slot), or NULL when no live version does. The column of the active version is
 * the one searches probe: it is reported in `indexVersions` (null and `INDEX_MISMATCH` when wrong
 * or missing); the other in `slots` (null while not backfilled; a value left in a free slot is
 * `STALE_INDEX`). Cost: one HMAC per live version, whatever the row holds.
 * @returns whether `updates` (when given) received a write
 */
export function checkSlots(
  table: TableInfo,
  spec: BlindIndexSpec,
  keys: KeySet,
  value: unknown,
  row: StoredRow,
  out: {
    readonly indexVersions: Map<string, number | null>
    readonly slots: SlotState
    readonly failures: string[]
    readonly updates: Record<string, Buffer | null> | undefined
  },
): boolean {
  let changed = false
  for (const slot of [0, 1] as const) {
    const index = table.indexColumn(slot === 0 ? spec.name : spec.rotationSlot!)!
    const live = keys.liveIndex.filter((v) => slotOfVersion(v) === slot)
    if (live.length > 1) {
      out.failures.push(`${index.physical}: INDEX_SLOT_CONFLICT`)
      continue
    }
    const version = live[0]
    const key = version === undefined ? undefined : keys.index.get(version)
    const expected = key === undefined ? null : indexValue(key, index, value)
    const stored = row[index.physical]
    const held = stored instanceof Uint8Array ? stored : null
    const same =
      expected === null
        ? held === null
        : held !== null && held.length === expected.length && timingSafeEqual(held, expected)
    const searched = version !== undefined && version === keys.activeIndex
    if (searched) {
      out.indexVersions.set(spec.name, same ? version : null)
      if (!same) out.failures.push(`${index.physical}: INDEX_MISMATCH`)
    } else if (expected === null) {
      if (!same) out.failures.push(`${index.physical}: STALE_INDEX`)
    } else {
      out.slots.versions.set(index.physical, same ? version! : null)
    }
    if (!same) {
      out.slots.pending = true
      if (out.updates !== undefined) {
        out.updates[index.physical] = expected
        changed = true
      }
    }
  }
  return changed
}
