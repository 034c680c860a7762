import { type AliasedRawBuilder, sql } from 'kysely'
import { ConfigError, SchemaMismatchError, type SchemaProblem } from '../errors.js'
import { columnType, quotedPgTable, tableExists as relationExists } from '../schema/migration-ddl.js'
import { indexColumnNames, type TableInfo } from '../schema/schema.js'
import { requireSession } from '../schema/session-settings.js'
import type { OpsContext } from './context.js'

/**
 * How the jobs read and pass a table's primary key so that it round-trips exactly. A driver's
 * value is not always the stored one: mysql2 returns a `BIGINT` as a JS number unless the
 * application's pool sets `supportBigNumbers` and `bigNumberStrings` (rounded above 2^53), pg,
 * PGlite and mysql2 return a `timestamptz` or `DATETIME(6)` as a JS Date (milliseconds: the
 * microseconds are lost), pg an `interval` as an object. A key read so would make keyset pages skip
 * rows and a compare-and-set write match no row, counted `deleted` while it is there. So a key
 * whose driver value may not be exact is selected as its text (`cast(id as char)`, `id::text`) and
 * passed back as that text, which the database parses as the column's type when it compares
 * (`where id > $1`, `unnest($1::timestamptz[])`, MySQL's string-to-temporal comparison); a MySQL
 * `BIGINT`'s text becomes a JS bigint beyond 2^53, which mysql2 writes as an exact integer
 * literal. Integers, decimals (as strings), strings, uuids and bytes are read as they are. MySQL's
 * `FLOAT`/`DOUBLE` are refused (`FLOAT` compares unequal to its own text).
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
  const [schema, bare] = table.physical.includes('.')
    ? (table.physical.split('.') as [string, string])
    : [undefined, table.physical]
  const column = await columnOf(ctx, table.physical, schema, bare, name)
  // A table misspelt in the encrypted schema, or a migration not run: not a paging problem.
  if (column === undefined) await requireTable(ctx, table)
  await requireMigrationColumns(ctx, table)
  // A job rewrites every row: under a setting that stores values as others it would leave them
  // unreadable, under one that limits its reads it would skip some.
  await requireSession(ctx.db, ctx.family, {
    schema,
    name: bare,
    dateKey: /^(date|timestamp)/i.test(column?.type ?? ''),
    zonedKey: ctx.family === 'mysql' && /^timestamp/i.test(column?.type ?? ''),
  })
  const problem = await pagingProblem(ctx, table.physical, schema, bare, column)
  if (problem !== undefined)
    throw new ConfigError(
      'CONFIG_INVALID',
      `The jobs page through ${table.physical} by ${name}, which ${problem}: pages by it would skip rows and a write by it could reach another row. Name in primaryKeys.${table.physical} a column whose values are unique and never NULL (the primary key, or a column with a UNIQUE index on it alone).`,
      { table: table.logical },
    )
  const type = column?.type ?? ''
  if (ctx.family === 'mysql' && /^(float|double|real)$/.test(type))
    throw new ConfigError(
      'CONFIG_INVALID',
      `The jobs page through ${table.physical} by ${name}, of type ${type}, whose values the driver and the database do not compare exactly: a write by it could match no row. Name in primaryKeys.${table.physical} an integer, decimal, string, uuid or date column with a UNIQUE index on it alone.`,
      { table: table.logical },
    )
  // A row-context column is bound into the AAD by its driver value (a Date is refused there): its
  // text would make the jobs bind a value the plugin never reads back. Such rows fail in the jobs.
  if (EXACT_AS_READ[ctx.family].test(type) || table.context.includes(name))
    return { name, selection: name, order: name, value: (raw) => raw }
  return {
    name,
    selection: sql<string>`cast(${sql.ref(name)} as ${sql.raw(ctx.family === 'mysql' ? 'char' : 'text')})`.as(
      name,
    ),
    order: `${table.physical}.${name}`,
    value: type === 'bigint' ? exactInteger : (raw) => raw,
  }
}

/**
 * Column types whose driver values are the stored values, passed back as they are: integers that
 * fit a double (mysql2) or come as strings or bigints (pg's and PGlite's int8), decimals as
 * strings (pg, PGlite), strings, uuids and bytes. Any other is read as its text.
 */
const EXACT_AS_READ = {
  postgres: /^(smallint|integer|bigint|numeric|text|character varying|character|uuid|bytea)\b/,
  mysql: /^(tinyint|smallint|mediumint|int|char|varchar|binary|varbinary)$/,
} as const

/** What the catalog says of the column the jobs page by. */
interface PagingColumn {
  readonly name: string
  /** `data_type` (MySQL, lower case) or `format_type` (PostgreSQL). */
  readonly type: string
  readonly notNull: boolean
  /** An index starts with it. */
  readonly indexed: boolean
}

/**
 * Refuses a table of the schema that is not in the database (misspelt in `encryptedSchema`, or
 * its migration not run) before an operation reads its keys or rows: the key lookup would say
 * "run kfe init", which then makes keys for it.
 * @throws SchemaMismatchError `SCHEMA_MISMATCH` with one `table-missing` problem
 */
export async function requireTable(ctx: OpsContext, table: TableInfo): Promise<void> {
  if (await tableExists(ctx, table.physical)) return
  throw new SchemaMismatchError([
    {
      kind: 'table-missing',
      table: table.physical,
      columns: [],
      message: `Table ${table.physical} of the encrypted schema does not exist.`,
      fix: `-- create it (run the migrations), or correct its name in encryptedSchema`,
    },
  ])
}

/**
 * Refuses a table with a column under migration whose encrypted or blind-index columns are not
 * there yet (annotated `added` before `kfe migration … --phase add` ran): every job and `verify`
 * reads them, and would fail with the database's own "column does not exist".
 * @throws SchemaMismatchError `SCHEMA_MISMATCH`, a `column-missing` or `index-column-missing`
 *   problem for each
 */
async function requireMigrationColumns(ctx: OpsContext, table: TableInfo): Promise<void> {
  const problems: SchemaProblem[] = []
  for (const column of table.columns.values()) {
    if (column.migration === undefined) continue
    const fix = `-- run \`kfe migration ${table.physical} ${column.physical} --phase add\``
    const wanted = [
      { name: column.stored, kind: 'column-missing' as const },
      ...column.spec.indexes.flatMap((spec) =>
        indexColumnNames(spec).map((name) => ({ name, kind: 'index-column-missing' as const })),
      ),
    ]
    for (const { name, kind } of wanted) {
      if ((await columnType(ctx.db, ctx.family, table.physical, name)) !== undefined) continue
      problems.push({
        kind,
        table: table.physical,
        columns: [name],
        message: `Column ${table.physical}.${name} of ${column.physical}, under migration (${column.migration}), does not exist.`,
        fix,
      })
    }
  }
  if (problems.length > 0) throw new SchemaMismatchError(problems)
}

/**
 * Whether the table exists: `schema.table` in that schema (database), a bare name in the
 * connection's default schema (search path) or database.
 */
export function tableExists(ctx: OpsContext, physical: string): Promise<boolean> {
  return relationExists(ctx.db, ctx.family, physical)
}

/**
 * Why keyset pages by `column` would not visit each row once, or undefined when they do: the
 * column is NOT NULL with a valid unique index on it alone (the catalog), or else (a partitioned
 * table, whose unique indexes must hold the partition key too) it is of an orderable type, an
 * index starts with it, and the table holds no NULL and no repeated value in it now (one scan of
 * the index). A NULL or repeated value written after that check is not seen by it.
 */
async function pagingProblem(
  ctx: OpsContext,
  physical: string,
  schema: string | undefined,
  table: string,
  column: PagingColumn | undefined,
): Promise<string | undefined> {
  if (column === undefined) return 'is not a column of the table (or the table does not exist)'
  if (column.notNull && (await uniquelyIndexed(ctx, physical, schema, table, column.name))) return undefined
  if (!PAGEABLE[ctx.family].test(column.type))
    return `is of type ${column.type}, which pages cannot be ordered by (an integer, decimal, string, uuid or date column can)`
  if (!column.indexed) return 'has no index that starts with it (each page would sort the whole table)'
  const ref = sql.ref(column.name)
  const from = sql.table(physical)
  const nulls = await sql`select 1 as x from ${from} where ${ref} is null limit 1`.execute(ctx.db)
  if (nulls.rows.length > 0) return 'holds NULL in some rows'
  const repeated = await sql`select 1 as x from ${from} group by ${ref} having count(*) > 1 limit 1`.execute(
    ctx.db,
  )
  if (repeated.rows.length > 0) return 'holds the same value in several rows'
  return undefined
}

/** Column types whose values keyset pages compare and order exactly. */
const PAGEABLE = {
  postgres: /^(smallint|integer|bigint|numeric|text|character varying|character|uuid|date|timestamp)\b/,
  mysql:
    /^(tinyint|smallint|mediumint|int|bigint|decimal|char|varchar|binary|varbinary|date|datetime|timestamp)$/,
} as const

/** The column's type, nullability and whether an index starts with it; undefined when there is no such column. */
async function columnOf(
  ctx: OpsContext,
  physical: string,
  schema: string | undefined,
  table: string,
  name: string,
): Promise<PagingColumn | undefined> {
  if (ctx.family === 'mysql') {
    // Aliased: MySQL 8 labels information_schema columns in capitals.
    const { rows } = await sql<{
      type: string
      nullable: string
      indexed: number | string
    }>`select lower(c.data_type) as type, c.is_nullable as nullable,
        exists(select 1 from information_schema.statistics s where s.table_schema = c.table_schema
          and s.table_name = c.table_name and s.column_name = c.column_name and s.seq_in_index = 1) as indexed
      from information_schema.columns c
      where c.table_schema = ${schema ?? sql`database()`} and c.table_name = ${table} and c.column_name = ${name}`.execute(
      ctx.db,
    )
    const row = rows[0]
    if (row === undefined) return undefined
    return {
      name,
      type: String(row.type),
      notNull: String(row.nullable).toUpperCase() === 'NO',
      indexed: Number(row.indexed) === 1,
    }
  }
  const { rows } = await sql<{
    type: string
    notnull: boolean
    indexed: boolean
  }>`select format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as notnull,
      exists(select 1 from pg_index i where i.indrelid = a.attrelid and i.indisvalid and i.indkey[0] = a.attnum
        and i.indpred is null) as indexed
    from pg_attribute a
    where a.attrelid = to_regclass(${quotedPgTable(physical)}) and a.attname = ${name} and not a.attisdropped`.execute(
    ctx.db,
  )
  const row = rows[0]
  if (row === undefined) return undefined
  return { name, type: String(row.type), notNull: row.notnull === true, indexed: row.indexed === true }
}

/**
 * True when a valid unique index (or the primary key) covers column `name` alone, with no
 * predicate or expression.
 */
async function uniquelyIndexed(
  ctx: OpsContext,
  physical: string,
  schema: string | undefined,
  table: string,
  name: string,
): Promise<boolean> {
  if (ctx.family === 'mysql') {
    // Each unique index's columns: one that holds this column alone (names compare without
    // case in MySQL).
    const { rows } = await sql<{ n: number | string; c: string }>`select count(*) as n, max(column_name) as c
      from information_schema.statistics
      where table_schema = ${schema ?? sql`database()`} and table_name = ${table} and non_unique = 0
      group by index_name`.execute(ctx.db)
    return rows.some((r) => Number(r.n) === 1 && String(r.c).toLowerCase() === name.toLowerCase())
  }
  const { rows } = await sql<{ ok: number }>`select 1 as ok from pg_index i
      join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
    where i.indrelid = to_regclass(${quotedPgTable(physical)})
      and i.indisunique and i.indisvalid and i.indnkeyatts = 1 and i.indpred is null and i.indexprs is null
      and a.attname = ${name}
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
