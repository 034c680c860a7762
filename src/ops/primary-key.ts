import { type AliasedRawBuilder, sql } from 'kysely'
import { ConfigError } from '../errors.js'
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
  const [schema, bare] = table.physical.includes('.')
    ? (table.physical.split('.') as [string, string])
    : [undefined, table.physical]
  if (!(await uniqueNotNull(ctx, schema, bare, name)))
    throw new ConfigError(
      'CONFIG_INVALID',
      `The jobs page through ${table.physical} by ${name}, which is not NOT NULL with a unique index of its own: pages by it would skip rows (equal or NULL keys) and a write by it could reach another row. Name such a column in primaryKeys.${table.physical} (the primary key, or a NOT NULL column with a UNIQUE index on it alone).`,
      { table: table.logical },
    )
  if (ctx.family !== 'mysql') return plain
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

/**
 * True when column `name` of the table is NOT NULL and a unique index (or primary key) covers it
 * alone, with no predicate or expression: then keyset pages by it visit each row once.
 */
async function uniqueNotNull(
  ctx: OpsContext,
  schema: string | undefined,
  table: string,
  name: string,
): Promise<boolean> {
  if (ctx.family === 'mysql') {
    const nullable = await ctx.db
      .selectFrom('information_schema.columns')
      .select(sql<string>`is_nullable`.as('nullable'))
      .where('table_schema', '=', schema ?? sql<string>`database()`)
      .where('table_name', '=', table)
      .where('column_name', '=', name)
      .executeTakeFirst()
    if (String(nullable?.nullable ?? 'YES').toUpperCase() !== 'NO') return false
    // Each unique index's columns: one that holds this column alone.
    const { rows } = await sql<{ n: number | string; c: string }>`select count(*) as n, max(column_name) as c
      from information_schema.statistics
      where table_schema = ${schema ?? sql`database()`} and table_name = ${table} and non_unique = 0
      group by index_name`.execute(ctx.db)
    return rows.some((r) => Number(r.n) === 1 && r.c === name)
  }
  const { rows } = await sql<{ ok: number }>`select 1 as ok from pg_index i
      join pg_class c on c.oid = i.indrelid
      join pg_namespace s on s.oid = c.relnamespace
      join pg_attribute a on a.attrelid = c.oid and a.attnum = i.indkey[0]
    where c.relname = ${table} and s.nspname = ${schema ?? sql`current_schema()`}
      and i.indisunique and i.indnkeyatts = 1 and i.indpred is null and i.indexprs is null
      and a.attname = ${name} and a.attnotnull
    limit 1`.execute(ctx.db)
  return rows.length > 0
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
