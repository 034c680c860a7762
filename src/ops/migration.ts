import { OperationError } from '../errors.js'
import { columnDefault } from '../schema/column-default.js'
import {
  columnType,
  type MigrationDdl,
  type MigrationStep,
  migratingColumn,
  migrationDdl,
} from '../schema/migration-ddl.js'
import { migrationFileName, migrationFileSource } from '../schema/migration-file.js'
import { mysqlColumnDefinition } from '../schema/mysql-column-definition.js'
import type { OpsContext } from './context.js'

/** A Kysely migration file for one step, ready to be written into the migration folder. */
export interface MigrationFile {
  /** `<ms timestamp>_<table>_<column>_<step>.ts`, as kysely-ctl's `make` names files. */
  readonly fileName: string
  readonly source: string
  readonly ddl: MigrationDdl
}

/**
 * Builds the migration file of one step of moving `table.column` from plaintext to encrypted
 * (`kfe migration users email --phase add`), for this database's SQL family, reading the plaintext
 * column's type from the database where the step needs it. Writes nothing.
 * @throws OperationError `MIGRATION_REFUSED` when the plaintext column is missing for `cutover`/`drop`,
 *   or has a default (other than NULL) for `add`/`cutover`
 * @throws ConfigError `CONFIG_INVALID` when the column is not under migration
 * @example
 * ```ts
 * const file = await ops.migration('users', 'email', 'add')
 * await writeFile(join('migrations', file.fileName), file.source)
 * ```
 */
export async function migration(
  ctx: OpsContext,
  table: string,
  column: string,
  step: MigrationStep,
  now: Date = new Date(),
): Promise<MigrationFile> {
  const { info, col } = migratingColumn(ctx.schema, table, column)
  let plaintextType: string | undefined
  if (step !== 'add') {
    plaintextType = await columnType(ctx.db, ctx.family, info.physical, col.physical)
    if (plaintextType === undefined)
      throw new OperationError(
        'MIGRATION_REFUSED',
        `${info.physical}.${col.physical} does not exist in the database: nothing to ${step === 'drop' ? 'drop' : 'make nullable'}.`,
        { table: info.logical, column: col.logical },
      )
  }
  const plaintextDefinition =
    ctx.family === 'mysql' && step === 'cutover'
      ? await mysqlColumnDefinition(ctx.db, info.physical, col.physical)
      : undefined
  const plaintextDefault =
    step === 'drop' ? undefined : await columnDefault(ctx.db, ctx.family, info.physical, col.physical)
  const ddl = migrationDdl(ctx.schema, table, column, step, ctx.family, {
    ...(plaintextType === undefined ? {} : { plaintextType }),
    ...(plaintextDefinition === undefined ? {} : { plaintextDefinition }),
    ...(plaintextDefault === undefined ? {} : { plaintextDefault }),
  })
  return { fileName: migrationFileName(ddl, now), source: migrationFileSource(ddl), ddl }
}
