import { type Kysely, sql } from 'kysely'
import { ConfigError } from '../errors.js'
import { columnDefault } from './column-default.js'
import { columnType } from './migration-ddl.js'
import type { MigrationPhase } from './migration-phase.js'
import type { ColumnInfo, EncryptedSchema, TableInfo } from './schema.js'
import { sqlFamily } from './sql-family.js'

/** What the database shows of one column under migration. */
export interface MigrationColumnState {
  readonly table: string
  readonly column: string
  /** The phase this deploy's annotation states. */
  readonly phase: MigrationPhase
  /** Whether the plaintext column still exists. */
  readonly plaintextColumn: boolean
  /**
   * What the database writes into the plaintext column by itself, as it states it (`default
   * 'none'::text`; on MySQL/MariaDB an `on update` clause too), or undefined: none, or a default of NULL.
   */
  readonly plaintextDefault: string | undefined
  /** Whether the encrypted column and every blind-index column exist. */
  readonly encryptedColumns: boolean
  /** Some row holds a plaintext value without its encrypted value (the backfill is not done). */
  readonly pendingRows: boolean
  /** Some row holds an encrypted value with a NULL plaintext (written by a `cut-over` process). */
  readonly cutOverRows: boolean
}

// biome-ignore lint/suspicious/noExplicitAny: any database type; tables are named at run time.
type AnyDb = Kysely<any>

/**
 * Checks, at an application's startup, that the database agrees with the migration phase of each
 * column the schema states (docs/migrating.md): refuses a deploy that would lose or misread rows
 * because another deploy ran ahead of it or the migration steps were skipped.
 *
 * Refused, with ConfigError `MIGRATION_PHASE_CONFLICT` naming the table, column and what to do:
 * - the encrypted or blind-index columns are missing (the `add` migration has not run);
 * - the plaintext column is gone while the phase still reads or writes it (any phase but `dropped`);
 * - the plaintext column has a default (other than NULL) and the phase is past `added`: an insert
 *   that omits the column stores it there beside a NULL encrypted value, which `dual-writing` and
 *   `backfilled` read as the default and `cut-over` as NULL, until a backfill passes the row;
 * - some row has a plaintext value but no encrypted value while the phase is `backfilled`,
 *   `cut-over` or `dropped` (it would read that row as NULL: run `kfe encrypt-column` first);
 * - some row was written by a `cut-over` process (NULL plaintext beside an encrypted value) while
 *   the phase is `added` (which reads only the plaintext, and would see NULL).
 *
 * Cost: per column, three catalog lookups and up to two `select … limit 1` queries, which may scan
 * the table when no row matches (the columns compared have no index over both).
 *
 * @returns what it found, per column under migration
 * @throws ConfigError `MIGRATION_PHASE_CONFLICT`
 * @example
 * ```ts
 * await checkMigrationState(plainDb, schema)   // at startup, before serving
 * // select 1 from "users" where "email" is not null and "email_encrypted" is null limit 1
 * ```
 */
export async function checkMigrationState(
  db: AnyDb,
  schema: EncryptedSchema,
): Promise<readonly MigrationColumnState[]> {
  const out: MigrationColumnState[] = []
  for (const table of schema.tables.values()) {
    for (const column of table.columns.values()) {
      if (column.migration === undefined) continue
      const state = await readState(db, table, column, column.migration)
      const refusal = refusalOf(state)
      if (refusal !== undefined)
        throw new ConfigError(
          'MIGRATION_PHASE_CONFLICT',
          `${table.physical}.${column.physical} is annotated '${column.migration}', but ${refusal}.`,
          { table: table.logical, column: column.logical },
        )
      out.push(state)
    }
  }
  return out
}

/** Reads what the database shows of one column under migration. @internal */
export async function readState(
  db: AnyDb,
  table: TableInfo,
  column: ColumnInfo,
  phase: MigrationPhase,
): Promise<MigrationColumnState> {
  const family = sqlFamily(db)
  const has = async (name: string) => (await columnType(db, family, table.physical, name)) !== undefined
  const plaintextColumn = await has(column.physical)
  const plaintextDefault = plaintextColumn
    ? await columnDefault(db, family, table.physical, column.physical)
    : undefined
  let encryptedColumns = await has(column.stored)
  for (const spec of column.spec.indexes) encryptedColumns = encryptedColumns && (await has(spec.name))
  const any = async (plainNull: boolean) => {
    const p = sql.ref(column.physical)
    const c = sql.ref(column.stored)
    const { rows } = await sql`select 1 as x from ${sql.table(table.physical)} where ${p} is ${sql.raw(
      plainNull ? 'null' : 'not null',
    )} and ${c} is ${sql.raw(plainNull ? 'not null' : 'null')} limit 1`.execute(db)
    return rows.length > 0
  }
  const both = plaintextColumn && encryptedColumns
  return {
    table: table.physical,
    column: column.physical,
    phase,
    plaintextColumn,
    plaintextDefault,
    encryptedColumns,
    pendingRows: both && (await any(false)),
    cutOverRows: both && (await any(true)),
  }
}

/** Why the deploy is refused, or undefined when the database agrees with its phase. */
function refusalOf(s: MigrationColumnState): string | undefined {
  if (!s.encryptedColumns)
    return 'its encrypted or blind-index columns do not exist: run the `add` migration (`kfe migration … --phase add`)'
  if (!s.plaintextColumn && s.phase !== 'dropped')
    return "the plaintext column is gone: this deploy's phase is behind the database's; deploy the `dropped` phase"
  if (s.plaintextDefault !== undefined && s.phase !== 'added')
    return `the plaintext column has \`${s.plaintextDefault}\`, which an insert that omits the column stores there beside a NULL encrypted value (read as the default before cut-over and as NULL from it on): remove it (\`alter table … alter column ${s.column} drop default\`) and write the value from the application, then run \`kfe encrypt-column\` for the rows it filled`
  if (s.pendingRows && (s.phase === 'backfilled' || s.phase === 'cut-over' || s.phase === 'dropped'))
    return 'some rows have no encrypted value yet: run `kfe encrypt-column` and `kfe verify` before this phase'
  if (s.cutOverRows && s.phase === 'added')
    return 'rows written by a cut-over deploy exist (NULL plaintext): an `added` deploy would read them as NULL; deploy `backfilled` or later'
  return undefined
}
