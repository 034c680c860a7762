import type { SchemaProblem } from '../errors.js'

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
    mode: 'EMPTY_STRING_IS_NULL',
    why: 'it holds EMPTY_STRING_IS_NULL: an empty string is stored as NULL (an empty context value, whose rows then never decrypt)',
  },
  {
    mode: 'HIGH_NOT_PRECEDENCE',
    why: 'it holds HIGH_NOT_PRECEDENCE: `not a = b`, as Kysely writes eb.not(…), is read as `(not a) = b` (a negated search returns other rows)',
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
 * or write a table, and by the key store before it writes (session-settings.ts).
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
  // One statement that fixes every problem: each refused mode replaced by a comma, STRICT_TRANS_TABLES
  // added. MySQL and MariaDB accept the empty entries that leaves (`A,,B`, `,A`); no '' literal,
  // which EMPTY_STRING_IS_NULL would read as NULL (and the mode with it).
  const current = refused.reduce((expr, r) => `REPLACE(${expr}, '${r.mode}', ',')`, '@@session.sql_mode')
  const fixed = strict ? current : `CONCAT_WS(',', ${current}, 'STRICT_TRANS_TABLES')`
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
 * Whether an INSERT of 0 into a MySQL `AUTO_INCREMENT` column stores the next generated value
 * instead (MySQL manual, "Server SQL Modes": `NO_AUTO_VALUE_ON_ZERO`; MariaDB alike): true
 * unless the session's `sql_mode` holds `NO_AUTO_VALUE_ON_ZERO`.
 *
 * @param mode - The session's `sql_mode`; undefined on PostgreSQL: false (a serial or identity
 *   column stores the 0 written).
 */
export function zeroGeneratesId(mode: string | undefined): boolean {
  return mode !== undefined && !mode.toUpperCase().split(',').includes('NO_AUTO_VALUE_ON_ZERO')
}
