import type { SchemaProblem } from '../errors.js'

/**
 * MySQL/MariaDB without a strict `sql_mode`: a value the column cannot hold is stored as another
 * one with a warning (a context integer clamped, a string cut short or with `?` for a character
 * its charset lacks, a ciphertext cut short, NULL as empty bytes), and the plugin's checks cannot
 * see every such case. `INSERT IGNORE` does the same in a strict mode; the plugin checks what it
 * can of each value it writes (src/plugin/context-types.ts, maxBytes). `PAD_CHAR_TO_FULL_LENGTH`
 * returns a `char(n)` value padded with spaces: a context value read back is not the one written.
 * Also checked by the jobs before they read or write a table (src/ops/primary-key.ts).
 *
 * @param mode - The session's `sql_mode` (MySQL); undefined on PostgreSQL: no problem.
 * @param database - The database, named as the problem's table.
 */
export function sqlModeProblem(mode: string | undefined, database: string): SchemaProblem | undefined {
  if (mode === undefined) return undefined
  const modes = mode.toUpperCase().split(',')
  const strict = modes.includes('STRICT_TRANS_TABLES') || modes.includes('STRICT_ALL_TABLES')
  const padded = modes.includes('PAD_CHAR_TO_FULL_LENGTH')
  if (strict && !padded) return undefined
  const shown = mode === '' ? "''" : mode
  const why = [
    strict
      ? undefined
      : 'it is not strict: MySQL would store a value a column cannot hold as another one, with a warning only (a ciphertext or context value cut short or clamped)',
    padded
      ? 'it holds PAD_CHAR_TO_FULL_LENGTH: a char(n) value reads back padded with spaces, not as written'
      : undefined,
  ].filter((w) => w !== undefined)
  // One statement that fixes both: PAD_CHAR_TO_FULL_LENGTH removed, STRICT_TRANS_TABLES added.
  const current = padded ? "REPLACE(@@session.sql_mode, 'PAD_CHAR_TO_FULL_LENGTH', '')" : '@@session.sql_mode'
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
