import { encryptColumn, indexValue } from '../plugin/resolve-values.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import type { KeySet, StoredRow } from './key-set.js'
import { checkSlots } from './slot-check.js'

/** Strict UTF-8: a byte string that is not UTF-8 is refused, never read with U+FFFD in it. */
const UTF8 = new TextDecoder('utf-8', { fatal: true })

/**
 * The plaintext a column declared `migratingFromPlaintext` holds in place (a value written before
 * the column was annotated), as the codec's value: the UTF-8 text of a text column, the bytes of
 * a bytes column. `undefined` for what no codec value can be read from without guessing (another
 * codec's stored bytes, text that is not UTF-8): it stays as it is, counted as plaintext.
 */
export function legacyValue(column: ColumnInfo, stored: unknown): unknown {
  const kind = column.spec.codec.kind
  if (!(stored instanceof Uint8Array)) return undefined // not a binary column: the schema check's
  if (kind === 'text') {
    try {
      return UTF8.decode(stored)
    } catch {
      return undefined
    }
  }
  if (kind === 'bytes') return Buffer.from(stored)
  return undefined
}

/**
 * The writes that encrypt a legacy plaintext `value` in place under the active data key, with
 * its blind indexes under the live index versions (as the plugin writes a value): into `updates`.
 * Index columns are written whatever they held (a legacy row's are not ours). A rotation slot
 * shared by two live versions (`INDEX_SLOT_CONFLICT`) goes to `failures`, and nothing is written.
 */
export function encryptLegacy(
  table: TableInfo,
  keys: KeySet,
  column: ColumnInfo,
  value: unknown,
  context: readonly string[] | undefined,
  row: StoredRow,
  updates: Record<string, Buffer | null>,
  failures: string[],
): void {
  const planned: Record<string, Buffer | null> = {}
  for (const spec of column.spec.indexes) {
    if (spec.rotationSlot !== undefined) {
      const slotFailures: string[] = []
      const out = {
        indexVersions: new Map(),
        slots: { versions: new Map(), pending: false },
        failures: slotFailures,
        updates: planned,
      }
      checkSlots(table, spec, keys, value, row, out)
      const conflicts = slotFailures.filter((f) => f.endsWith(': INDEX_SLOT_CONFLICT'))
      if (conflicts.length > 0) {
        failures.push(...conflicts)
        return
      }
      continue
    }
    const index = table.indexColumn(spec.name)!
    planned[spec.name] = indexValue(keys.index.get(keys.activeIndex)!, index, value)
  }
  planned[column.stored] = encryptColumn(keys.data.get(keys.activeData)!, column, value, context, false)
  Object.assign(updates, planned)
}
