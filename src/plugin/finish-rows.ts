import { timingSafeEqual } from 'node:crypto'
import { plaintextValue } from '../schema/plaintext-value.js'
import { MAPPED_PREFIX, type PlanOutput, type PostFilter, type QueryPlan } from './plan.js'
import { indexInput } from './resolve-values.js'

/** Counters the wrapper keeps; exposed by `encryption.stats()`. */
export interface DecryptStats {
  /** Values decrypted. */
  decrypted: number
  /**
   * Rows dropped after decryption because the value does not match the search: search-index
   * false positives, and rows whose unique index value does not belong to their value (copied).
   */
  falsePositives: number
  /** Legacy plaintext values returned from columns declared `migratingFromPlaintext`. */
  plaintextReads: number
}

/**
 * After decryption: false positives out, then the plugin's hidden columns and omitted indexes,
 * then columns stored under another name moved to their own.
 *
 * @returns the rows to hand back (the same array when no row was dropped)
 */
export function finishRows<R extends Record<string, unknown>>(
  plan: QueryPlan,
  rows: R[],
  stats: DecryptStats,
): R[] {
  const kept = omitIndexColumns(plan, removeFalsePositives(plan, rows, stats))
  const hidden = plan.hiddenContext
  if (hidden !== undefined && hidden.length !== 0)
    for (const row of kept) for (const name of hidden) delete row[name]
  mergeMapped(plan, kept)
  return kept
}

/**
 * Columns stored under another name (`storedAs`, see migrated-columns.ts): the decrypted value of
 * `email_encrypted` (selected by `*`, or under the hidden alias `__kfe_mig_email`) goes into the
 * row's `email`, and the ciphertext's own key is removed. While the plaintext column is still
 * written (`dual-writing`, `backfilled`), a row keeps its plaintext when it has one.
 */
function mergeMapped(plan: QueryPlan, rows: Record<string, unknown>[]): void {
  const outputs = plan.outputs
  // Indexed: no iterator per query (this runs for every result, nearly always finding nothing).
  for (let i = 0; i < outputs.length; i++) {
    const { name, column } = outputs[i] as PlanOutput
    const mapped = column.mapped
    if (mapped === undefined) continue
    let to: string
    if (name.startsWith(MAPPED_PREFIX)) to = name.slice(MAPPED_PREFIX.length)
    else if (name === column.physical) to = mapped.name
    else continue
    const fallback = mapped.phase === 'dual-writing' || mapped.phase === 'backfilled'
    for (const row of rows) {
      const value = row[name]
      delete row[name]
      if (fallback && row[to] !== null && row[to] !== undefined) {
        row[to] = asCodecValue(column, row[to])
        continue
      }
      row[to] = value ?? null
    }
  }
}

/**
 * A plaintext as the value its column's codec gives for the encrypted one, so that one result
 * holds one type per column whichever form a row has: `'1.50'` read from a numeric column is
 * `1.5`, as the encrypted value decrypts; a date column's Date is `YYYY-MM-DD` for
 * `calendarDate`; MySQL's tinyint 0/1 is a boolean. A plaintext the backfill could not move as it
 * is (a decimal no number holds) is returned as the driver read it: the backfill and verify report
 * its row. JSON is returned as read: a json/jsonb column comes back parsed and a text one as its
 * JSON text, and a string could be either (the JSON string "123", or the text of 123).
 */
function asCodecValue(column: PlanOutput['column'], raw: unknown): unknown {
  if (column.spec.codec.kind === 'json') return raw
  try {
    return plaintextValue(column, raw)
  } catch {
    return raw
  }
}

/**
 * `omitBlindIndexes`: deletes, from each row, the index columns of every table one of the plan's
 * outputs comes from (a `selectAll()` or `returningAll()` brings them along with the encrypted
 * columns). Rows are keyed as the database returned them, before any plugin renames a key, so
 * the physical names are the keys.
 */
function omitIndexColumns<R extends Record<string, unknown>>(plan: QueryPlan, rows: R[]): R[] {
  let names: Set<string> | undefined
  const outputs = plan.outputs
  for (let i = 0; i < outputs.length; i++) {
    const omitted = (outputs[i] as PlanOutput).column.table.omittedFromResults
    if (omitted.length === 0) continue
    names ??= new Set()
    for (const name of omitted) names.add(name)
  }
  if (names === undefined) return rows
  for (const row of rows) for (const name of names) if (name in row) delete row[name]
  return rows
}

/**
 * The false-positive filter of search-index conditions (and the check of unique ones), on
 * decrypted rows: a row is kept when, for every filter, its decrypted value's index input equals
 * one of the searched values' (constant-time comparison). Loops rather than closures, and a new
 * array only once a row is dropped: a lookup runs this once per query.
 */
function removeFalsePositives<R extends Record<string, unknown>>(
  plan: QueryPlan,
  rows: R[],
  stats: DecryptStats,
): R[] {
  const filters = plan.postFilters
  if (filters.length === 0) return rows
  const wanted: Buffer[][] = []
  for (const f of filters) {
    const inputs: Buffer[] = []
    for (const p of f.probes) inputs.push(indexInput(f.index, p.reveal()))
    wanted.push(inputs)
  }
  let kept: R[] | undefined
  try {
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r] as R
      if (matchesAll(filters, wanted, row)) {
        kept?.push(row)
        continue
      }
      kept ??= rows.slice(0, r)
    }
  } finally {
    for (const list of wanted) for (const w of list) w.fill(0)
  }
  const out = kept ?? rows
  stats.falsePositives += rows.length - out.length
  for (const row of out) for (const filter of filters) if (filter.keep !== true) delete row[filter.hidden]
  return out
}

/** True when `row` matches every filter (its index input equals one of the filter's wanted inputs). */
function matchesAll(
  filters: readonly PostFilter[],
  wanted: readonly (readonly Buffer[])[],
  row: Record<string, unknown>,
): boolean {
  for (let i = 0; i < filters.length; i++) {
    const filter = filters[i] as PostFilter
    const stored = row[filter.hidden]
    if (stored === null || stored === undefined) return false
    const actual = indexInput(filter.index, stored)
    let match = false
    for (const w of wanted[i] as readonly Buffer[]) {
      if (w.length === actual.length && timingSafeEqual(w, actual)) {
        match = true
        break
      }
    }
    actual.fill(0)
    if (!match) return false
  }
  return true
}
