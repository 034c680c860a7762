import { type Kysely, sql } from 'kysely'
import { ConfigError } from '../errors.js'
import { addEncryptedColumns, binaryType, blindIndexStatement, encryptedColumnTypes } from './migration.js'
import type { EncryptedSchema, TableInfo } from './schema.js'
import type { SqlFamily } from './sql-family.js'

/**
 * The DDL that fixes each kind of schema problem, compiled by the database's own dialect, so
 * the quoting and the types are those of its SQL family (the types are those
 * `addEncryptedColumns` creates; index names those `createBlindIndexes` creates).
 *
 * @param db - a Kysely on the database (only its compiler is used: nothing is executed).
 * @param schema - the encrypted schema.
 * @param family - the database's SQL family.
 * @returns one function per fix, each returning a SQL statement.
 */
export function schemaFixes(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  schema: EncryptedSchema,
  family: SqlFamily,
) {
  const plain = db.withoutPlugins()
  const columnType = (info: TableInfo, column: string) => {
    const found = encryptedColumnTypes(schema, info.physical, family).find((c) => c.name === column)
    // Every caller passes an annotated or index column of `info`, which encryptedColumnTypes lists.
    if (found === undefined) {
      throw new ConfigError('CONFIG_INVALID', `${info.physical}.${column} is not a column of the schema.`)
    }
    return found
  }
  const typeOf = (info: TableInfo, column: string) => columnType(info, column).type
  return {
    /** `create table` with the table's encrypted and index columns (add its other columns). */
    createTable: (info: TableInfo) =>
      plain.schema
        .createTable(info.physical)
        .$call(addEncryptedColumns(schema, info.physical, family))
        .compile().sql,
    /** `alter table … add column` with the column's binary type. */
    addColumn: (info: TableInfo, column: string) =>
      plain.schema.alterTable(info.physical).addColumn(column, typeOf(info, column)).compile().sql,
    /**
     * The column changed to its binary type, keeping the bytes of what it holds: on MySQL a type
     * at least as wide as the column is now (`holds`, its bytes at most), so no value is cut
     * short (a server without strict mode would truncate it with a warning).
     */
    makeBinary: (info: TableInfo, column: string, holds?: number) => {
      if (family === 'mysql') {
        const { type, bytes } = columnType(info, column)
        const wide =
          holds !== undefined && (bytes === undefined || holds > bytes) ? binaryType(family, holds) : type
        return plain.schema.alterTable(info.physical).modifyColumn(column, wide).compile().sql
      }
      // PostgreSQL casts text to bytea only with USING: keep each value's UTF-8 bytes.
      const alter = plain.schema
        .alterTable(info.physical)
        .alterColumn(column, (c) => c.setDataType('bytea'))
        .compile().sql
      return `${alter} using convert_to(${sql.ref(column).compile(plain).sql}::text, 'UTF8')`
    },
    /** The single-column UNIQUE index `createBlindIndexes` makes. */
    uniqueIndex: (info: TableInfo, column: string) =>
      blindIndexStatement(plain, info, column, true).compile().sql,
    /** The table renamed to the schema's name. */
    rename: (from: string, to: string) =>
      plain.schema
        .alterTable(from)
        .renameTo(to.slice(to.indexOf('.') + 1))
        .compile().sql,
  }
}
