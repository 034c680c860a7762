import { type Kysely, type RawBuilder, sql } from 'kysely'
import { type SessionSettings, sessionQuery, sessionSettings } from './session-settings.js'
import type { SqlFamily } from './sql-family.js'

/** One table (or view) of the live database, as its catalog describes it. */
export interface CatalogTable {
  /** The schema (PostgreSQL) or database (MySQL) it lives in. */
  readonly schema: string
  readonly name: string
  /** A base table (false: a view). */
  readonly base: boolean
  /** MySQL: the storage engine, lower case (`innodb`, `myisam`, …); PostgreSQL: undefined. */
  readonly engine: string | undefined
  /** Column name → data type (lower case, e.g. `bytea`, `varbinary`, `text`), in column order. */
  readonly columns: ReadonlyMap<string, string>
  /** Columns that carry a single-column UNIQUE index (or constraint) without a predicate. */
  readonly uniqueColumns: ReadonlySet<string>
  /** Column name → the characters a string column holds at most (`varchar(n)`), when it says. */
  readonly maxLengths: ReadonlyMap<string, number>
  /** Column name → the bytes a string or binary column holds at most, when it says. */
  readonly maxOctets: ReadonlyMap<string, number>
  /** Integer columns declared `unsigned` (MySQL; PostgreSQL has none). */
  readonly unsignedColumns: ReadonlySet<string>
  /** Column name → the character set of a MySQL string column (`utf8mb4`, `latin1`, …). */
  readonly charsets: ReadonlyMap<string, string>
  /** Columns declared `NOT NULL`. */
  readonly notNullColumns: ReadonlySet<string>
  /**
   * MySQL: `AUTO_INCREMENT` columns, which an INSERT of 0 (or NULL) gives the next generated
   * value unless the session's `sql_mode` holds `NO_AUTO_VALUE_ON_ZERO`. PostgreSQL: none (an
   * identity or serial column stores the 0 written).
   */
  readonly autoIncrementColumns: ReadonlySet<string>
  /** MySQL: integer columns declared `ZEROFILL`, whose text is padded with zeros (`00007`). */
  readonly zerofillColumns: ReadonlySet<string>
}

/** The tables of the schemas an encrypted schema lives in: what verification reads, once. */
export interface Catalog {
  readonly family: SqlFamily
  /** The default schema (PostgreSQL `current_schema()`) or database (MySQL `database()`). */
  readonly defaultSchema: string
  /** MySQL: the session's `sql_mode` as the server reported it; PostgreSQL: undefined. */
  readonly sqlMode: string | undefined
  /** The settings of the session the catalog was read on (see session-settings.ts). */
  readonly session: SessionSettings
  readonly tables: readonly CatalogTable[]
  /**
   * The table a schema's physical name designates (`users`, or `app.users` on PostgreSQL). On
   * MySQL a name that differs only in case is found too (the server may fold table names).
   */
  table(physical: string): CatalogTable | undefined
  /** A column of `table` by name (ignoring case on MySQL, whose column names do). */
  column(table: CatalogTable, name: string): string | undefined
  /** The column's own spelling in the catalog (MySQL may differ in case), if it exists. */
  columnName(table: CatalogTable, name: string): string | undefined
  /** The characters a string column holds at most (`varchar(n)`), if it says. */
  maxLength(table: CatalogTable, name: string): number | undefined
  /** The bytes a string or binary column holds at most (`character_octet_length`), if it says. */
  maxOctets(table: CatalogTable, name: string): number | undefined
  /** Whether a column is an `unsigned` integer (MySQL). */
  unsigned(table: CatalogTable, name: string): boolean
  /** The character set of a MySQL string column; undefined on PostgreSQL and for other types. */
  charset(table: CatalogTable, name: string): string | undefined
  /** Whether a column is declared `NOT NULL`. */
  notNull(table: CatalogTable, name: string): boolean
  /** Whether a column is `AUTO_INCREMENT` (MySQL). */
  autoIncrement(table: CatalogTable, name: string): boolean
  /** Whether an integer column is declared `ZEROFILL` (MySQL). */
  zerofill(table: CatalogTable, name: string): boolean
}

/** Data types that hold bytes as they are: what ciphertexts and blind indexes need. */
const BINARY: Readonly<Record<SqlFamily, ReadonlySet<string>>> = {
  postgres: new Set(['bytea']),
  mysql: new Set(['binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob', 'longblob']),
}

/** Whether a catalog data type of this family stores bytes as they are. */
export function isBinaryType(family: SqlFamily, dataType: string): boolean {
  return BINARY[family].has(dataType)
}

/** `app.users` → `{ schema: 'app', name: 'users' }`; `users` → no schema. */
export function splitTableName(physical: string): { schema: string | undefined; name: string } {
  const dot = physical.indexOf('.')
  return dot < 0
    ? { schema: undefined, name: physical }
    : { schema: physical.slice(0, dot), name: physical.slice(dot + 1) }
}

interface ColumnRow {
  s: string
  t: string
  c: string
  d: string
  k: string
  /** character_maximum_length (null for types without one). */
  n: unknown
  /** character_octet_length (null for types without one). */
  o: unknown
  /** 1 for an unsigned integer column (MySQL's column_type says so), else 0. */
  u: unknown
  /** MySQL: character_set_name (null for types without one); PostgreSQL: null. */
  cs: unknown
  /** is_nullable: `NO` for a column declared NOT NULL. */
  nn: unknown
  /** MySQL: the table's storage engine; PostgreSQL: null. */
  e: unknown
  /** 1 for an AUTO_INCREMENT column (MySQL's extra says so), else 0. */
  ai: unknown
  /** 1 for a ZEROFILL integer column (MySQL's column_type says so), else 0. */
  z: unknown
}
interface UniqueRow {
  s: string
  t: string
  c: string
}

/**
 * Reads the tables, columns and single-column unique indexes of the default schema and of the
 * schemas named by `physicalTables`: two catalog queries (PostgreSQL/PGlite: information_schema
 * and pg_index; MySQL/MariaDB: information_schema), whatever the number of tables.
 *
 * @param db - a Kysely on the database; raw SQL, so plugins leave it alone.
 * @param family - the database's SQL family.
 * @param physicalTables - the schema's physical table names (a qualified one adds its schema).
 * @returns the catalog.
 */
export async function readCatalog(
  // biome-ignore lint/suspicious/noExplicitAny: catalog tables are not in the application's DB type.
  db: Kysely<any>,
  family: SqlFamily,
  physicalTables: Iterable<string>,
): Promise<Catalog> {
  const extra = [
    ...new Set([...physicalTables].map((t) => splitTableName(t).schema).filter((s) => s !== undefined)),
  ]
  const queries = family === 'postgres' ? postgresQueries(extra) : mysqlQueries()
  const def = await sessionQuery(family).execute(db)
  const columns = await queries.columns.execute(db)
  const unique = await queries.unique.execute(db)
  const session = sessionSettings(family, def.rows[0])
  const defaultSchema = session.database
  const byKey = new Map<
    string,
    {
      table: CatalogTable
      cols: Map<string, string>
      uniq: Set<string>
      lengths: Map<string, number>
      octets: Map<string, number>
      unsigned: Set<string>
      charsets: Map<string, string>
      notNull: Set<string>
      autoIncrement: Set<string>
      zerofill: Set<string>
    }
  >()
  for (const r of columns.rows) {
    const key = `${text(r.s)}\u0000${text(r.t)}`
    let entry = byKey.get(key)
    if (entry === undefined) {
      const cols = new Map<string, string>()
      const uniq = new Set<string>()
      const lengths = new Map<string, number>()
      const octets = new Map<string, number>()
      const unsigned = new Set<string>()
      const charsets = new Map<string, string>()
      const notNull = new Set<string>()
      const autoIncrement = new Set<string>()
      const zerofill = new Set<string>()
      const table: CatalogTable = {
        schema: text(r.s),
        name: text(r.t),
        base: text(r.k).toUpperCase() === 'BASE TABLE',
        engine: r.e === null || r.e === undefined ? undefined : text(r.e).toLowerCase(),
        columns: cols,
        uniqueColumns: uniq,
        maxLengths: lengths,
        maxOctets: octets,
        unsignedColumns: unsigned,
        charsets,
        notNullColumns: notNull,
        autoIncrementColumns: autoIncrement,
        zerofillColumns: zerofill,
      }
      entry = { table, cols, uniq, lengths, octets, unsigned, charsets, notNull, autoIncrement, zerofill }
      byKey.set(key, entry)
    }
    entry.cols.set(text(r.c), text(r.d).toLowerCase())
    const n = positive(r.n)
    if (n !== undefined) entry.lengths.set(text(r.c), n)
    const o = positive(r.o)
    if (o !== undefined) entry.octets.set(text(r.c), o)
    if (Number(r.u) === 1) entry.unsigned.add(text(r.c))
    if (text(r.nn).toUpperCase() === 'NO') entry.notNull.add(text(r.c))
    if (Number(r.ai) === 1) entry.autoIncrement.add(text(r.c))
    if (Number(r.z) === 1) entry.zerofill.add(text(r.c))
    if (family === 'mysql' && r.cs !== null && r.cs !== undefined)
      entry.charsets.set(text(r.c), text(r.cs).toLowerCase())
  }
  for (const r of unique.rows) byKey.get(`${text(r.s)}\u0000${text(r.t)}`)?.uniq.add(text(r.c))
  const tables = [...byKey.values()].map((e) => e.table)
  const fold = family === 'mysql'
  const find = (schema: string, name: string) =>
    byKey.get(`${schema}\u0000${name}`)?.table ??
    (fold
      ? tables.find((t) => t.schema === schema && t.name.toLowerCase() === name.toLowerCase())
      : undefined)
  const columnName = (table: CatalogTable, name: string) => {
    if (table.columns.has(name)) return name
    if (!fold) return undefined
    const lower = name.toLowerCase()
    return [...table.columns.keys()].find((c) => c.toLowerCase() === lower)
  }
  return Object.freeze({
    family,
    defaultSchema,
    sqlMode: session.sqlMode,
    session,
    tables,
    table: (physical: string) => {
      const { schema, name } = splitTableName(physical)
      return find(schema ?? defaultSchema, name)
    },
    columnName,
    column: (table: CatalogTable, name: string) => {
      const own = columnName(table, name)
      return own === undefined ? undefined : table.columns.get(own)
    },
    maxLength: (table: CatalogTable, name: string) => {
      const own = columnName(table, name)
      return own === undefined ? undefined : table.maxLengths.get(own)
    },
    maxOctets: (table: CatalogTable, name: string) => {
      const own = columnName(table, name)
      return own === undefined ? undefined : table.maxOctets.get(own)
    },
    unsigned: (table: CatalogTable, name: string) => {
      const own = columnName(table, name)
      return own !== undefined && table.unsignedColumns.has(own)
    },
    charset: (table: CatalogTable, name: string) => {
      const own = columnName(table, name)
      return own === undefined ? undefined : table.charsets.get(own)
    },
    notNull: (table: CatalogTable, name: string) => {
      const own = columnName(table, name)
      return own !== undefined && table.notNullColumns.has(own)
    },
    autoIncrement: (table: CatalogTable, name: string) => {
      const own = columnName(table, name)
      return own !== undefined && table.autoIncrementColumns.has(own)
    },
    zerofill: (table: CatalogTable, name: string) => {
      const own = columnName(table, name)
      return own !== undefined && table.zerofillColumns.has(own)
    },
  })
}

/** A catalog length as a number, when it is a positive safe integer (null: the type has none). */
function positive(value: unknown): number | undefined {
  const n = value === null || value === undefined ? Number.NaN : Number(value)
  return Number.isSafeInteger(n) && n > 0 ? n : undefined
}

/** Catalog text: MySQL may hand back a Buffer for information_schema columns on some servers. */
function text(value: unknown): string {
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value)
}

interface CatalogQueries {
  readonly columns: RawBuilder<ColumnRow>
  readonly unique: RawBuilder<UniqueRow>
}

function postgresQueries(extraSchemas: readonly string[]): CatalogQueries {
  const schemas = sql.join([sql`current_schema()`, ...extraSchemas.map((s) => sql`${s}`)])
  return {
    // An extension's or user's type (citext, an enum) is USER-DEFINED: its own name says more.
    columns: sql<ColumnRow>`select c.table_schema as s, c.table_name as t, c.column_name as c,
        case when c.data_type = 'USER-DEFINED' then c.udt_name else c.data_type end as d,
        tb.table_type as k, c.character_maximum_length as n, c.character_octet_length as o, 0 as u, null as cs,
        c.is_nullable as nn, null as e, 0 as ai, 0 as z
      from information_schema.columns c
      join information_schema.tables tb on tb.table_schema = c.table_schema and tb.table_name = c.table_name
      where c.table_schema in (${schemas})
      order by c.table_schema, c.table_name, c.ordinal_position`,
    // indnkeyatts = 1: one key column (INCLUDE columns do not count); no predicate, no expression.
    unique: sql<UniqueRow>`select n.nspname as s, t.relname as t, a.attname as c
      from pg_index i
      join pg_class t on t.oid = i.indrelid
      join pg_namespace n on n.oid = t.relnamespace
      join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
      where i.indisunique and i.indnkeyatts = 1 and i.indpred is null and i.indexprs is null
        and n.nspname in (${schemas})`,
  }
}

function mysqlQueries(): CatalogQueries {
  return {
    columns: sql<ColumnRow>`select c.table_schema as s, c.table_name as t, c.column_name as c, c.data_type as d, tb.table_type as k, c.character_maximum_length as n, c.character_octet_length as o,
        (c.data_type like '%int' and c.column_type like '%unsigned%') as u, c.character_set_name as cs,
        c.is_nullable as nn, tb.engine as e, (c.extra like '%auto_increment%') as ai,
        (c.data_type like '%int' and c.column_type like '%zerofill%') as z
      from information_schema.columns c
      join information_schema.tables tb on tb.table_schema = c.table_schema and tb.table_name = c.table_name
      where c.table_schema = database()
      order by c.table_name, c.ordinal_position
      -- Every row whatever the session's sql_select_limit (which the check refuses, by this read).
      limit 18446744073709551615`,
    // A prefix index (sub_part) on a column does not make its values unique.
    unique: sql<UniqueRow>`select table_schema as s, table_name as t, max(column_name) as c
      from information_schema.statistics
      where table_schema = database() and non_unique = 0
      group by table_schema, table_name, index_name
      having count(*) = 1 and max(sub_part) is null
      limit 18446744073709551615`,
  }
}
