import { createHash } from 'node:crypto'
import {
  type ColumnDataType,
  type ColumnDefinitionBuilder,
  type CreateIndexBuilder,
  type Expression,
  type Kysely,
  sql,
} from 'kysely'
import { isUniqueViolation, scrubDriverError } from '../driver-errors.js'
import { ConfigError, UniqueViolationError } from '../errors.js'
import { FORMAT_V1_OVERHEAD } from '../fields/format.js'
import { refuseUnknownKeys } from '../option-keys.js'
import { type EncryptedSchema, indexColumnNames, type TableInfo } from './schema.js'

import { type SqlFamily, sqlFamily } from './sql-family.js'

export type { SqlFamily } from './sql-family.js'
export { sqlFamily } from './sql-family.js'

type DataType = ColumnDataType | Expression<unknown>

/** Anything with kysely's `addColumn(name, type, build)`: `createTable(...)` and `alterTable(...)` builders. */
interface AddsColumns<B> {
  addColumn(name: string, type: DataType, build?: (c: ColumnDefinitionBuilder) => ColumnDefinitionBuilder): B
}

/** Options of {@link addEncryptedColumns}. */
export interface AddEncryptedColumnsOptions {
  /**
   * Encrypted columns (physical names) created `NOT NULL`; their blind-index columns follow (a
   * non-NULL value always has its index), except both columns of an index with a `rotationSlot`,
   * which stay nullable (each is NULL while no live index version uses it). On an `alterTable` of a table with rows, add them
   * nullable, backfill, then set `NOT NULL`.
   * @default []
   */
  readonly notNull?: readonly string[]
}

/** A column `encryptedColumnTypes` lists. */
export interface EncryptedColumnType {
  /** The column's name in the database. */
  readonly name: string
  readonly type: DataType
  /** The annotated column it belongs to (itself, or the column a blind index is of). */
  readonly column: string
  /** The bytes the type holds at most (MySQL); undefined on PostgreSQL (bytea). */
  readonly bytes: number | undefined
}

/** The largest a MEDIUMBLOB holds. */
const MEDIUMBLOB = 16_777_215

/**
 * The binary type that holds `bytes` bytes: `bytea` on PostgreSQL; on MySQL `varbinary(n)` up to
 * 65,000 bytes (a row holds 65,535 in all), then `mediumblob`, then `longblob`.
 */
export function binaryType(family: SqlFamily, bytes: number | undefined): DataType {
  if (family === 'postgres') return 'bytea'
  if (bytes !== undefined && bytes <= 65_000) return sql`varbinary(${sql.raw(String(bytes))})`
  return bytes === undefined || bytes <= MEDIUMBLOB ? sql`mediumblob` : sql`longblob`
}

/**
 * The columns an annotated table needs: each encrypted column (bytea / VARBINARY sized from
 * the format's overhead, or MEDIUMBLOB when no `maxBytes` is declared) and each blind-index column.
 */
export function encryptedColumnTypes(
  schema: EncryptedSchema,
  table: string,
  family: SqlFamily,
): EncryptedColumnType[] {
  const info = tableInfo(schema, table)
  const out: EncryptedColumnType[] = []
  for (const column of info.columns.values()) {
    // Key versions < 128 take one varint byte; leave 4 more for versions up to 2^32.
    const max = column.spec.maxBytes === undefined ? undefined : column.spec.maxBytes + FORMAT_V1_OVERHEAD + 4
    const bytes = family === 'postgres' ? undefined : max !== undefined && max <= 65_000 ? max : MEDIUMBLOB
    out.push({ name: column.stored, type: binaryType(family, bytes), column: column.physical, bytes })
    for (const spec of column.spec.indexes) {
      const bytes = Math.ceil(spec.bits / 8)
      // An index with a rotation slot has two columns (see docs/operations.md).
      for (const name of indexColumnNames(spec)) {
        out.push({
          name,
          type: binaryType(family, family === 'postgres' ? undefined : bytes),
          column: column.physical,
          bytes: family === 'postgres' ? undefined : bytes,
        })
      }
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
export function addEncryptedColumns(
  schema: EncryptedSchema,
  table: string,
  family: SqlFamily,
  options: AddEncryptedColumnsOptions = {},
) {
  if (family !== 'postgres' && family !== 'mysql')
    throw new ConfigError(
      'CONFIG_INVALID',
      `addEncryptedColumns: the SQL family must be 'postgres' (PostgreSQL, PGlite) or 'mysql' (MySQL, MariaDB), got ${JSON.stringify(family)}.`,
    )
  refuseUnknownKeys(options, ['notNull'], 'addEncryptedColumns')
  if (options.notNull !== undefined && !Array.isArray(options.notNull))
    throw new ConfigError(
      'CONFIG_INVALID',
      "addEncryptedColumns: option notNull must be a list of columns (['email']).",
    )
  const columns = encryptedColumnTypes(schema, table, family)
  const notNull = new Set(options.notNull ?? [])
  const info = tableInfo(schema, table)
  for (const name of notNull) {
    if (info.column(name) === undefined) {
      throw new ConfigError(
        'CONFIG_INVALID',
        `notNull: ${table}.${name} is not an encrypted column of the schema.`,
        {
          table: info.logical,
        },
      )
    }
  }
  return <B extends AddsColumns<B>>(builder: B): B => {
    let b = builder
    for (const c of columns) {
      // Both columns of an index with a rotation slot hold NULL while their slot is free.
      const slotted = info.indexColumn(c.name)?.slot !== undefined
      b =
        notNull.has(c.column) && !slotted
          ? b.addColumn(c.name, c.type, (col) => col.notNull())
          : b.addColumn(c.name, c.type)
    }
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
  const family = sqlFamily(db)
  for (const index of info.indexColumns.values()) {
    const name = blindIndexName(info, index.physical)
    let builder = blindIndexStatement(db, info, index.physical, index.spec.kind === 'unique')
    if (family === 'postgres') builder = builder.ifNotExists()
    try {
      await builder.execute()
    } catch (error) {
      // MySQL 8 has no `create index if not exists` (MariaDB has): an index of that name on the
      // table the statement names (in the schema `db.withSchema` gives it, too) is there already.
      // A lookup in database() first missed that schema and skipped the index there.
      if (family === 'mysql' && (error as { errno?: unknown }).errno === 1061) continue
      // The driver's error shows the repeated index value (PostgreSQL's detail, MySQL's message).
      scrubDriverError(error)
      if (index.spec.kind === 'unique' && isUniqueViolation(error))
        throw new UniqueViolationError(
          `The UNIQUE index ${name} cannot be built: rows of ${info.physical} already hold the same value in ${index.physical} (equal values of ${index.column.logical} once normalized, written while the column had no UNIQUE index). Find them with \`select ${index.physical}, count(*) from ${info.physical} group by ${index.physical} having count(*) > 1\`, resolve them, and run it again.`,
          { table: info.logical, column: index.column.logical, index: index.physical, cause: error },
        )
      throw error
    }
  }
}

/** The name of the database index {@link createBlindIndexes} makes on one blind-index column. */
function blindIndexName(info: TableInfo, column: string): string {
  return indexName(`${info.physical}_${column}_idx`)
}

/**
 * The CREATE INDEX of one blind-index column, as {@link createBlindIndexes} runs it and a schema
 * problem's fix prints it. The column goes in as an identifier: Kysely's `column()` reads a space
 * in a name as the start of an order direction (`email bidx` failed as "invalid order direction",
 * and `email desc` would have indexed `email`). @internal
 */
export function blindIndexStatement(
  // biome-ignore lint/suspicious/noExplicitAny: any database type; the index DDL names tables at run time.
  db: Kysely<any>,
  info: TableInfo,
  column: string,
  unique: boolean,
): CreateIndexBuilder {
  const builder = db.schema
    .createIndex(blindIndexName(info, column))
    .on(info.physical)
    .expression(sql.id(column))
  return unique ? builder.unique() : builder
}

/** PostgreSQL's identifier limit, in bytes (MySQL's is 64 characters). */
const MAX_NAME_BYTES = 63

/**
 * An index name within the identifier limit: as it is when it fits; else cut short, with 8 hex
 * digits of its SHA-256 in place of the rest, so that two long names sharing their first 63 bytes
 * get two indexes (PostgreSQL truncated them to one name, and `if not exists` skipped the second:
 * a unique blind index without its UNIQUE index). @internal
 */
export function indexName(name: string): string {
  if (Buffer.byteLength(name) <= MAX_NAME_BYTES) return name
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 8)
  let head = name.slice(0, MAX_NAME_BYTES - 13)
  while (Buffer.byteLength(head) > MAX_NAME_BYTES - 13) head = head.slice(0, -1)
  return `${head}_${hash}_idx`
}

function tableInfo(schema: EncryptedSchema, table: string): TableInfo {
  const info = schema.table(table)
  if (info === undefined)
    throw new ConfigError('CONFIG_INVALID', `Table ${table} has no encrypted columns in the schema.`)
  return info
}
