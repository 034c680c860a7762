import { CompiledQuery, type QueryResult } from 'kysely'
import { UniqueViolationError } from '../errors.js'
import type { IndexInfo } from '../schema/schema.js'
import type { QueryPlan } from './plan.js'

/** Runs one query on the connection whose statement failed (the error path only). */
type Lookup = (query: CompiledQuery) => Promise<QueryResult<unknown>>

/** What a driver's unique-violation error carries that tells which index refused. */
interface DriverError {
  /** PostgreSQL / PGlite SQLSTATE (`23505`); mysql2's symbolic code (`ER_DUP_ENTRY`). */
  readonly code?: unknown
  /** mysql2: the server's error number (1062). */
  readonly errno?: unknown
  /** PostgreSQL / PGlite: `Key (email_bidx)=(\x…) already exists.` */
  readonly detail?: unknown
  /** PostgreSQL / PGlite: the unique index or constraint. */
  readonly constraint?: unknown
  /** PostgreSQL / PGlite: the table (unqualified). */
  readonly table?: unknown
  /** mysql2: `Duplicate entry '…' for key 'users_email_bidx_key'` (MySQL 8: `'users.users_email_bidx_key'`). */
  readonly sqlMessage?: unknown
}

/**
 * The typed error for a unique violation that a blind-index column of this query raised, or
 * `undefined` when the index that refused is not one (a primary key, a plaintext column) or
 * cannot be told: the caller then rethrows the driver's error as it is.
 *
 * Which column refused: PostgreSQL and PGlite name it in `detail`; MySQL and MariaDB name only
 * the key, whose column is read from `information_schema` on the same connection (a duplicate
 * does not abort a MySQL transaction, so that read is allowed there).
 *
 * @param error - a driver error for which {@link isUniqueViolation} holds
 * @param plan - the failed query's plan: its blind-index writes are the candidates
 * @param lookup - runs a query on the failed query's connection (MySQL only)
 */
export async function uniqueViolationOf(
  error: unknown,
  plan: QueryPlan,
  lookup: Lookup,
): Promise<UniqueViolationError | undefined> {
  const candidates = writtenUniqueIndexes(plan)
  if (candidates.length === 0) return undefined
  const e = error as DriverError
  const key = mysqlKey(e)
  const constraint = typeof e.constraint === 'string' ? e.constraint : key
  let found: KeyColumns | undefined
  if (e.code === '23505') {
    const list = typeof e.detail === 'string' ? /^Key \((.*?)\)=\(/.exec(e.detail)?.[1] : undefined
    const table = typeof e.table === 'string' ? e.table : undefined
    if (list !== undefined)
      found = keyColumns(
        candidates.filter((i) => sameTable(i, table)),
        splitColumns(list),
      )
  } else if (key !== undefined) {
    found = await indexOfKey(candidates, key, lookup)
  }
  if (found === undefined) return undefined
  const { index, others } = found
  const { column } = index
  // A composite UNIQUE (a tenant column and the blind index, say) refuses the value only beside the same others.
  const beside = others.length === 0 ? '' : ` with the same ${others.join(', ')}`
  return new UniqueViolationError(
    `Duplicate value refused by the UNIQUE index${constraint === undefined ? '' : ` ${constraint}`} on blind-index column ${column.table.physical}.${index.physical}: another row of ${column.table.logical} already holds this ${column.logical} (equal once normalized)${beside}. The statement was not applied.`,
    {
      cause: error,
      table: column.table.logical,
      column: column.logical,
      index: index.physical,
      constraint,
    },
  )
}

/** The unique blind-index columns the query writes (each once). */
function writtenUniqueIndexes(plan: QueryPlan): IndexInfo[] {
  const out = new Set<IndexInfo>()
  for (const d of plan.deferredValues) {
    if (d.kind === 'index' && d.index?.spec.kind === 'unique') out.add(d.index)
  }
  return [...out]
}

/** The blind-index column a unique key holds, and the key's other columns (names as stored). */
interface KeyColumns {
  readonly index: IndexInfo
  readonly others: readonly string[]
}

/**
 * The one candidate among a key's columns, with the others: a key over a blind index alone, or a
 * composite key holding exactly one of the query's unique blind indexes; undefined otherwise (a
 * key over none of them, or over two, which cannot tell whose value was the duplicate).
 */
function keyColumns(candidates: readonly IndexInfo[], columns: readonly string[]): KeyColumns | undefined {
  const held = candidates.filter((i) => columns.includes(i.physical))
  if (held.length !== 1) return undefined
  const index = held[0]!
  return { index, others: columns.filter((c) => c !== index.physical) }
}

/**
 * The column list of PostgreSQL's `Key (a, "b c")=(…)`: names split at commas outside double
 * quotes, unquoted.
 */
function splitColumns(list: string): string[] {
  const out: string[] = []
  let name = ''
  let inQuotes = false
  for (let i = 0; i < list.length; i++) {
    const ch = list[i]!
    if (ch === '"') {
      if (inQuotes && list[i + 1] === '"') {
        name += '"'
        i++
      } else inQuotes = !inQuotes
    } else if (ch === ',' && !inQuotes) {
      out.push(name.trim())
      name = ''
    } else name += ch
  }
  out.push(name.trim())
  return out
}

/** The candidate whose table holds MySQL key `key` on its column (with others: a composite key). */
async function indexOfKey(
  candidates: readonly IndexInfo[],
  key: string,
  lookup: Lookup,
): Promise<KeyColumns | undefined> {
  for (const table of new Set(candidates.map((i) => i.column.table.physical))) {
    const dot = table.lastIndexOf('.')
    const schema = dot < 0 ? undefined : table.slice(0, dot)
    const name = table.slice(dot + 1)
    // MySQL 8.0.19+ names the key `table.key`.
    const own = key.startsWith(`${name}.`) ? key.slice(name.length + 1) : key
    let rows: readonly unknown[]
    try {
      ;({ rows } = await lookup(
        CompiledQuery.raw(
          `select column_name as c from information_schema.statistics where table_schema = ${schema === undefined ? 'database()' : '?'} and table_name = ? and index_name = ? order by seq_in_index`,
          schema === undefined ? [name, own] : [schema, name, own],
        ),
      ))
    } catch {
      return undefined
    }
    const columns = rows.map((r) => String((r as { c?: unknown }).c))
    const found = keyColumns(
      candidates.filter((i) => i.column.table.physical === table),
      columns,
    )
    if (found !== undefined) return found
  }
  return undefined
}

/** The key a MySQL/MariaDB duplicate names (never the value, which the message also holds). */
function mysqlKey(e: DriverError): string | undefined {
  return typeof e.sqlMessage === 'string' ? /for key '([^']*)'$/.exec(e.sqlMessage)?.[1] : undefined
}

function sameTable(index: IndexInfo, table: string | undefined): boolean {
  if (table === undefined) return true
  const physical = index.column.table.physical
  return physical === table || physical.endsWith(`.${table}`)
}
