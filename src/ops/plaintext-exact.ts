import { type AliasedRawBuilder, sql } from 'kysely'
import { columnType } from '../schema/migration-ddl.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'

/**
 * The alias of the check {@link plaintextCheck} selects beside a plaintext: true (1) when the
 * driver's value of it is the stored value, false (0) when it is rounded, NULL for NULL.
 * @internal
 */
export const PLAINTEXT_EXACT = 'kfe_plaintext_exact'

/**
 * The database's own test of whether the driver reads the plaintext column of `column` exactly,
 * aliased {@link PLAINTEXT_EXACT}; undefined for a type it always reads exactly (integers, text,
 * decimals as strings, bytes, dates, a timestamp of 3 fractional digits or fewer), which costs
 * nothing more per row. The drivers return a timestamp as a JS Date, in milliseconds:
 * - PostgreSQL `timestamp`/`timestamptz` of more than 3 fractional digits (the default is 6):
 *   `date_trunc('milliseconds', c) = c`;
 * - MySQL/MariaDB `DATETIME`/`TIMESTAMP` of more than 3: `microsecond(c) % 1000 = 0`; a
 *   `FLOAT`/`DOUBLE`, which mysql2 reads as the double its text names (a `FLOAT` 0.3 is
 *   0.300000011920929…, read 0.3): `c = cast(c as char)`, compared as doubles as the
 *   compare-and-set would.
 *
 * Encrypting the value read would store another value than the column holds (the microseconds
 * lost), and the compare-and-set would never match the row (a batch failing with "kept
 * changing"): such a row is counted failed instead (see `plaintextValue`). Read once per column
 * and context from the catalog.
 * @internal
 */
export function plaintextCheck(
  ctx: OpsContext,
  table: TableInfo,
  column: ColumnInfo,
): Promise<AliasedRawBuilder<unknown, typeof PLAINTEXT_EXACT> | undefined> {
  let byColumn = known.get(ctx)
  if (byColumn === undefined) {
    byColumn = new Map()
    known.set(ctx, byColumn)
  }
  const id = JSON.stringify([table.physical, column.physical])
  let found = byColumn.get(id)
  if (found === undefined) {
    found = checkOf(ctx, table.physical, column.physical)
    byColumn.set(id, found)
    found.catch(() => byColumn.delete(id))
  }
  return found
}

const known = new WeakMap<
  OpsContext,
  Map<string, Promise<AliasedRawBuilder<unknown, typeof PLAINTEXT_EXACT> | undefined>>
>()

async function checkOf(
  ctx: OpsContext,
  physical: string,
  name: string,
): Promise<AliasedRawBuilder<unknown, typeof PLAINTEXT_EXACT> | undefined> {
  const c = sql.ref(name)
  // `timestamp(6) with time zone`, `datetime(6)`, `float`, `double unsigned`: as the catalog says.
  const type = ((await columnType(ctx.db, ctx.family, physical, name)) ?? '').toLowerCase()
  if (ctx.family === 'mysql') {
    const digits = /^(?:datetime|timestamp)\((\d)\)/.exec(type)
    if (digits !== null && Number(digits[1]) > 3) return sql`microsecond(${c}) % 1000 = 0`.as(PLAINTEXT_EXACT)
    if (/^(float|double|real)\b/.test(type)) return sql`${c} = cast(${c} as char)`.as(PLAINTEXT_EXACT)
    return undefined
  }
  const digits = /^timestamp(?:\((\d)\))?/.exec(type)
  if (digits === null || Number(digits[1] ?? 6) <= 3) return undefined
  return sql`date_trunc('milliseconds', ${c}) = ${c}`.as(PLAINTEXT_EXACT)
}
