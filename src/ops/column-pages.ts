import { type Expression, type SqlBool, sql } from 'kysely'
import { readContext } from '../schema/row-context.js'
import type { ColumnInfo, TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { plaintextCheck } from './plaintext-exact.js'
import { exactKeys, type KeyColumn } from './primary-key.js'
import { type RunOptions, report } from './progress.js'
import type { StoredRow } from './row-check.js'

/**
 * What a job reads of a row of a column under migration: exact primary key, row-context columns
 * (the AAD of its ciphertext), plaintext, ciphertext, blind indexes. A `json` plaintext is read as
 * its JSON text (`cast … as text`, `as char`): drivers parse a json/jsonb column (pg; mysql2 on
 * MySQL 8) and return text for a text column (and MariaDB's JSON), so a string as returned would
 * be JSON text in one case and a parsed JSON string (`"123"` → `'123'`) in the other. A `bigint`
 * plaintext is read as its decimal text on MySQL/MariaDB: mysql2 rounds a BIGINT past 2^53 to a
 * number unless the pool sets `supportBigNumbers` (pg and PGlite return int8 exactly). `exact`:
 * the database's test of a plaintext the driver may read rounded ({@link plaintextCheck}).
 */
export function columnRowColumns(
  column: ColumnInfo,
  key: KeyColumn,
  family: OpsContext['family'],
  exact?: KeyColumn['selection'],
): Array<KeyColumn['selection']> {
  const kind = column.spec.codec.kind
  const asText = kind === 'json' || (kind === 'bigint' && family === 'mysql')
  const plaintext = !asText
    ? column.physical
    : sql<string>`cast(${sql.ref(column.physical)} as ${sql.raw(family === 'mysql' ? 'char' : 'text')})`.as(
        column.physical,
      )
  return [
    key.selection,
    ...column.table.context.filter((c) => c !== key.name),
    plaintext,
    column.stored,
    ...column.spec.indexes.map((s) => s.name),
    ...(exact === undefined ? [] : [exact]),
  ]
}

/**
 * The row's context values for `column`'s ciphertext (undefined: the table binds none), or
 * `failed` when a context column is NULL or unusable (`CONTEXT_MISSING`).
 */
export function storedContext(column: ColumnInfo, row: StoredRow): readonly string[] | undefined | 'failed' {
  try {
    return readContext(column.table, column, (i) => row[column.table.context[i] as string])
  } catch {
    return 'failed'
  }
}

/** Where a {@link columnPages} read got to: rows read, and whether the signal stopped it. */
export interface PageCursor {
  rows: number
  stopped: boolean
}

/**
 * The rows of a column under migration ({@link columnRowColumns}), page by page in primary-key
 * order (keyset pagination), outside any transaction, for read-only passes (`verifyColumn`,
 * `encryptColumn`'s dry run). Reports `op` progress after each page; stops before the next page
 * once the signal aborts (`cursor.stopped`).
 */
export async function* columnPages(
  ctx: OpsContext,
  table: TableInfo,
  column: ColumnInfo,
  key: KeyColumn,
  op: string,
  options: RunOptions & { readonly pageSize?: number | undefined },
  cursor: PageCursor,
  where?: Expression<SqlBool>,
): AsyncGenerator<StoredRow[]> {
  const exact = await plaintextCheck(ctx, table, column)
  let after: unknown = null
  for (;;) {
    if (options.signal?.aborted) {
      cursor.stopped = true
      return
    }
    let q = ctx.db
      .selectFrom(table.physical)
      .select(columnRowColumns(column, key, ctx.family, exact))
      .orderBy(key.order)
      .limit(options.pageSize ?? 1000)
    if (after !== null) q = q.where(key.name, '>', after)
    // One tenant's rows only (`verify --tenant`).
    if (where !== undefined) q = q.where(where)
    const page = exactKeys(key, (await q.execute()) as StoredRow[])
    if (page.length === 0) return
    yield page
    cursor.rows += page.length
    after = page.at(-1)?.[key.name] ?? null
    report(options, {
      op,
      table: table.physical,
      phase: 'rows',
      done: cursor.rows,
      total: undefined,
      unit: 'rows',
    })
  }
}
