import { sql } from 'kysely'
import type { MigrationPhase } from '../schema/migration-phase.js'
import { readState } from '../schema/migration-state.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import type { JobRecord } from './job-store.js'

/** The state of one column under migration from plaintext, as `status` reports it. */
export interface ColumnMigrationStatus {
  /** The annotated name (the plaintext column while it exists). */
  readonly column: string
  /** The encrypted column. */
  readonly storedAs: string
  /** The phase the annotation states. */
  readonly phase: MigrationPhase
  /** Whether the plaintext column still exists. */
  readonly plaintextColumn: boolean
  /** Whether the encrypted column and its blind-index columns exist (`kfe migration … --phase add` ran). */
  readonly encryptedColumns: boolean
  /** Rows with a plaintext value. */
  readonly plaintextRows: number
  /** Of those, rows that also hold an encrypted value. */
  readonly encryptedRows: number
  /** `encryptedRows / plaintextRows` (1 when there is nothing left to encrypt). */
  readonly share: number
  /** The backfill job (`kfe encrypt-column`), if one ran or runs. */
  readonly job: JobRecord | undefined
}

/**
 * The columns of `table` under migration, with the share of rows done (one counting query per
 * column: it reads the whole table) and their backfill job; plus what needs doing. @internal
 */
export async function migrationStatus(
  ctx: OpsContext,
  table: TableInfo,
  jobs: readonly JobRecord[],
): Promise<{ columns: ColumnMigrationStatus[]; attention: string[] }> {
  const columns: ColumnMigrationStatus[] = []
  const attention: string[] = []
  for (const column of table.columns.values()) {
    const phase = column.migration
    if (phase === undefined) continue
    const state = await readState(ctx.db, table, column, phase)
    let plaintextRows = 0
    let encryptedRows = 0
    if (state.plaintextColumn && state.encryptedColumns) {
      const p = sql.ref(column.physical)
      const c = sql.ref(column.stored)
      const { rows } = await sql<{ plain: unknown; done: unknown }>`select
          sum(case when ${p} is not null then 1 else 0 end) as plain,
          sum(case when ${p} is not null and ${c} is not null then 1 else 0 end) as done
        from ${sql.table(table.physical)}`.execute(ctx.db)
      plaintextRows = Number(rows[0]?.plain ?? 0)
      encryptedRows = Number(rows[0]?.done ?? 0)
    }
    const share = plaintextRows === 0 ? 1 : encryptedRows / plaintextRows
    const job = jobs.find((j) => j.id === `encrypt-column:${table.logical}.${column.logical}`)
    columns.push({
      column: column.physical,
      storedAs: column.stored,
      phase,
      plaintextColumn: state.plaintextColumn,
      encryptedColumns: state.encryptedColumns,
      plaintextRows,
      encryptedRows,
      share,
      job,
    })
    const name = `${table.physical}.${column.physical}`
    const left = plaintextRows - encryptedRows
    if (state.plaintextDefault !== undefined)
      attention.push(
        `${name}: the plaintext column has \`${state.plaintextDefault}\`, which an insert that omits the column stores without an encrypted value: remove it (the startup check refuses every phase after 'added' while it is there)`,
      )
    if (!state.encryptedColumns)
      attention.push(
        `${name}: the encrypted columns do not exist: run \`kfe migration ${table.physical} ${column.physical} --phase add\``,
      )
    else if (left > 0 && phase !== 'added')
      attention.push(
        `${name} (${phase}): ${left} rows to encrypt: run \`kfe encrypt-column ${table.physical} ${column.physical}\``,
      )
    else if (left === 0 && phase === 'dual-writing' && plaintextRows > 0)
      attention.push(
        `${name}: every row is encrypted: run \`kfe verify ${table.physical}\`, then deploy 'backfilled'`,
      )
    else if (phase === 'dropped' && state.plaintextColumn)
      attention.push(
        `${name}: the plaintext column still exists: run \`kfe migration ${table.physical} ${column.physical} --phase drop\``,
      )
  }
  return { columns, attention }
}
