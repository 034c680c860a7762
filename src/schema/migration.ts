import { type ColumnDataType, type Expression, type Kysely, sql } from 'kysely'
import { ConfigError } from '../errors.js'
import { FORMAT_V1_OVERHEAD } from '../fields/format.js'
import type { EncryptedSchema, TableInfo } from './schema.js'

import type { SqlFamily } from './sql-family.js'

export type { SqlFamily } from './sql-family.js'
export { sqlFamily } from './sql-family.js'

type DataType = ColumnDataType | Expression<unknown>

/** Anything with kysely's `addColumn(name, type)`: `createTable(...)` and `alterTable(...)` builders. */
interface AddsColumns<B> {
  addColumn(name: string, type: DataType): B
}

/**
 * The columns an annotated table needs: each encrypted column (bytea / VARBINARY sized from
 * the format's overhead, or BLOB when no `maxBytes` is declared) and each blind-index column.
 */
export function encryptedColumnTypes(
  schema: EncryptedSchema,
  table: string,
  family: SqlFamily,
): Array<{ name: string; type: DataType }> {
  const info = tableInfo(schema, table)
  const out: Array<{ name: string; type: DataType }> = []
  for (const column of info.columns.values()) {
    // Key versions < 128 take one varint byte; leave 4 more for versions up to 2^32.
    const max = column.spec.maxBytes === undefined ? undefined : column.spec.maxBytes + FORMAT_V1_OVERHEAD + 4
    const type: DataType =
      family === 'postgres'
        ? 'bytea'
        : max !== undefined && max <= 65_000
          ? sql`varbinary(${sql.raw(String(max))})`
          : sql`mediumblob`
    out.push({ name: column.physical, type })
    for (const spec of column.spec.indexes) {
      const bytes = Math.ceil(spec.bits / 8)
      out.push({
        name: spec.name,
        type: family === 'postgres' ? 'bytea' : sql`varbinary(${sql.raw(String(bytes))})`,
      })
    }
  }
  return out
}

/**
 * Adds the encrypted columns of `table` and their blind-index columns to a `createTable` or
 * `alterTable` builder. Use with `$call`.
 *
 * @example
 * ```ts
 * await db.schema.createTable('users').addColumn('id', 'serial', (c) => c.primaryKey())
 *   .$call(addEncryptedColumns(schema, 'users', 'postgres')).execute()
 * // create table "users" ("id" serial primary key, "email" bytea, "email_bidx" bytea, …)
 * ```
 */
export function addEncryptedColumns(schema: EncryptedSchema, table: string, family: SqlFamily) {
  const columns = encryptedColumnTypes(schema, table, family)
  return <B extends AddsColumns<B>>(builder: B): B => {
    let b = builder
    for (const c of columns) b = b.addColumn(c.name, c.type)
    return b
  }
}

/**
 * Creates the database index of every blind-index column of `table` (UNIQUE for unique indexes),
 * so searches use an index instead of scanning the table. Idempotent.
 *
 * @example
 * ```ts
 * await createBlindIndexes(db, schema, 'users')
 * // create unique index if not exists "users_email_bidx_idx" on "users" ("email_bidx")
 * ```
 */
export async function createBlindIndexes(
  // biome-ignore lint/suspicious/noExplicitAny: any database type; the index DDL names tables at run time.
  db: Kysely<any>,
  schema: EncryptedSchema,
  table: string,
): Promise<void> {
  const info = tableInfo(schema, table)
  for (const index of info.indexColumns.values()) {
    let builder = db.schema
      .createIndex(`${info.physical}_${index.physical}_idx`)
      .on(info.physical)
      .column(index.physical)
      .ifNotExists()
    if (index.spec.kind === 'unique') builder = builder.unique()
    await builder.execute()
  }
}

function tableInfo(schema: EncryptedSchema, table: string): TableInfo {
  const info = schema.table(table)
  if (info === undefined)
    throw new ConfigError('CONFIG_INVALID', `Table ${table} has no encrypted columns in the schema.`)
  return info
}
