import { encryptColumn, indexValue } from '../plugin/resolve-values.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import type { SqlFamily } from '../schema/sql-family.js'
import type { KeySet, StoredRow } from './key-set.js'
import { checkSlots } from './slot-check.js'

/**
 * Strict UTF-8, a leading U+FEFF kept (as the plugin's legacy read keeps it): a byte string that
 * is not UTF-8 is refused, never read with U+FFFD in it.
 */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/**
 * What `kfe reencrypt` can do with a value a column declared `migratingFromPlaintext` holds in
 * place (written before the column was annotated): the text to encrypt, or why it is left as it
 * is (a row problem, listed by `kfe verify`):
 * - `LEGACY_UNSUPPORTED`: not a text column's value (the stored bytes of a number, a date, JSON or
 *   a bytes column cannot be told from a damaged or future-format ciphertext without guessing);
 * - `LEGACY_NOT_TEXT`: not UTF-8, or starting with a control character (as a v1 header does: a
 *   damaged ciphertext, not text);
 * - `LEGACY_TOO_LONG`: longer than `maxBytes`, or, on MySQL/MariaDB, no `maxBytes` declared to
 *   tell that its ciphertext fits the column (MySQL would refuse it or cut it short).
 */
export function legacyPlan(
  column: ColumnInfo,
  stored: unknown,
  family: SqlFamily | undefined,
): { readonly value: string } | { readonly problem: string } {
  if (column.spec.codec.kind !== 'text' || !(stored instanceof Uint8Array))
    return { problem: 'LEGACY_UNSUPPORTED' }
  const first = stored[0]
  if (first !== undefined && first < 0x20 && first !== 0x09 && first !== 0x0a && first !== 0x0d)
    return { problem: 'LEGACY_NOT_TEXT' }
  const max = column.spec.maxBytes
  if (max === undefined ? family === 'mysql' : stored.length > max) return { problem: 'LEGACY_TOO_LONG' }
  try {
    return { value: UTF8.decode(stored) }
  } catch {
    return { problem: 'LEGACY_NOT_TEXT' }
  }
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
  value: string,
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
