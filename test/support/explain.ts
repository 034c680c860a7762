/**
 * Asserts that a search the plugin produces is served by a database index, not a full scan
 * (DESIGN.md §3: "Searches must use the database index: a test helper runs EXPLAIN and fails on
 * a full scan").
 *
 * EXPLAIN runs on the plugin's exact compiled SQL: the query is compiled by the application's
 * Kysely (so the plugin rewrote it); its deferred values are resolved with the explicit helpers
 * (`encryption.indexOf` / `encrypt`, the same functions the dialect wrapper uses), and EXPLAIN of
 * that SQL runs on the un-wrapped `raw` Kysely of the same database. Only the plan comes back.
 */
import { type Compilable, CompiledQuery, type Kysely, MysqlAdapter, sql } from 'kysely'
import { expect } from 'vitest'
import type { FieldEncryption } from '../../src/index.js'
import { isDeferred } from '../../src/plugin/deferred-value.js'

/** Which table the search reads and which database index must serve it. */
export interface IndexScanTarget {
  /** Physical table name as EXPLAIN reports it (MySQL reports the alias when the query uses one). */
  readonly table: string
  /** Name of the database index, e.g. `users_email_bidx_idx` (what `createBlindIndexes` creates). */
  readonly index: string
  /**
   * PostgreSQL only: run EXPLAIN with `enable_seqscan = off` on a pinned connection, so a tiny
   * table still shows whether an index CAN serve the query (a query no index can serve still
   * plans a Seq Scan). Off, the planner chooses freely, which needs enough rows and `analyze`.
   * @default false
   */
  readonly discourageSeqScan?: boolean
}

/** How EXPLAIN says one table is read. */
export interface TableAccess {
  readonly table: string
  /** PostgreSQL node type (`Index Scan`, `Seq Scan`, `Bitmap Heap Scan`, …) or MySQL `type` (`ref`, `ALL`, …). */
  readonly access: string
  /** Indexes used for this table (empty on a full scan). */
  readonly indexes: readonly string[]
}

/** The two views of one database the helper needs (an `EncryptedTestDb` has both). */
export interface ExplainContext {
  // biome-ignore lint/suspicious/noExplicitAny: works on any Kysely, whatever its DB type.
  readonly raw: Kysely<any>
  readonly encryption: FieldEncryption
}

/**
 * The parameters the database would receive: each deferred value resolved as the wrapper does.
 * @throws Error when a probe has several live index versions: the wrapper would then expand
 *   `in ($1)` into `in ($1, $2)`, which this helper does not reproduce (EXPLAIN outside rotations).
 */
async function resolveParameters(ctx: ExplainContext, parameters: readonly unknown[]): Promise<unknown[]> {
  return Promise.all(
    parameters.map(async (p) => {
      if (!isDeferred(p)) return p
      const table = p.column.table.physical
      const column = p.column.physical
      if (p.kind === 'encrypt') return ctx.encryption.encrypt(table, column, p.reveal())
      const values = await ctx.encryption.indexOf(table, column, p.reveal(), p.index?.physical)
      if (p.kind === 'probe' && values.length !== 1) {
        throw new Error(
          `${String(p)} has ${values.length} live index versions; EXPLAIN it outside a rotation.`,
        )
      }
      return values[0]
    }),
  )
}

/**
 * Runs EXPLAIN on the compiled SQL of `query` (built on the application's Kysely, so rewritten
 * by the plugin) and reports how each table is read.
 */
export async function explainAccess(
  ctx: ExplainContext,
  query: Compilable<unknown>,
  options: { readonly discourageSeqScan?: boolean } = {},
): Promise<TableAccess[]> {
  const compiled = query.compile()
  const mysql = ctx.raw.getExecutor().adapter instanceof MysqlAdapter
  const explain = CompiledQuery.raw(
    `${mysql ? 'explain format=json' : 'explain (format json)'} ${compiled.sql}`,
    await resolveParameters(ctx, compiled.parameters),
  )
  const rows = await ctx.raw.connection().execute(async (c) => {
    const discourage = !mysql && options.discourageSeqScan === true
    if (discourage) await sql`set enable_seqscan = off`.execute(c)
    try {
      return (await c.executeQuery(explain)).rows as Array<Record<string, unknown>>
    } finally {
      if (discourage) await sql`reset enable_seqscan`.execute(c)
    }
  })
  const first = rows[0] ?? {}
  const raw = Object.values(first)[0]
  const plan: unknown = typeof raw === 'string' ? JSON.parse(raw) : raw
  return mysql ? mysqlAccess(plan) : postgresAccess(plan)
}

/** PostgreSQL `explain (format json)`: `[{ Plan: { "Node Type", "Relation Name", "Index Name", Plans } }]`. */
function postgresAccess(plan: unknown): TableAccess[] {
  const out: TableAccess[] = []
  const indexesBelow = (node: Record<string, unknown>): string[] => {
    const own = typeof node['Index Name'] === 'string' ? [node['Index Name'] as string] : []
    const children = (node.Plans as Array<Record<string, unknown>> | undefined) ?? []
    return [...own, ...children.flatMap(indexesBelow)]
  }
  const visit = (node: Record<string, unknown>): void => {
    const relation = node['Relation Name']
    if (typeof relation === 'string') {
      out.push({ table: relation, access: String(node['Node Type']), indexes: indexesBelow(node) })
    }
    for (const child of (node.Plans as Array<Record<string, unknown>> | undefined) ?? []) visit(child)
  }
  for (const entry of plan as Array<{ Plan: Record<string, unknown> }>) visit(entry.Plan)
  return out
}

/** MariaDB/MySQL `explain format=json`: nested objects with `table: { table_name, access_type, key }`. */
function mysqlAccess(plan: unknown): TableAccess[] {
  const out: TableAccess[] = []
  const visit = (value: unknown): void => {
    if (Array.isArray(value)) {
      for (const v of value) visit(v)
      return
    }
    if (value === null || typeof value !== 'object') return
    const node = value as Record<string, unknown>
    if (typeof node.table_name === 'string' && typeof node.access_type === 'string') {
      out.push({
        table: node.table_name,
        access: node.access_type,
        indexes: typeof node.key === 'string' ? [node.key] : [],
      })
    }
    for (const child of Object.values(node)) visit(child)
  }
  visit(plan)
  return out
}

/** PostgreSQL node types and MySQL access types that read the whole table (or the whole index). */
const FULL_SCANS = new Set(['Seq Scan', 'ALL', 'index'])

/**
 * Fails unless EXPLAIN shows `target.table` read through `target.index`, with no full scan of it
 * (PostgreSQL `Seq Scan`; MySQL/MariaDB access type `ALL`, or `index`, a full index scan).
 *
 * @param ctx - the raw Kysely and the encryption of the database (an `EncryptedTestDb`)
 * @param query - the search, built on the application's Kysely, e.g.
 *   `t.db.selectFrom('users').selectAll().where('email', '=', 'a@x.io')`
 * @param target - the table and the database index that must serve it
 */
export async function expectIndexScan(
  ctx: ExplainContext,
  query: Compilable<unknown>,
  target: IndexScanTarget,
): Promise<void> {
  const access = await explainAccess(ctx, query, { discourageSeqScan: target.discourageSeqScan ?? false })
  const reads = access.filter((a) => a.table === target.table)
  const summary = access.map((a) => `${a.table}: ${a.access} [${a.indexes.join(', ')}]`).join('; ')
  expect(reads.length, `EXPLAIN does not read ${target.table} (${summary})`).toBeGreaterThan(0)
  for (const read of reads) {
    expect(FULL_SCANS.has(read.access), `full scan of ${target.table}: ${summary}`).toBe(false)
    expect(read.indexes, `${target.table} is not read through ${target.index}: ${summary}`).toContain(
      target.index,
    )
  }
}
