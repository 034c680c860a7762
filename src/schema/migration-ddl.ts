import { type Kysely, sql } from 'kysely'
import { ConfigError, OperationError } from '../errors.js'
import { FORMAT_V1_OVERHEAD } from '../fields/format.js'
import { optionKeys, refuseUnknownKeys } from '../option-keys.js'
import { columnDefault } from './column-default.js'
import { mysqlColumnDefinition } from './mysql-column-definition.js'
import { refuseStoredOverPlaintext } from './name-rules.js'
import type { ColumnInfo, EncryptedSchema, TableInfo } from './schema.js'
import { type SqlFamily, sqlFamily } from './sql-family.js'

/** The DDL steps of a migration from plaintext, one Kysely migration each (`kfe migration --phase`). */
export type MigrationStep = 'add' | 'cutover' | 'drop'

/** The SQL of one step, as statements run in order. */
export interface MigrationDdl {
  readonly table: string
  readonly column: string
  readonly step: MigrationStep
  readonly family: SqlFamily
  readonly up: readonly string[]
  readonly down: readonly string[]
  /**
   * True when a statement cannot run inside a transaction (PostgreSQL's `CREATE INDEX
   * CONCURRENTLY`): run the migration with the migrator's transactions disabled.
   */
  readonly outsideTransaction: boolean
  /** What the step does not do, or what `down` cannot undo, one line each. */
  readonly notes: readonly string[]
}

/** Options of {@link migrationDdl}. */
export interface MigrationDdlOptions {
  /**
   * The plaintext column's SQL type as the database states it (`varchar(255)`, `text`), needed by
   * `cutover` on MySQL/MariaDB (which restates the type to make it nullable) and by `drop`'s `down`
   * (which adds the column back). {@link applyMigrationStep} and `kfe migration` read it from the database.
   */
  readonly plaintextType?: string
  /**
   * MySQL/MariaDB: the plaintext column's definition as `SHOW CREATE TABLE` states it (name,
   * type, character set, collation, default, comment). `cutover` restates it with `NULL` for
   * `NOT NULL`, so the column keeps all of it (with only {@link plaintextType} it would take the
   * table's default collation, and lose its comment; a default other than NULL is refused, see
   * {@link MigrationDdlOptions.plaintextDefault}). {@link applyMigrationStep} and `kfe migration`
   * read it from the database.
   */
  readonly plaintextDefinition?: string
  /**
   * What the database writes into the plaintext column by itself (`default 'none'::text`; on
   * MySQL/MariaDB an `on update` clause too), as `columnDefault` reads it: `add` and `cutover`
   * refuse while there is one (`MIGRATION_REFUSED`), since an insert that omits the column would
   * store it there beside a NULL encrypted value. {@link applyMigrationStep} and `kfe migration`
   * read it from the database. @default none
   */
  readonly plaintextDefault?: string
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/
const TYPE = /^[A-Za-z][A-Za-z0-9_ ,()]*$/

/**
 * The DDL of one step of moving `table.column` (a column annotated with `storedAs` and `migration`)
 * from plaintext to encrypted, without taking the table offline:
 * - `add`: the encrypted column and its blind-index columns (nullable: no rewrite of the table),
 *   then each blind index's database index, built online (`CREATE INDEX CONCURRENTLY` on
 *   PostgreSQL, `ALGORITHM=INPLACE, LOCK=NONE` on MySQL/MariaDB). A unique (full-length) blind
 *   index gets a UNIQUE index: it takes over the plaintext column's unique constraint.
 * - `cutover`: the plaintext column becomes nullable (cut-over writes NULL there).
 * - `drop`: the plaintext column is dropped, with its constraints and indexes.
 *
 * @returns the statements, for a hand-written migration (`applyMigrationStep` runs them)
 * @throws ConfigError `CONFIG_INVALID` when the column is not under migration, a name is not a
 *   plain identifier, or a type the step needs is missing
 * @throws OperationError `MIGRATION_REFUSED` from `add` and `cutover` when
 *   {@link MigrationDdlOptions.plaintextDefault} states a default
 * @example
 * ```ts
 * migrationDdl(schema, 'users', 'email', 'add', 'postgres').up
 * // alter table "users" add column if not exists "email_encrypted" bytea, add column if not exists "email_bidx" bytea
 * // create unique index concurrently if not exists "users_email_bidx_idx" on "users" ("email_bidx")
 * ```
 */
export function migrationDdl(
  schema: EncryptedSchema,
  table: string,
  column: string,
  step: MigrationStep,
  family: SqlFamily,
  options: MigrationDdlOptions = {},
): MigrationDdl {
  refuseUnknownKeys(
    options,
    optionKeys<MigrationDdlOptions>()(['plaintextType', 'plaintextDefinition', 'plaintextDefault']),
    'migrationDdl',
  )
  const { info, col } = migratingColumn(schema, table, column)
  const q = (name: string) => (family === 'postgres' ? `"${name}"` : `\`${name}\``)
  const t = q(info.physical)
  const online = family === 'mysql' ? ', algorithm=inplace, lock=none' : ''
  const up: string[] = []
  const down: string[] = []
  const notes: string[] = []
  // Checked where it is used: a cutover restating the column's definition does not need it (an
  // ENUM's type, with its quotes, would not pass).
  const plainType = (): string | undefined => {
    const type = options.plaintextType
    if (type !== undefined && !TYPE.test(type))
      throw new ConfigError('CONFIG_INVALID', `plaintextType '${type}' is not a plain SQL type.`)
    return type
  }
  // Each phase's writes name the plaintext column or leave it out, and the database fills one left
  // out with its default, never the encrypted column: the two would then hold different values.
  if (options.plaintextDefault !== undefined && step !== 'drop')
    throw new OperationError(
      'MIGRATION_REFUSED',
      `${info.physical}.${col.physical} has \`${options.plaintextDefault}\`: an insert that omits the column would store it as the plaintext beside a NULL encrypted value, and the phases would read different values. Remove it (\`alter table ${t} alter column ${q(col.physical)} drop default\`; an \`on update\` clause by restating the column without it) and write the value from the application, then run the ${step} step again.`,
      { table: info.logical, column: col.logical },
    )
  switch (step) {
    case 'add': {
      const columns = storedColumnTypes(col, family)
      const ifNot = family === 'postgres' ? 'if not exists ' : ''
      up.push(
        `alter table ${t} ${columns.map((c) => `add column ${ifNot}${q(c.name)} ${c.type}`).join(', ')}${online}`,
      )
      for (const spec of col.spec.indexes) {
        const name = q(`${info.physical}_${spec.name}_idx`)
        const unique = spec.kind === 'unique' ? 'unique ' : ''
        up.push(
          family === 'postgres'
            ? `create ${unique}index concurrently if not exists ${name} on ${t} (${q(spec.name)})`
            : `create ${unique}index ${name} on ${t} (${q(spec.name)}) algorithm=inplace lock=none`,
        )
        down.unshift(
          family === 'postgres'
            ? `drop index concurrently if exists ${name}`
            : `drop index ${name} on ${t} algorithm=inplace lock=none`,
        )
      }
      const ifExists = family === 'postgres' ? 'if exists ' : ''
      down.push(
        `alter table ${t} ${[...columns]
          .reverse()
          .map((c) => `drop column ${ifExists}${q(c.name)}`)
          .join(', ')}${online}`,
      )
      if (!col.spec.indexes.some((s) => s.kind === 'unique'))
        notes.push(
          'no unique blind index is declared: a unique constraint on the plaintext column is lost when it is dropped',
        )
      break
    }
    case 'cutover': {
      if (family === 'postgres') up.push(`alter table ${t} alter column ${q(col.physical)} drop not null`)
      else {
        const definition = options.plaintextDefinition
        const type = definition === undefined ? plainType() : undefined
        if (definition !== undefined)
          up.push(`alter table ${t} modify column ${nullable(definition, col.physical)}${online}`)
        else if (type === undefined)
          throw new ConfigError(
            'CONFIG_INVALID',
            `cutover on MySQL/MariaDB needs the type of ${info.physical}.${col.physical} (plaintextType).`,
          )
        else up.push(`alter table ${t} modify column ${q(col.physical)} ${type} null${online}`)
      }
      notes.push(
        'down keeps the plaintext column nullable: rows written during cut-over hold NULL there (their value is in the encrypted column)',
      )
      break
    }
    case 'drop': {
      const type = plainType()
      up.push(`alter table ${t} drop column ${q(col.physical)}${online}`)
      if (type === undefined)
        throw new ConfigError(
          'CONFIG_INVALID',
          `drop needs the type of ${info.physical}.${col.physical} (plaintextType) for its down migration.`,
        )
      down.push(`alter table ${t} add column ${q(col.physical)} ${type} null${online}`)
      notes.push(
        'down adds the plaintext column back empty, without its constraints: its values are only in the encrypted column',
      )
      break
    }
  }
  return Object.freeze({
    table: info.physical,
    column: col.physical,
    step,
    family,
    up: Object.freeze(up),
    down: Object.freeze(down),
    outsideTransaction: family === 'postgres' && step === 'add' && col.spec.indexes.length > 0,
    notes: Object.freeze(notes),
  })
}

/**
 * Runs one step's DDL (see {@link migrationDdl}) on `db`, reading the plaintext column's type from
 * the database where the step needs it. For a hand-written Kysely migration.
 *
 * @param direction - `up` (default) or `down`
 * @throws ConfigError `CONFIG_INVALID` as {@link migrationDdl}, and when `add` runs on PostgreSQL
 *   inside a transaction (`CREATE INDEX CONCURRENTLY` cannot: disable the migrator's transactions)
 * @throws OperationError `MIGRATION_REFUSED` when `add` or `cutover` (`up`) finds a default on the
 *   plaintext column
 * @example
 * ```ts
 * // migrations/1733390000000_users_email_add.ts
 * export const up = (db: Kysely<any>) => applyMigrationStep(db, schema, 'users', 'email', 'add')
 * export const down = (db: Kysely<any>) => applyMigrationStep(db, schema, 'users', 'email', 'add', 'down')
 * ```
 */
export async function applyMigrationStep(
  // biome-ignore lint/suspicious/noExplicitAny: any database type; the DDL names tables at run time.
  db: Kysely<any>,
  schema: EncryptedSchema,
  table: string,
  column: string,
  step: MigrationStep,
  direction: 'up' | 'down' = 'up',
): Promise<void> {
  const family = sqlFamily(db)
  const { info, col } = migratingColumn(schema, table, column)
  const needsType = (family === 'mysql' && step === 'cutover') || step === 'drop'
  const plaintextType = needsType ? await columnType(db, family, info.physical, col.physical) : undefined
  const plaintextDefinition =
    family === 'mysql' && step === 'cutover'
      ? await mysqlColumnDefinition(db, info.physical, col.physical)
      : undefined
  // Undoing a step never makes a default harmful (`down` of `add` drops the new columns).
  const plaintextDefault =
    direction === 'up' && step !== 'drop'
      ? await columnDefault(db, family, info.physical, col.physical)
      : undefined
  const ddl = migrationDdl(schema, table, column, step, family, {
    ...(plaintextType === undefined ? {} : { plaintextType }),
    ...(plaintextDefinition === undefined ? {} : { plaintextDefinition }),
    ...(plaintextDefault === undefined ? {} : { plaintextDefault }),
  })
  if (ddl.outsideTransaction && db.isTransaction)
    throw new ConfigError(
      'CONFIG_INVALID',
      `${step} of ${info.physical}.${col.physical} builds its indexes concurrently, which PostgreSQL cannot do in a transaction: run it with the migrator's transactions disabled (kysely-ctl: migrations.disableTransactions).`,
      { table: info.logical, column: col.logical },
    )
  for (const statement of direction === 'up' ? ddl.up : ddl.down) await sql.raw(statement).execute(db)
}

/**
 * A (schema-qualified) table name quoted for PostgreSQL's `to_regclass`, each part as written (a
 * bare name resolved through the search path, as queries resolve it). @internal
 */
export function quotedPgTable(physical: string): string {
  return physical
    .split('.')
    .map((part) => `"${part.replaceAll('"', '""')}"`)
    .join('.')
}

/**
 * Whether `table` exists, asked of the catalog: `schema.table` in that schema (database), a bare
 * name through the search path (PostgreSQL) or in the connection's database (MySQL). No error
 * when it does not (a failing statement would abort the caller's PostgreSQL transaction).
 */
export async function tableExists(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  family: SqlFamily,
  table: string,
): Promise<boolean> {
  if (family === 'postgres') {
    const { rows } = await sql<{
      e: boolean
    }>`select to_regclass(${quotedPgTable(table)}) is not null as e`.execute(db)
    return rows[0]?.e === true
  }
  const [schema, bare] = table.includes('.') ? (table.split('.') as [string, string]) : [undefined, table]
  const { rows } = await sql<{
    table_exists: number | string
  }>`select count(*) as table_exists from information_schema.tables
    where table_schema = ${schema ?? sql`database()`} and table_name = ${bare}`.execute(db)
  return Number(rows[0]?.table_exists) > 0
}

/**
 * The SQL type of `table.column` as the database states it (`character varying(255)`,
 * `varchar(255)`), or undefined when there is no such column.
 */
export async function columnType(
  // biome-ignore lint/suspicious/noExplicitAny: any database type.
  db: Kysely<any>,
  family: SqlFamily,
  table: string,
  column: string,
): Promise<string | undefined> {
  // `schema.table` in that schema (database), a bare name through the search path (PostgreSQL)
  // or in the connection's database (MySQL); each part as written (a quoted identifier).
  const [schema, bare] = table.includes('.') ? (table.split('.') as [string, string]) : [undefined, table]
  const { rows } =
    family === 'postgres'
      ? await sql<{ t: string }>`select format_type(a.atttypid, a.atttypmod) as t from pg_attribute a
          where a.attrelid = to_regclass(${quotedPgTable(table)}) and a.attname = ${column} and not a.attisdropped`.execute(
          db,
        )
      : await sql<{ t: string }>`select column_type as t from information_schema.columns
          where table_schema = ${schema ?? sql`database()`} and table_name = ${bare} and column_name = ${column}`.execute(
          db,
        )
  const t = rows[0]?.t
  return t === undefined ? undefined : String(t)
}

/**
 * A column definition of `SHOW CREATE TABLE` with `NOT NULL` made `NULL`: the first `NOT NULL`
 * outside quoted text (an ENUM's values, a default, a comment) and parentheses (a CHECK, a
 * generated column's expression).
 * @throws ConfigError `CONFIG_INVALID` when the definition is not that of `column`
 */
function nullable(definition: string, column: string): string {
  const name = `\`${column.replaceAll('`', '``')}\``
  if (!definition.startsWith(`${name} `))
    throw new ConfigError('CONFIG_INVALID', `plaintextDefinition is not the definition of column ${column}.`)
  let quote: string | undefined
  let depth = 0
  for (let i = name.length; i < definition.length; i++) {
    const ch = definition[i]
    if (quote !== undefined) {
      if (ch === '\\') i++
      else if (ch === quote) {
        if (definition[i + 1] === quote) i++
        else quote = undefined
      }
      continue
    }
    if (ch === "'" || ch === '"') quote = ch
    else if (ch === '(') depth++
    else if (ch === ')') depth--
    // SHOW CREATE TABLE writes the attribute in capitals, outside the type's parentheses and any
    // expression's (a CHECK or a generated column's `is not null` is not it).
    else if (depth === 0 && /^ NOT NULL(?![A-Za-z0-9_])/.test(definition.slice(i, i + 10)))
      return `${definition.slice(0, i)} NULL${definition.slice(i + ' NOT NULL'.length)}`
  }
  return definition
}

/** The encrypted column and its blind-index columns with their SQL types. */
function storedColumnTypes(col: ColumnInfo, family: SqlFamily): Array<{ name: string; type: string }> {
  // As `encryptedColumnTypes`: key versions < 128 take one varint byte; 4 more for versions up to 2^32.
  const max = col.spec.maxBytes === undefined ? undefined : col.spec.maxBytes + FORMAT_V1_OVERHEAD + 4
  const out = [
    {
      name: col.stored,
      type:
        family === 'postgres'
          ? 'bytea'
          : max !== undefined && max <= 65_000
            ? `varbinary(${max})`
            : 'mediumblob',
    },
  ]
  for (const spec of col.spec.indexes)
    out.push({
      name: spec.name,
      type: family === 'postgres' ? 'bytea' : `varbinary(${Math.ceil(spec.bits / 8)})`,
    })
  return out
}

/** The annotated table and its column under migration (by the name queries use). @internal */
export function migratingColumn(
  schema: EncryptedSchema,
  table: string,
  column: string,
): { info: TableInfo; col: ColumnInfo } {
  const info = schema.tableNamed(table)
  const col = info?.column(column) ?? [...(info?.columns.values() ?? [])].find((c) => c.logical === column)
  if (info === undefined || col === undefined)
    throw new ConfigError('CONFIG_INVALID', `${table}.${column} is not an encrypted column of the schema.`, {
      table,
    })
  if (col.migration === undefined)
    throw new ConfigError(
      'CONFIG_INVALID',
      `${info.physical}.${col.physical} is not under migration: annotate it with storedAs and migration (docs/migrating.md).`,
      { table: info.logical, column: col.logical },
    )
  // encryptedSchema refuses it; checked again here, before any job writes, for a schema built by hand.
  refuseStoredOverPlaintext(info, col)
  for (const name of [info.physical, col.physical, col.stored, ...col.spec.indexes.map((s) => s.name)]) {
    if (!IDENT.test(name))
      throw new ConfigError('CONFIG_INVALID', `'${name}' is not a plain SQL identifier.`, {
        table: info.logical,
        column: col.logical,
      })
  }
  return { info, col }
}
