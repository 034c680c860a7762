import { type Kysely, sql } from 'kysely'
import { SchemaMismatchError, type SchemaProblem } from '../errors.js'

/**
 * Modes that must not be set, each with why. `PAD_CHAR_TO_FULL_LENGTH` returns a `char(n)` value
 * padded with spaces: a context value read back is not the one written. `NO_BACKSLASH_ESCAPES`:
 * mysql2, the driver Kysely's MySQL dialect uses, puts each string value into the statement's
 * text with backslash escapes (`\"`, `\'`, `\n`), which this mode reads as they stand, so a
 * string holding a quote, a backslash or a control character is stored as other text (a context
 * value, the key table's wrappings), or the statement fails. Buffers (ciphertexts) are unaffected:
 * they go as hex literals.
 */
const REFUSED_MODES: ReadonlyArray<{ readonly mode: string; readonly why: string }> = [
  {
    mode: 'PAD_CHAR_TO_FULL_LENGTH',
    why: 'it holds PAD_CHAR_TO_FULL_LENGTH: a char(n) value reads back padded with spaces, not as written',
  },
  {
    mode: 'NO_BACKSLASH_ESCAPES',
    why: "it holds NO_BACKSLASH_ESCAPES: the MySQL driver (mysql2) writes string values with backslash escapes, which this mode keeps as they stand, so a string holding a quote, a backslash or a line break (a context value, the key table's wrappings) would be stored as other text",
  },
]

/**
 * MySQL/MariaDB without a strict `sql_mode`: a value the column cannot hold is stored as another
 * one with a warning (a context integer clamped, a string cut short or with `?` for a character
 * its charset lacks, a ciphertext cut short, NULL as empty bytes), and the plugin's checks cannot
 * see every such case. `INSERT IGNORE` does the same in a strict mode; the plugin checks what it
 * can of each value it writes (src/plugin/context-types.ts, maxBytes). A strict mode is also
 * refused when it holds one of {@link REFUSED_MODES}. Also checked by the jobs before they read
 * or write a table, and by the key store before it writes (see {@link requireSqlMode}).
 *
 * @param mode - The session's `sql_mode` (MySQL); undefined on PostgreSQL: no problem.
 * @param database - The database, named as the problem's table.
 */
export function sqlModeProblem(mode: string | undefined, database: string): SchemaProblem | undefined {
  if (mode === undefined) return undefined
  const modes = mode.toUpperCase().split(',')
  const strict = modes.includes('STRICT_TRANS_TABLES') || modes.includes('STRICT_ALL_TABLES')
  const refused = REFUSED_MODES.filter((r) => modes.includes(r.mode))
  if (strict && refused.length === 0) return undefined
  const shown = mode === '' ? "''" : mode
  const why = [
    ...(strict
      ? []
      : [
          'it is not strict: MySQL would store a value a column cannot hold as another one, with a warning only (a ciphertext or context value cut short or clamped)',
        ]),
    ...refused.map((r) => r.why),
  ]
  // One statement that fixes every problem: each refused mode removed, STRICT_TRANS_TABLES added.
  // MySQL and MariaDB accept the empty entries a removal leaves (`A,,B`).
  const current = refused.reduce((expr, r) => `REPLACE(${expr}, '${r.mode}', '')`, '@@session.sql_mode')
  const fixed = strict ? current : `CONCAT_WS(',', NULLIF(${current}, ''), 'STRICT_TRANS_TABLES')`
  return {
    kind: 'sql-mode',
    table: database,
    columns: [],
    found: shown,
    message: `The session's sql_mode (${shown}) is wrong for encrypted columns: ${why.join('; and ')}. Rows so written or read would not decrypt.`,
    fix: `SET SESSION sql_mode = ${fixed} -- on every connection of the pool (or in the server's configuration)`,
  }
}

/** Storage engines whose statements roll back as a whole (InnoDB, also reported for XtraDB). */
const TRANSACTIONAL_ENGINES: ReadonlySet<string> = new Set([
  'innodb',
  'rocksdb',
  'tokudb',
  'ndbcluster',
  'ndb',
])

/**
 * A table with encrypted columns on a non-transactional engine (MyISAM, Aria, MEMORY, …) in a
 * session strict only through `STRICT_TRANS_TABLES`: a multi-row INSERT or UPDATE that meets a
 * value its column cannot hold after its first row cannot be undone, so MySQL stores the value
 * as another one (cut short, clamped, NULL as empty bytes) with a warning only, and such rows
 * never decrypt. `STRICT_ALL_TABLES`, or a transactional engine, makes it an error.
 *
 * @param mode - The session's `sql_mode`; undefined on PostgreSQL: no problem.
 * @param engine - The table's engine as the catalog reads it; undefined: no problem.
 * @param table - The table, as the problem names it.
 */
export function engineProblem(
  mode: string | undefined,
  engine: string | undefined,
  table: string,
): SchemaProblem | undefined {
  if (mode === undefined || engine === undefined || TRANSACTIONAL_ENGINES.has(engine.toLowerCase()))
    return undefined
  const modes = mode.toUpperCase().split(',')
  // Not strict at all: sqlModeProblem names the session already.
  if (modes.includes('STRICT_ALL_TABLES') || !modes.includes('STRICT_TRANS_TABLES')) return undefined
  return {
    kind: 'sql-mode',
    table,
    columns: [],
    found: `${engine} under ${mode}`,
    message: `Table ${table} is on the non-transactional engine ${engine}, and the session's sql_mode (${mode}) is strict for transactional tables only: a multi-row write would store a value after its first row that its column cannot hold as another one, with a warning only. Rows so written would not decrypt.`,
    fix: `ALTER TABLE ${table} ENGINE=InnoDB -- or, on every connection of the pool: SET SESSION sql_mode = CONCAT(@@session.sql_mode, ',STRICT_ALL_TABLES')`,
  }
}

/**
 * Refuses a MySQL/MariaDB session whose `sql_mode` {@link sqlModeProblem} refuses: run by the jobs
 * before they read a row (a job rewrites every row, and under such a mode would leave them
 * unreadable) and by the key store before each of its writes on MySQL, on the write's connection
 * (its wrappings are JSON text: under `NO_BACKSLASH_ESCAPES` every quote in them would be stored
 * with a backslash before it).
 * Reads the mode of the connection the query runs on.
 *
 * @param db - The database (or transaction) to ask.
 * @param table - A table the caller writes (a job's): also refused on a non-transactional engine
 *   under `STRICT_TRANS_TABLES` alone ({@link engineProblem}).
 * @throws SchemaMismatchError `SCHEMA_MISMATCH` with one `sql-mode` problem
 */
export async function requireSqlMode(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  table?: { schema: string | undefined; name: string },
): Promise<void> {
  const { rows } = await sql<{
    m: unknown
    s: unknown
    e: unknown
  }>`select @@session.sql_mode as m, database() as s, ${
    table === undefined
      ? sql`null`
      : sql`(select engine from information_schema.tables
          where table_schema = coalesce(${table.schema ?? null}, database()) and table_name = ${table.name})`
  } as e`.execute(db)
  const mode = String(rows[0]?.m ?? '')
  const problem =
    sqlModeProblem(mode, String(rows[0]?.s ?? '')) ??
    (table === undefined || rows[0]?.e === null || rows[0]?.e === undefined
      ? undefined
      : engineProblem(
          mode,
          String(rows[0].e),
          table.schema === undefined ? table.name : `${table.schema}.${table.name}`,
        ))
  if (problem !== undefined) throw new SchemaMismatchError([problem])
}
