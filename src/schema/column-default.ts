import { type Kysely, sql } from 'kysely'
import type { SqlFamily } from './sql-family.js'

/**
 * What the database writes into `table.column` by itself, as it states it: its default
 * (`default 'none'::text`, `default now()`, a PostgreSQL domain's default) and, on
 * MySQL/MariaDB, its `on update` clause; undefined when it has neither, its default is NULL, or
 * there is no such column.
 *
 * Under a migration from plaintext such a value is written into the plaintext column alone (the
 * database knows nothing of the encrypted one): an insert that omits the column stores the
 * default beside a NULL encrypted value, which the phases then read as two different values.
 *
 * @example
 * ```ts
 * await columnDefault(db, 'postgres', 'users', 'email')   // "default 'none'::text"
 * ```
 */
export async function columnDefault(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  family: SqlFamily,
  table: string,
  column: string,
): Promise<string | undefined> {
  const [schema, bare] = table.includes('.') ? (table.split('.') as [string, string]) : [undefined, table]
  if (family === 'postgres') {
    // PostgreSQL stores no pg_attrdef row for a default of NULL, except over a domain (`NULL::d`,
    // which overrides the domain's); a domain's default applies where the column has none.
    const quoted = table
      .split('.')
      .map((part) => `"${part.replaceAll('"', '""')}"`)
      .join('.')
    const { rows } = await sql<{
      d: string | null
    }>`select coalesce(pg_get_expr(d.adbin, d.adrelid), t.typdefault) as d
        from pg_attribute a join pg_type t on t.oid = a.atttypid
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attrelid = to_regclass(${quoted}) and a.attname = ${column} and not a.attisdropped`.execute(
      db,
    )
    const d = rows[0]?.d
    return d === null || d === undefined || /^NULL(::|$)/.test(d) ? undefined : `default ${d}`
  }
  const { rows } = await sql<{ d: string | null; x: string | null; v: string }>`select column_default as d,
      extra as x, version() as v from information_schema.columns
      where table_schema = ${schema ?? sql`database()`} and table_name = ${bare} and column_name = ${column}`.execute(
    db,
  )
  const row = rows[0]
  if (row === undefined) return undefined
  // MariaDB states a default of NULL as the word NULL and quotes a string ('NULL' for the text);
  // MySQL 8 states a default of NULL as SQL NULL and a string unquoted.
  const nullDefault = row.d === null || (String(row.d) === 'NULL' && /mariadb/i.test(String(row.v)))
  const onUpdate = /on update .*/i.exec(String(row.x ?? ''))?.[0]
  const clauses = [
    ...(nullDefault ? [] : [`default ${row.d}`]),
    ...(onUpdate === undefined ? [] : [onUpdate]),
  ]
  return clauses.length === 0 ? undefined : clauses.join(' ')
}
