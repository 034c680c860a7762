import { type AliasedRawBuilder, sql } from 'kysely'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'

/**
 * How the jobs read and pass a table's primary key so that it round-trips exactly. mysql2 returns a
 * `BIGINT` as a JS number unless the application's pool sets `supportBigNumbers` and
 * `bigNumberStrings`, and a number above 2^53 is rounded: keyset pagination would skip rows and a
 * compare-and-set write would match no row. So on MySQL/MariaDB a `BIGINT` key is selected as its
 * decimal text (`cast(id as char)`) and passed back as a JS bigint, which mysql2 writes as an exact
 * integer literal. PostgreSQL drivers already return `int8` exactly (pg: a string; PGlite: a bigint).
 * @internal
 */
export interface KeyColumn {
  readonly name: string
  /** What a query selects for the key (the column, or its exact text aliased to the column name). */
  readonly selection: string | AliasedRawBuilder<unknown, string>
  /**
   * What a query orders by: the column itself. Where {@link KeyColumn.selection} aliases its text
   * to the column's name, the bare name would order by that alias, as text (`'10' < '9'`), while
   * `where id > last` compares integers: keyset pages would skip rows. So the column is qualified.
   */
  readonly order: string
  /** The key as read (after {@link KeyColumn.selection}), made exact: a bigint beyond 2^53. */
  value(raw: unknown): unknown
}

const known = new WeakMap<OpsContext, Map<string, Promise<KeyColumn>>>()

/** The primary-key column of `table`, introspected once per context. @internal */
export function keyColumn(ctx: OpsContext, table: TableInfo): Promise<KeyColumn> {
  let byTable = known.get(ctx)
  if (byTable === undefined) {
    byTable = new Map()
    known.set(ctx, byTable)
  }
  let found = byTable.get(table.physical)
  if (found === undefined) {
    found = introspect(ctx, table)
    byTable.set(table.physical, found)
    found.catch(() => byTable.delete(table.physical))
  }
  return found
}

async function introspect(ctx: OpsContext, table: TableInfo): Promise<KeyColumn> {
  const name = ctx.primaryKey(table)
  const plain: KeyColumn = { name, selection: name, order: name, value: (raw) => raw }
  if (ctx.family !== 'mysql') return plain
  const [schema, bare] = table.physical.includes('.')
    ? (table.physical.split('.') as [string, string])
    : [undefined, table.physical]
  const row = await ctx.db
    .selectFrom('information_schema.columns')
    // Aliased: MySQL 8 labels information_schema columns in capitals.
    .select(sql<string>`data_type`.as('type'))
    .where('table_schema', '=', schema ?? sql<string>`database()`)
    .where('table_name', '=', bare)
    .where('column_name', '=', name)
    .executeTakeFirst()
  const type = String(row?.type ?? '').toLowerCase()
  if (type !== 'bigint') return plain
  return {
    name,
    selection: sql<string>`cast(${sql.ref(name)} as char)`.as(name),
    order: `${table.physical}.${name}`,
    value: exactInteger,
  }
}

/** An integer as a number when that is exact, else as a bigint. Non-integers pass unchanged. */
export function exactInteger(raw: unknown): unknown {
  if (typeof raw === 'bigint') return Number.isSafeInteger(Number(raw)) ? Number(raw) : raw
  if (typeof raw !== 'string' || !/^-?\d{1,20}$/.test(raw)) return raw
  const n = Number(raw)
  return Number.isSafeInteger(n) ? n : BigInt(raw)
}

/** Rewrites the key of each row read with {@link KeyColumn.selection} into its exact value. */
export function exactKeys<T extends Readonly<Record<string, unknown>>>(key: KeyColumn, rows: T[]): T[] {
  if (key.selection === key.name) return rows
  for (const row of rows) (row as Record<string, unknown>)[key.name] = key.value(row[key.name])
  return rows
}
