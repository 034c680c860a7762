import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo } from '../schema/schema.js'

/** Hints for refused constructs, keyed by the construct as it appears in error messages. */
const HINTS: Readonly<Record<string, string>> = {
  'order by': 'Sort in the application after the rows are decrypted.',
  'group by': 'Group in the application after decryption.',
  distinct: 'Deduplicate in the application after decryption.',
  'distinct on': 'Deduplicate in the application after decryption.',
  'raw sql': 'Raw SQL is opaque to the plugin: use encryption.encrypt/decrypt/indexOf explicitly.',
  'insert … select': 'Select the rows, then insert them through the plugin so each value is encrypted.',
  merge: 'MERGE is not supported on tables with encrypted columns: use insert … on conflict / update.',
  'set operation': 'Run the queries separately and combine the decrypted rows in the application.',
  'json helper':
    'jsonArrayFrom/jsonObjectFrom over encrypted columns are not supported yet: select the rows instead.',
  subquery:
    'A subquery whose result feeds an expression (jsonArrayFrom/jsonObjectFrom, IN (subquery), a function) cannot carry encrypted columns: select them at the top level.',
  'sql.lit': 'Pass the value as a parameter (not sql.lit) so the plugin can encrypt or index it.',
}

const COMPARISON_HINT =
  'Encrypted columns support only =, <>, in and not in (through a blind index), and is [not] null.'

/**
 * The error for a construct the plugin cannot run safely on an encrypted column.
 * It names the table, the column and the operator, and says what to do instead.
 */
export function refuse(
  column: ColumnInfo,
  operator: string,
  detail?: string,
  hint?: string,
): QueryRefusedError {
  hint ??= HINTS[operator] ?? COMPARISON_HINT
  const what = `${column.table.physical}.${column.physical}`
  return new QueryRefusedError(
    'QUERY_REFUSED',
    `Refused ${operator} on encrypted column ${what}${detail === undefined ? '' : `: ${detail}`}. Nothing was sent.`,
    { table: column.table.logical, column: column.logical, operator, hint },
  )
}
