import { sql } from 'kysely'
import { OperationError } from '../errors.js'
import { SEARCHABLE } from '../keys/key-metadata.js'
import { type IndexInfo, slotOfVersion, type TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'

/**
 * The rotation-slot side of an index-key rotation (docs/operations.md, "Uniqueness through an
 * index-key rotation"): which column each index version lives in, the refusals that keep one
 * complete column with a UNIQUE constraint in every phase, and the clean-up after retirement.
 */

/** The columns of `table`'s indexes with a rotation slot that index key `version` lives in. */
export function slotColumns(table: TableInfo, version: number): IndexInfo[] {
  const slot = slotOfVersion(version)
  return [...table.indexColumns.values()].filter((i) => i.slot === slot)
}

/**
 * The version an index rotation stages after `last`: `last + 1`, or `last + 2` when `last` was
 * retired (a staged version retired unused) and `last + 1` would share its slot with a live
 * version (the active one) while `last + 2`'s slot holds none. Without the skip, such a table
 * could never rotate its index key again: the next version's slot stays taken by the active one.
 */
export async function nextIndexVersion(ctx: OpsContext, table: TableInfo, last: number): Promise<number> {
  if (slotColumns(table, last + 1).length === 0) return last + 1
  const stored = await ctx.store.list(table.logical, 'index')
  const live = stored.filter((k) => SEARCHABLE.has(k.state))
  const taken = (version: number) => live.some((k) => slotOfVersion(k.version) === slotOfVersion(version))
  const lastRetired = stored.find((k) => k.version === last)?.state === 'retired'
  return lastRetired && taken(last + 1) && !taken(last + 2) ? last + 2 : last + 1
}

/**
 * Refuses to stage index `version` while another live version lives in the same slot (a third
 * version before the oldest is retired): writes would have to put two versions in one column.
 * @throws OperationError `ROTATION_REFUSED` naming the version to retire first
 */
export async function assertSlotFree(ctx: OpsContext, table: TableInfo, version: number): Promise<void> {
  if (slotColumns(table, version).length === 0) return
  const live = (await ctx.store.list(table.logical, 'index')).filter(
    (k) =>
      SEARCHABLE.has(k.state) && k.version !== version && slotOfVersion(k.version) === slotOfVersion(version),
  )
  const other = live[0]
  if (other === undefined) return
  throw new OperationError(
    'ROTATION_REFUSED',
    `Index version ${version} of ${table.logical} would share its rotation slot with live version ${other.version}: retire version ${other.version} first (\`kfe retire ${table.physical} --index ${other.version}\`).`,
    { table: table.logical },
  )
}

/**
 * Rows whose encrypted value lacks its blind index in `version`'s slot columns: the cut-over
 * (activation) of `version` waits for 0. One `count(*)` per slot column (a scan of the table).
 */
export async function countMissingInSlot(
  ctx: OpsContext,
  table: TableInfo,
  version: number,
): Promise<number> {
  let missing = 0
  for (const index of slotColumns(table, version)) {
    const { rows } = await sql<{
      n: number | string
    }>`select count(*) as n from ${sql.table(table.physical)} where ${sql.ref(index.column.physical)} is not null and ${sql.ref(index.physical)} is null`.execute(
      ctx.db,
    )
    missing += Number(rows[0]?.n ?? 0)
  }
  return missing
}

/**
 * Refuses to activate index `version` while its slot columns are incomplete: searches probe only
 * the active version's column, and its UNIQUE constraint must see every row.
 * @throws OperationError `ROTATION_REFUSED` with the count of rows left
 */
export async function assertSlotComplete(ctx: OpsContext, table: TableInfo, version: number): Promise<void> {
  const missing = await countMissingInSlot(ctx, table, version)
  if (missing === 0) return
  throw new OperationError(
    'ROTATION_REFUSED',
    `Index version ${version} of ${table.logical} was not activated: ${missing} rows lack its blind index in its rotation slot. Run \`kfe reencrypt ${table.physical}\`, then rotate again.`,
    { table: table.logical, rows: missing },
  )
}

/**
 * Clears the slot columns of a retired index `version` (one UPDATE per column) when no other
 * live version lives there, so the next version starts from an empty column.
 * @returns rows cleared
 */
export async function clearSlot(ctx: OpsContext, table: TableInfo, version: number): Promise<number> {
  const columns = slotColumns(table, version)
  if (columns.length === 0) return 0
  const live = (await ctx.store.list(table.logical, 'index')).some(
    (k) => SEARCHABLE.has(k.state) && slotOfVersion(k.version) === slotOfVersion(version),
  )
  if (live) return 0
  let cleared = 0
  for (const index of columns) {
    const result = await ctx.db
      .updateTable(table.physical)
      .set({ [index.physical]: null })
      .where(index.physical, 'is not', null)
      .executeTakeFirst()
    cleared += Number(result.numUpdatedRows)
  }
  return cleared
}
