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

/**
 * Refuses a MySQL/MariaDB session whose `sql_mode` {@link sqlModeProblem} refuses: run by the jobs
 * before they read a row (a job rewrites every row, and under such a mode would leave them
 * unreadable) and by the key store before each of its writes on MySQL, on the write's connection
 * (its wrappings are JSON text: under `NO_BACKSLASH_ESCAPES` every quote in them would be stored
 * with a backslash before it).
 * Reads the mode of the connection the query runs on.
 *
 * @param db - The database (or transaction) to ask.
 * @throws SchemaMismatchError `SCHEMA_MISMATCH` with one `sql-mode` problem
 */
// biome-ignore lint/suspicious/noExplicitAny: any database type.
export async function requireSqlMode(db: Kysely<any>): Promise<void> {
  const { rows } = await sql<{
    m: unknown
    s: unknown
  }>`select @@session.sql_mode as m, database() as s`.execute(db)
  const problem = sqlModeProblem(String(rows[0]?.m ?? ''), String(rows[0]?.s ?? ''))
  if (problem !== undefined) throw new SchemaMismatchError([problem])
}
