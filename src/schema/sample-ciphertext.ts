import { type Kysely, type RawBuilder, sql } from 'kysely'
import { QueryRefusedError } from '../errors.js'
import { looksLikeCiphertext } from '../fields/format.js'
import { parseTenantKeyName } from './key-scope.js'
import { columnType } from './migration-ddl.js'
import type { EncryptedSchema, TableInfo } from './schema.js'
import { sqlFamily } from './sql-family.js'

/** Rows sampled per encrypted column. */
const SAMPLE_ROWS = 8

/**
 * Whether the physical tables of a logical table hold this library's ciphertext: a sample of
 * up to {@link SAMPLE_ROWS} non-NULL values per encrypted column, checked for a v1 header. Asked
 * before keys are created, so a table whose keys were lost never gets fresh ones.
 *
 * Raw SQL, so the plugin and the wrapper leave the values as they are. A table or column that
 * does not exist holds no ciphertext; any other database error is thrown (fail closed: keys are
 * not created when it cannot be told).
 *
 * @param db - any Kysely on the database (wrapped or not).
 * @param schema - the encrypted schema.
 * @param logicalTable - the logical table whose physical tables are sampled.
 * @returns true when a sampled value has this library's ciphertext header.
 */
export async function holdsCiphertext(
  // biome-ignore lint/suspicious/noExplicitAny: table names are known at run time only.
  db: Kysely<any>,
  schema: EncryptedSchema,
  logicalTable: string,
): Promise<boolean> {
  // A tenant's key name (`orders#tenant_id=acme`): only that tenant's rows are sampled.
  const tenant = parseTenantKeyName(logicalTable)
  for (const table of schema.tables.values()) {
    if (tenant === undefined ? table.logical !== logicalTable : !ownsTenant(table, tenant)) continue
    if (tenant !== undefined) await refuseForeignTenant(db, table, tenant)
    for (const column of table.columns.values()) {
      let rows: readonly Record<string, unknown>[]
      try {
        const c = sql.ref(column.stored)
        const ofTenant = tenant === undefined ? sql`` : sql` and ${tenantFilter(tenant)}`
        const result = await sql<
          Record<string, unknown>
        >`select ${c} as v from ${sql.table(table.physical)} where ${c} is not null${ofTenant} limit ${sql.lit(SAMPLE_ROWS)}`.execute(
          db,
        )
        rows = result.rows
      } catch (error) {
        if (isMissingRelation(error)) continue
        throw error
      }
      for (const row of rows) {
        const v = row.v
        if (v instanceof Uint8Array && looksLikeCiphertext(v)) return true
      }
    }
  }
  return false
}

/** Column types whose values are integers (PostgreSQL's `format_type`, MySQL's `column_type`). */
const INTEGER_TYPE =
  /^(smallint|integer|bigint|int|tinyint|mediumint|int[248]|serial|bigserial|smallserial)\b/i

/**
 * Refuses a tenant its table's scope column cannot hold (`acme` for an integer column, a
 * non-UUID for a PostgreSQL `uuid` column), before its keys are made: PostgreSQL would fail the
 * sample with its own "invalid input syntax", and MySQL match no row (`'acme'` is 0 there) and let
 * keys be made for a tenant no row can have (a typo).
 * @throws QueryRefusedError `TENANT_INVALID`
 */
async function refuseForeignTenant(
  // biome-ignore lint/suspicious/noExplicitAny: table names are known at run time only.
  db: Kysely<any>,
  table: TableInfo,
  tenant: { column: string; tenant: string },
): Promise<void> {
  const type = await columnType(db, sqlFamily(db), table.physical, tenant.column)
  if (type === undefined) return
  const fits = INTEGER_TYPE.test(type)
    ? /^-?\d+$/.test(tenant.tenant)
    : /^uuid$/i.test(type)
      ? UUID.test(tenant.tenant)
      : true
  if (!fits)
    throw new QueryRefusedError(
      'TENANT_INVALID',
      `A tenant of ${table.physical} is a value of its column ${tenant.column} (${type}); the one given is not.`,
      { table: table.logical, column: tenant.column },
    )
}

/** Whether a table with per-tenant keys is the one a tenant's key name names. */
function ownsTenant(table: TableInfo, tenant: { logical: string; column: string }): boolean {
  return (
    table.keyScope !== undefined &&
    table.logical === tenant.logical &&
    table.keyScope.column === tenant.column
  )
}

/**
 * The rows of one tenant. Its canonical value lower-cases a UUID (`contextValue`): an upper-case
 * one is matched too (a PostgreSQL `uuid` column compares either way; a text column may hold
 * either); a UUID stored in mixed case is not found here. The equality selects rows through the
 * column's index; the exact guard beside it (as the plugin's, plugin/context-guard.ts) drops
 * rows a case- or trailing-space-insensitive collation lets in: tenant
 * 'acme ' does not hold the ciphertext of tenant 'acme'.
 */
function tenantFilter(tenant: { column: string; tenant: string }): RawBuilder<unknown> {
  const c = sql.ref(tenant.column)
  const uuid = UUID.test(tenant.tenant)
  const upper = tenant.tenant.toUpperCase()
  const equal =
    uuid && upper !== tenant.tenant ? sql`${c} in (${tenant.tenant}, ${upper})` : sql`${c} = ${tenant.tenant}`
  const text = uuid ? sql`lower(concat(${c}))` : sql`concat(${c})`
  return sql`${equal} and md5(${text}) = md5(${tenant.tenant})`
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** PostgreSQL 42P01 / 42703, MySQL 1146 / 1054: the table or column does not exist. */
export function isMissingRelation(error: unknown): boolean {
  const e = error as { code?: unknown; errno?: unknown } | null
  return (
    e?.code === '42P01' ||
    e?.code === '42703' ||
    e?.code === '3F000' ||
    e?.errno === 1146 ||
    e?.errno === 1054 ||
    e?.code === 'ER_NO_SUCH_TABLE' ||
    e?.code === 'ER_BAD_FIELD_ERROR'
  )
}

/**
 * The binary columns of a table (one the schema does not annotate) whose sampled values are all
 * this library's ciphertext: one query, up to {@link SAMPLE_ROWS} rows with a value in one of them.
 * A column is named only when at least one value was sampled and every sampled value parses as a
 * v1 ciphertext (random bytes pass that header check about once in 32, so a column of hashes
 * is not named for a single lucky value, but for a single row it may be).
 *
 * @param db - any Kysely on the database.
 * @param table - the table, schema-qualified where needed (`app.t`).
 * @param columns - its binary columns.
 * @param minValues - sampled values a column needs before it is named (1: any).
 * @returns the columns that look like they hold ciphertext.
 */
export async function ciphertextColumns(
  // biome-ignore lint/suspicious/noExplicitAny: table names are known at run time only.
  db: Kysely<any>,
  table: string,
  columns: readonly string[],
  minValues = 1,
): Promise<string[]> {
  if (columns.length === 0) return []
  const refs = columns.map((c, i) => sql`${sql.ref(c)} as ${sql.ref(`c${i}`)}`)
  const any = sql.join(
    columns.map((c) => sql`${sql.ref(c)} is not null`),
    sql` or `,
  )
  const { rows } = await sql<Record<string, unknown>>`select ${sql.join(refs)} from ${sql.table(
    table,
  )} where ${any} limit ${sql.lit(SAMPLE_ROWS)}`.execute(db)
  return columns.filter((_, i) => {
    const values = rows.map((r) => r[`c${i}`]).filter((v) => v !== null && v !== undefined)
    return (
      values.length >= minValues && values.every((v) => v instanceof Uint8Array && looksLikeCiphertext(v))
    )
  })
}
