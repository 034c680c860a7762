import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { exactInteger, exactKeys, type KeyColumn, keyColumn } from './primary-key.js'
import {
  checkRow,
  destroyKeySet,
  type KeySet,
  type RowCheck,
  type StoredRow,
  storedColumns,
} from './row-check.js'

/** Options of {@link scanTable}. @internal */
export interface ScanOptions {
  readonly signal?: AbortSignal | undefined
  /** Rows per query. @default 1000 */
  readonly pageSize?: number
  /** Read about this many rows, spread over the primary-key range, instead of every row. */
  readonly sample?: number | undefined
  /** Called after each page with the rows read so far. */
  readonly onPage?: (rows: number) => void
}

/** One row as a scan reports it. @internal */
export interface ScannedRow {
  readonly key: unknown
  readonly check: RowCheck
}

/**
 * Reads a table by keyset pages of its primary key, outside any transaction (read-only ops:
 * verify, status, retire's count), and checks each row. Stops early on the signal. Takes
 * ownership of `keys` and wipes them before returning.
 * @returns rows read, and whether the scan was a sample or was stopped
 */
export async function scanTable(
  ctx: OpsContext,
  table: TableInfo,
  keys: KeySet,
  options: ScanOptions,
  onRow: (row: ScannedRow) => void,
): Promise<{ rows: number; sampled: boolean; stopped: boolean; total: number }> {
  try {
    return await scanWith(ctx, table, keys, options, onRow)
  } finally {
    destroyKeySet(keys)
  }
}

async function scanWith(
  ctx: OpsContext,
  table: TableInfo,
  keys: KeySet,
  options: ScanOptions,
  onRow: (row: ScannedRow) => void,
): Promise<{ rows: number; sampled: boolean; stopped: boolean; total: number }> {
  const key = await keyColumn(ctx, table)
  const pk = key.name
  const pageSize = options.pageSize ?? 1000
  const columns = storedColumns(table, key)
  const counted = await ctx.db
    .selectFrom(table.physical)
    .select((eb) => eb.fn.countAll().as('n'))
    .executeTakeFirst()
  const total = Number(counted?.n ?? 0)
  let rows = 0
  const page = async (after: unknown, limit: number): Promise<StoredRow[]> => {
    let q = ctx.db.selectFrom(table.physical).select(columns).orderBy(pk).limit(limit)
    if (after !== null) q = q.where(pk, '>', after)
    return exactKeys(key, (await q.execute()) as StoredRow[])
  }
  const consume = (batch: StoredRow[]) => {
    for (const row of batch) onRow({ key: row[pk], check: checkRow(table, keys, row, false) })
    rows += batch.length
    options.onPage?.(rows)
  }
  const sample = options.sample
  const range = sample !== undefined && total > sample ? await integerRange(ctx, table, key) : undefined
  if (sample !== undefined && range !== undefined) {
    // Ten windows starting at random primary keys: cheap (index range scans) and spread out.
    // In bigint arithmetic: a key near 2^63 rounded through a double would be out of range.
    const windows = 10
    const per = Math.max(1, Math.ceil(sample / windows))
    const span = range.hi - range.lo + 1n
    const starts = Array.from({ length: windows }, () => {
      const offset = BigInt(Math.floor(Math.random() * Number(span)))
      return range.lo - 1n + (offset < span ? offset : span - 1n)
    })
    for (const start of starts
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
      .map((b) => exactInteger(`${b}`))) {
      if (options.signal?.aborted) return { rows, sampled: true, stopped: true, total }
      consume(await page(start, per))
    }
    return { rows, sampled: true, stopped: false, total }
  }
  let after: unknown = null
  for (;;) {
    if (options.signal?.aborted) return { rows, sampled: false, stopped: true, total }
    const batch = await page(after, pageSize)
    if (batch.length === 0) return { rows, sampled: false, stopped: false, total }
    consume(batch)
    after = batch.at(-1)?.[pk] ?? null
  }
}

/** The lowest and highest key when the key is an integer (sampling needs arithmetic on it). */
async function integerRange(
  ctx: OpsContext,
  table: TableInfo,
  key: KeyColumn,
): Promise<{ lo: bigint; hi: bigint } | undefined> {
  const end = async (direction: 'asc' | 'desc') => {
    const rows = await ctx.db
      .selectFrom(table.physical)
      .select(key.selection)
      .orderBy(key.name, direction)
      .limit(1)
      .execute()
    return asBigInt(exactKeys(key, rows as StoredRow[])[0]?.[key.name])
  }
  const lo = await end('asc')
  const hi = lo === undefined ? undefined : await end('desc')
  return lo === undefined || hi === undefined ? undefined : { lo, hi }
}

function asBigInt(value: unknown): bigint | undefined {
  if (typeof value === 'bigint') return value
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value)
  if (typeof value === 'string' && /^-?\d{1,20}$/.test(value)) return BigInt(value)
  return undefined
}
