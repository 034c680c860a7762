import type { TableInfo } from '../schema/schema.js'
import type { SqlFamily } from '../schema/sql-family.js'
import type { OpsContext } from './context.js'
import { exactInteger, exactKeys, type KeyColumn, keyColumn } from './primary-key.js'
import {
  checkRow,
  checkWithoutKeys,
  destroyKeySet,
  type KeySet,
  type RowCheck,
  type StoredRow,
  storedColumns,
} from './row-check.js'
import type { TenantKeySets } from './tenant-key-sets.js'

/** Options of {@link scanTable}. @internal */
export interface ScanOptions {
  readonly signal?: AbortSignal | undefined
  /** Rows per query. @default 1000 */
  readonly pageSize?: number
  /** Read about this many rows, spread over the primary-key range, instead of every row. */
  readonly sample?: number | undefined
  /** Called after each page with the rows read so far. */
  readonly onPage?: (rows: number) => void
  /**
   * A table with per-tenant keys: each row is checked under its own tenant's keys, loaded as pages
   * name them (`keys` is then the set's view, see tenant-key-sets.ts); only one tenant's rows when
   * the set covers one.
   */
  readonly tenants?: TenantKeySets | undefined
}

/** One row as a scan reports it. @internal */
export interface ScannedRow {
  readonly key: unknown
  readonly check: RowCheck
  /** The row's tenant was shredded (per-tenant keys): its ciphertexts fail with `KEY_DESTROYED` by design. */
  readonly shredded: boolean
  /** The key set the row was checked under (its tenant's, per-tenant keys); undefined when it had none. */
  readonly keys: KeySet | undefined
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
  const tenants = options.tenants
  const where = tenants?.where
  let countQuery = ctx.db.selectFrom(table.physical).select((eb) => eb.fn.countAll().as('n'))
  if (where !== undefined) countQuery = countQuery.where(where)
  const counted = await countQuery.executeTakeFirst()
  const total = Number(counted?.n ?? 0)
  let rows = 0
  const page = async (after: unknown, limit: number): Promise<StoredRow[]> => {
    let q = ctx.db.selectFrom(table.physical).select(columns).orderBy(key.order).limit(limit)
    if (after !== null) q = q.where(pk, '>', after)
    if (where !== undefined) q = q.where(where)
    return exactKeys(key, (await q.execute()) as StoredRow[])
  }
  const consume = async (batch: StoredRow[]) => {
    if (tenants !== undefined) await tenants.loadRows(batch)
    for (const row of batch) onRow(scanRow(table, keys, row, row[pk], ctx.family))
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
      await consume(await page(start, per))
    }
    return { rows, sampled: true, stopped: false, total }
  }
  let after: unknown = null
  for (;;) {
    if (options.signal?.aborted) return { rows, sampled: false, stopped: true, total }
    const batch = await page(after, pageSize)
    if (batch.length === 0) return { rows, sampled: false, stopped: false, total }
    await consume(batch)
    after = batch.at(-1)?.[pk] ?? null
  }
}

/** One row checked under its key set, or its tenant's (per-tenant keys). */
function scanRow(
  table: TableInfo,
  keys: KeySet,
  row: StoredRow,
  key: unknown,
  family: SqlFamily,
): ScannedRow {
  const picked = keys.tenants?.of(row)
  if (picked === undefined)
    return { key, check: checkRow(table, keys, row, false, family), shredded: false, keys }
  switch (picked.kind) {
    case 'keys':
      return {
        key,
        check: checkRow(table, picked.keys, row, false, family),
        shredded: false,
        keys: picked.keys,
      }
    case 'shredded':
      return { key, check: checkWithoutKeys(table, row, 'KEY_DESTROYED'), shredded: true, keys: undefined }
    // Loaded before the page is checked: a tenant still unloaded has no keys to load.
    case 'missing':
    case 'unloaded':
    case 'other':
      return { key, check: checkWithoutKeys(table, row, 'KEY_NOT_FOUND'), shredded: false, keys: undefined }
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
      .orderBy(key.order, direction)
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
