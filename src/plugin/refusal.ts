import { QueryRefusedError } from '../errors.js'
import type { ColumnInfo, IndexInfo } from '../schema/schema.js'

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
  'select all':
    "List the columns to select (select([...]), or selectAll('<table>') for one relation). A relation whose columns the plugin does not know (raw SQL in FROM; any table while schema verification is off) may hold a column of that name, which the driver would return instead.",
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

/** Where a condition stands in a query. */
export type ConditionPlace = 'select' | 'subquery' | 'having' | 'update' | 'delete' | 'join' | 'on conflict'

/** A query shape in which a search index's false positives cannot be removed. */
export type RefusedShape =
  | Exclude<ConditionPlace, 'select'>
  | 'or'
  | 'not'
  | 'negated'
  | 'operator'
  | 'limit/offset'
  | 'distinct on'
  | 'group by'
  | 'a set operation'
  | 'distinct'
  | 'an aggregate, a window or an unknown function'
  | 'raw SQL modifiers'
  | 'skip locked/nowait'

const TOP_LEVEL =
  'Search it in the WHERE of a top-level select (the plugin removes the false positives there), then use the ids it returns'
const UNIQUE = 'or declare a unique index (no bits) on the column, which has no false positives'

/** Why each shape defeats false-positive removal, and what to write instead. */
const SHAPES: Readonly<Record<RefusedShape, { readonly why: string; readonly instead: string }>> = {
  or: {
    why: 'under OR, a row the other branch matches cannot be told apart from a false positive after the query',
    instead: `Run one query per branch and merge the rows in the application, ${UNIQUE}.`,
  },
  not: {
    why: 'under NOT, the false positives would exclude rows that should be returned',
    instead: `Select the rows and filter them in the application, ${UNIQUE}.`,
  },
  negated: {
    why: 'a truncated index cannot show that two values differ, so <> and not in would drop rows that should be returned',
    instead: `Filter in the application, ${UNIQUE}.`,
  },
  operator: {
    why: 'only = and in can be searched through it',
    instead: `Use = or in, ${UNIQUE}.`,
  },
  update: {
    why: 'an update would change the false positives too, and a write cannot be undone after the rows are decrypted',
    instead: `Select the matching ids first (the plugin removes the false positives), then update by id: where('id', 'in', ids); ${UNIQUE}.`,
  },
  delete: {
    why: 'a delete would remove the false positives too, and a write cannot be undone after the rows are decrypted',
    instead: `Select the matching ids first (the plugin removes the false positives), then delete by id: where('id', 'in', ids); ${UNIQUE}.`,
  },
  'on conflict': {
    why: 'an upsert would write the false positives too',
    instead: `${TOP_LEVEL}; ${UNIQUE}.`,
  },
  subquery: {
    why: 'in a subquery its rows never come back to the plugin, so the false positives cannot be removed',
    instead: `${TOP_LEVEL}; ${UNIQUE}.`,
  },
  join: {
    why: "in a join's ON its rows cannot be checked after the query",
    instead: `Move the condition to the WHERE of the top-level select; ${UNIQUE}.`,
  },
  having: {
    why: 'HAVING works on groups, whose rows cannot be checked after the query',
    instead: `Move the condition to the WHERE of the top-level select; ${UNIQUE}.`,
  },
  'limit/offset': {
    why: 'LIMIT and OFFSET count the false positives, so fewer rows than asked (or none) would come back',
    instead: `Drop limit/offset and page in the application, ${UNIQUE}.`,
  },
  'distinct on': {
    why: 'DISTINCT ON would keep a false positive in place of a real match',
    instead: `Deduplicate in the application, ${UNIQUE}.`,
  },
  'group by': {
    why: 'GROUP BY combines the false positives into the groups before they can be removed',
    instead: `Select the rows and group them in the application, ${UNIQUE}.`,
  },
  'a set operation': {
    why: 'a set operation combines the false positives with the other rows before they can be removed',
    instead: `Run the queries separately and combine the rows in the application, ${UNIQUE}.`,
  },
  distinct: {
    why: 'DISTINCT combines the false positives with the real matches before they can be removed',
    instead: `Deduplicate in the application, ${UNIQUE}.`,
  },
  'an aggregate, a window or an unknown function': {
    why: 'an aggregate or window (or a function not known to work row by row) combines the false positives with the real matches before they can be removed',
    instead: `Select the rows and compute it in the application, ${UNIQUE}.`,
  },
  'skip locked/nowait': {
    why: 'FOR UPDATE locks the false positives too: under SKIP LOCKED another transaction searching for one of them would skip it (its row is locked) and find nothing, under NOWAIT it would fail',
    instead: `Lock by id: select the matching ids (the plugin removes the false positives), then select … where('id', 'in', ids).forUpdate().skipLocked(); ${UNIQUE}.`,
  },
  'raw SQL modifiers': {
    why: 'raw SQL added by modifyFront/modifyEnd (a LIMIT, FETCH or DISTINCT written as SQL) may count or combine the false positives before they can be removed',
    instead: `Drop the raw modifier (limit, page or deduplicate in the application), ${UNIQUE}.`,
  },
}

/**
 * The refusal of a search (truncated) index condition in a shape where its false positives
 * cannot be removed after the query: the message says why, the hint what to write instead.
 *
 * @param op - the condition's operator, for shapes of a condition; without it, the operator is
 *   `search index with <shape>` (a shape of the whole query)
 */
export function searchIndexRefusal(index: IndexInfo, shape: RefusedShape, op?: string): QueryRefusedError {
  const { why, instead } = SHAPES[shape]
  return refuse(
    index.column,
    op ?? `search index with ${shape}`,
    `search index ${index.physical} is truncated and also matches some other values (false positives, removed after decryption); ${why}`,
    instead,
  )
}
