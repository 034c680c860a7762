import { type Compilable, CompiledQuery, type RawBuilder, sql, type Transaction } from 'kysely'
import { OperationError } from '../errors.js'
import { quotedPgTable } from '../schema/migration-ddl.js'
import type { OpsContext } from './context.js'
import type { KeyColumn } from './primary-key.js'

/**
 * One row's compare-and-set write: `set` is written only if the row (by primary key) still holds
 * `match`, column by column, as the job read it (NULL matches NULL: `IS NOT DISTINCT FROM` on
 * PostgreSQL, `<=>` on MySQL/MariaDB; any other value by the column's own `=`). @internal
 */
export interface CasWrite {
  /** The row's exact primary key (see {@link KeyColumn}). */
  readonly key: unknown
  readonly set: Readonly<Record<string, unknown>>
  readonly match: Readonly<Record<string, unknown>>
}

// biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
type AnyTrx = Transaction<any>

/**
 * Writes `rows` of `table` inside `trx` with one statement per shape (rows setting and matching
 * the same columns; a batch of one job has one shape, or a few), each row written only if it
 * still holds its `match` (compare-and-set):
 * - PostgreSQL: `update t set c = v.s0 … from unnest($1::<pk type>[], $2::bytea[], …) with
 *   ordinality as v(k, s0, …, m0, …, ord) where t.pk = v.k and t.c is not distinct from v.m0 …
 *   returning v.ord`: the rows written are the ordinals returned. Each array is cast to its
 *   column's type, read once per table from the catalog, so the comparisons keep the column's
 *   own `=` (its collation) and its index.
 * - MySQL/MariaDB: `update t join (select ? as k, ? as s0, … union all select …) as v on t.pk = v.k
 *   and t.c <=> v.m0 … set t.c = v.s0 …`, a column matched against strings compared as utf8mb4
 *   bytes (`cast(convert(… using utf8mb4) as binary)`), not by its collation. MySQL has no `UPDATE … RETURNING`: when fewer rows are
 *   affected than sent, one more read in the same transaction tells which rows hold this write
 *   (its values in `set`, and `match` in the columns it did not set: a row the application
 *   rewrote holds a fresh ciphertext in a matched column, never this job's values).
 * Values are bound parameters only; the identifiers are the schema's columns.
 * @returns per row of `rows`, whether it was written
 */
export async function casWrite(
  ctx: OpsContext,
  trx: AnyTrx,
  table: string,
  key: KeyColumn,
  rows: readonly CasWrite[],
): Promise<boolean[]> {
  return (await casWriteWith(ctx, trx, table, key, rows)).written
}

/**
 * A statement run with the write, on PostgreSQL, when the rows have one shape: the batch's
 * checkpoint (`JobStore.checkpoint`), given the number of rows written as a SQL expression, and
 * returning one row when it updated its row.
 * @internal
 */
export type WithWrite = (written: RawBuilder<number>) => Compilable<unknown>

/**
 * {@link casWrite}, and `also` in the same statement when it can be (PostgreSQL, one shape: a
 * data-modifying `WITH`, one round trip for both).
 * @returns per row, whether it was written; `withRan`: whether `also` ran and returned a row
 *   (undefined when it was not run: the caller runs it itself)
 * @internal
 */
export async function casWriteWith(
  ctx: OpsContext,
  trx: AnyTrx,
  table: string,
  key: KeyColumn,
  rows: readonly CasWrite[],
  also?: WithWrite,
): Promise<{ written: boolean[]; withRan: boolean | undefined }> {
  const written = new Array<boolean>(rows.length).fill(false)
  const shapes = groupByShape(rows)
  const merge = also !== undefined && ctx.family !== 'mysql' && shapes.size === 1 ? also : undefined
  let ran: boolean | undefined
  for (const indexes of shapes.values()) {
    const first = rows[indexes[0]!]!
    const group: Group = {
      trx,
      table,
      key,
      set: Object.keys(first.set).sort(),
      match: Object.keys(first.match).sort(),
      rows: indexes.map((i) => rows[i]!),
    }
    let done: number[]
    if (ctx.family === 'mysql') done = await mysqlWrite(group)
    else ({ done, withRan: ran } = await postgresWrite(ctx, group, merge))
    for (const j of done) written[indexes[j]!] = true
  }
  return { written, withRan: ran }
}

/**
 * The indexes of `rows` by shape (the sorted columns each sets and matches), in the order each
 * shape first appears. A row whose columns come in the same order as the row before it has that
 * row's shape: only a row with other columns (or another order) is sorted and named, so a batch of
 * one shape sorts once instead of once per row (bench/ops-profile.ts: ~1 µs per row).
 */
function groupByShape(rows: readonly CasWrite[]): Map<string, number[]> {
  const shapes = new Map<string, number[]>()
  let lastSet: readonly string[] = []
  let lastMatch: readonly string[] = []
  let list: number[] | undefined
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!
    const set = Object.keys(row.set)
    const match = Object.keys(row.match)
    if (list === undefined || !sameList(set, lastSet) || !sameList(match, lastMatch)) {
      // JSON: unambiguous whatever the column names hold (a joined list would let `a,b` name
      // the shape of the two columns `a` and `b`).
      const shape = JSON.stringify([[...set].sort(), [...match].sort()])
      list = shapes.get(shape)
      if (list === undefined) {
        list = []
        shapes.set(shape, list)
      }
      lastSet = set
      lastMatch = match
    }
    list.push(i)
  }
  return shapes
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Rows of one shape: the columns each sets and matches, in a fixed order. */
interface Group {
  readonly trx: AnyTrx
  readonly table: string
  readonly key: KeyColumn
  readonly set: readonly string[]
  readonly match: readonly string[]
  readonly rows: readonly CasWrite[]
}

/** @returns the indexes in `group.rows` of the rows written, and whether `also` (when given) returned a row */
async function postgresWrite(
  ctx: OpsContext,
  group: Group,
  also?: WithWrite,
): Promise<{ done: number[]; withRan: boolean | undefined }> {
  const { trx, table, key, set, match, rows } = group
  const types = await columnTypes(ctx, trx, table, [key.name, ...set, ...match])
  const typed = (column: string, values: unknown[]): RawBuilder<unknown> => {
    const type = types.get(column)
    if (type === undefined)
      throw new OperationError('OPS_INVALID', `${table} has no column ${column} (or is not a table).`)
    // The type is the catalog's own spelling (format_type), never a value: values stay parameters.
    return sql`${values}::${sql.raw(type)}[]`
  }
  const arrays = [
    typed(
      key.name,
      rows.map((r) => r.key),
    ),
    ...set.map((c) =>
      typed(
        c,
        rows.map((r) => r.set[c] ?? null),
      ),
    ),
    ...match.map((c) =>
      typed(
        c,
        rows.map((r) => r.match[c] ?? null),
      ),
    ),
  ]
  const names = ['k', ...set.map((_, i) => `s${i}`), ...match.map((_, i) => `m${i}`), 'ord'].map((n) =>
    sql.id(n),
  )
  const update = sql<{ ord: string | number | bigint }>`update ${sql.table(table)} as t
    set ${sql.join(set.map((c, i) => sql`${sql.id(c)} = ${sql.ref(`v.s${i}`)}`))}
    from unnest(${sql.join(arrays)}) with ordinality as v(${sql.join(names)})
    where ${sql.join(
      [
        sql`${sql.ref(`t.${key.name}`)} = v.k`,
        ...match.map((c, i) => sql`${sql.ref(`t.${c}`)} is not distinct from ${sql.ref(`v.m${i}`)}`),
      ],
      sql` and `,
    )}
    returning v.ord`
  if (also === undefined) {
    const result = await update.execute(trx)
    return { done: result.rows.map((r) => Number(r.ord) - 1), withRan: undefined }
  }
  const written = sql<number>`(select count(*) from w)`
  const result = await sql<{ ords: unknown[] | null; ran: string | number }>`with w as (${update}),
    c as (${also(written)})
    select (select array_agg(w.ord) from w) as ords, (select count(*) from c) as ran`.execute(trx)
  const row = result.rows[0]
  return { done: (row?.ords ?? []).map((o) => Number(o) - 1), withRan: Number(row?.ran ?? 0) > 0 }
}

/**
 * MySQL/MariaDB. The statement is written as text, not through Kysely's `sql` templates: at a
 * thousand rows a batch those build and compile some ten thousand nodes per statement, which cost
 * the job more than its crypto (measured by `npm run bench:ops`). Identifiers are quoted here as
 * Kysely's MySQL compiler quotes them; every value is a `?` parameter.
 * @returns the indexes in `group.rows` of the rows written
 */
async function mysqlWrite(group: Group): Promise<number[]> {
  const { trx, table, key, set, match, rows } = group
  const width = 2 + set.length + match.length
  const params: unknown[] = new Array(rows.length * width)
  let p = 0
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!
    params[p++] = i
    params[p++] = r.key
    for (const c of set) params[p++] = r.set[c] ?? null
    for (const c of match) params[p++] = r.match[c] ?? null
  }
  const names = ['ord', 'k', ...set.map((_, i) => `s${i}`), ...match.map((_, i) => `m${i}`)]
  const derived = `select ${names.map((n) => `? as ${n}`).join(', ')}${` union all select ${names.map(() => '?').join(', ')}`.repeat(rows.length - 1)}`
  const t = (column: string) => `t.${quoteMysql(column)}`
  // A string compared by the column's collation matches another string (the default collations
  // ignore case and trailing spaces): a row moved from tenant 'acme' to 'ACME', or a plaintext
  // rewritten in another case, would still match what the job read. Strings compare as bytes,
  // both sides in utf8mb4 first: a latin1 column's 'é' is other bytes than the parameter's (sent
  // in the connection's character set), and would never match.
  const exact = (column: string, values: 'set' | 'match') =>
    rows.some((r) => typeof r[values][column] === 'string')
  const bytes = (x: string) => `cast(convert(${x} using utf8mb4) as binary)`
  const same = (column: string, values: 'set' | 'match', v: string) =>
    exact(column, values) ? `${bytes(t(column))} <=> ${bytes(v)}` : `${t(column)} <=> ${v}`
  const join = (conditions: string[]) =>
    `${quoteMysql(table, true)} as t join (${derived}) as v on ${[`${t(key.name)} = v.k`, ...conditions].join(' and ')}`
  const result = await trx.executeQuery(
    CompiledQuery.raw(
      `update ${join(match.map((c, i) => same(c, 'match', `v.m${i}`)))} set ${set.map((c, i) => `${t(c)} = v.s${i}`).join(', ')}`,
      params,
    ),
  )
  // Affected rows count matched rows (mysql2 sets CLIENT_FOUND_ROWS) or changed ones: either way,
  // all of them means every row was written.
  if (Number(result.numAffectedRows ?? 0n) === rows.length) return rows.map((_, i) => i)
  // Which rows hold this write: this transaction sees its own writes, and a row the application
  // wrote meanwhile differs from it in a column set (fresh values) or matched (a fresh ciphertext).
  const unset = match.map((c, i) => ({ c, i })).filter(({ c }) => !set.includes(c))
  const holds = await trx.executeQuery<{ ord: number | string }>(
    CompiledQuery.raw(
      `select v.ord from ${join([
        ...set.map((c, i) => same(c, 'set', `v.s${i}`)),
        ...unset.map(({ c, i }) => same(c, 'match', `v.m${i}`)),
      ])}`,
      params,
    ),
  )
  return holds.rows.map((r) => Number(r.ord))
}

/** A MySQL identifier quoted as Kysely quotes it (`` ` `` doubled); `dotted`: `schema.table`, each part quoted. */
function quoteMysql(name: string, dotted = false): string {
  const quote = (part: string) => `\`${part.replaceAll('`', '``')}\``
  return dotted ? name.split('.').map(quote).join('.') : quote(name)
}

const typesByContext = new WeakMap<OpsContext, Map<string, Promise<Map<string, string>>>>()

/**
 * PostgreSQL: each column's type as the catalog spells it (`format_type`), read once per table, and
 * again when a column is not known yet (one added since, e.g. a rotation slot).
 */
async function columnTypes(
  ctx: OpsContext,
  trx: AnyTrx,
  table: string,
  columns: readonly string[],
): Promise<Map<string, string>> {
  let byTable = typesByContext.get(ctx)
  if (byTable === undefined) {
    byTable = new Map()
    typesByContext.set(ctx, byTable)
  }
  const cached = byTable.get(table)
  if (cached !== undefined) {
    const types = await cached.catch(() => undefined)
    if (types !== undefined && columns.every((c) => types.has(c))) return types
  }
  // Read in the batch's transaction: PGlite has one connection, which the transaction holds.
  // The table as a quoted (schema-qualified) identifier, resolved through the search path as
  // every query of the job resolves it.
  const name = quotedPgTable(table)
  const read = sql<{
    name: string
    type: string
  }>`select attname as name, format_type(atttypid, atttypmod) as type
    from pg_attribute where attrelid = to_regclass(${name}) and attnum > 0 and not attisdropped`
    .execute(trx)
    .then((r) => new Map(r.rows.map((row) => [row.name, row.type])))
  byTable.set(table, read)
  return read
}
