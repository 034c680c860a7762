import { type Kysely, type RawBuilder, sql } from 'kysely'
import type { KeyPurpose } from '../keys/key-provider.js'
import { isMissingRelation } from '../keys/key-table.js'
import type { OpsContext } from './context.js'
import { ensureJobTables } from './job-tables.js'

/** A key event the waits of `rotate` and `retire` are measured from. @internal */
export type KeyEvent = 'staging' | 'activation' | 'shred'

/**
 * Milliseconds elapsed since a key version was staged or activated, by the DATABASE's clock (every
 * machine running `kfe` or the application shares it, so no client clock and no skew between
 * clocks enters the waits). The times live in the job table (`kind` = the event, `id` =
 * `<event>:<logical table>:<purpose>:<version>`), written by `rotate` when it stages and activates.
 *
 * A version staged or activated by another tool has no record: the first call records the present
 * moment and answers 0, so the wait is measured from when it was first seen, never shorter than
 * the true one. With `record: false` (a dry run) nothing is written: no record answers 0.
 * @internal
 */
export async function msSinceKeyEvent(
  ctx: OpsContext,
  event: KeyEvent,
  logicalTable: string,
  purpose: KeyPurpose,
  version: number,
  options: { readonly record?: boolean } = {},
): Promise<number> {
  const id = eventId(event, logicalTable, purpose, version)
  if (options.record === false) {
    // A dry run writes nothing: without a record (or a job table), the event is taken as now.
    const row = await db(ctx)
      .selectFrom(ctx.jobsTable)
      .select(elapsedMs(ctx).as('elapsed'))
      .where('id', '=', id)
      .executeTakeFirst()
      .catch((error: unknown) => {
        if (isMissingRelation(error)) return undefined
        throw error
      })
    return row === undefined ? 0 : Math.max(0, Number(row.elapsed))
  }
  await ensureJobTables(ctx)
  for (let attempt = 0; attempt < 2; attempt++) {
    const row = await db(ctx)
      .selectFrom(ctx.jobsTable)
      .select(elapsedMs(ctx).as('elapsed'))
      .where('id', '=', id)
      .executeTakeFirst()
    if (row !== undefined) return Math.max(0, Number(row.elapsed))
    await insertEvent(ctx, id, event, logicalTable, false)
  }
  return 0
}

/** Records a stage or an activation now, by the database's clock (again: moved to now). @internal */
export async function recordKeyEvent(
  ctx: OpsContext,
  event: KeyEvent,
  logicalTable: string,
  purpose: KeyPurpose,
  version: number,
): Promise<void> {
  await ensureJobTables(ctx)
  await insertEvent(ctx, eventId(event, logicalTable, purpose, version), event, logicalTable, true)
}

/**
 * The audit record of a crypto-shredding: a row of the job table (`kind` `shred`, `id`
 * `shred:<key name>`, `logical_table` the key name, `total_batches` the key versions destroyed,
 * `started_at` the database's time), written after the key rows became tombstones. A second
 * shred of the same name moves the time. It names the tenant (a plaintext context value), never
 * a key. @internal
 */
export async function recordShredEvent(ctx: OpsContext, keyName: string, versions: number): Promise<void> {
  await ensureJobTables(ctx)
  const now = dbNow(ctx)
  const insert = db(ctx)
    .insertInto(ctx.jobsTable)
    .values({
      id: `shred:${keyName}`,
      kind: 'shred',
      logical_table: keyName,
      state: 'done',
      total_batches: versions,
      started_at: now,
      finished_at: now,
    })
  await (ctx.family === 'mysql'
    ? insert.onDuplicateKeyUpdate({ started_at: now, finished_at: now, total_batches: versions })
    : insert.onConflict((oc) =>
        oc.column('id').doUpdateSet({ started_at: now, finished_at: now, total_batches: versions }),
      )
  ).execute()
}

function eventId(event: KeyEvent, logicalTable: string, purpose: KeyPurpose, version: number): string {
  return `${event}:${logicalTable}:${purpose}:${version}`
}

async function insertEvent(
  ctx: OpsContext,
  id: string,
  kind: KeyEvent,
  logicalTable: string,
  overwrite: boolean,
): Promise<void> {
  const now = dbNow(ctx)
  const insert = db(ctx).insertInto(ctx.jobsTable).values({
    id,
    kind,
    logical_table: logicalTable,
    state: 'done',
    total_batches: 0,
    started_at: now,
    finished_at: now,
  })
  if (ctx.family === 'mysql') {
    await insert
      .onDuplicateKeyUpdate(
        overwrite ? { started_at: now, finished_at: now } : { id: sql.ref(`${ctx.jobsTable}.id`) },
      )
      .execute()
  } else {
    await insert
      .onConflict((oc) =>
        overwrite ? oc.column('id').doUpdateSet({ started_at: now, finished_at: now }) : oc.doNothing(),
      )
      .execute()
  }
}

/** The database's present time, as a SQL expression. @internal */
export function dbNow(ctx: OpsContext): RawBuilder<Date> {
  return ctx.family === 'mysql' ? sql<Date>`now(3)` : sql<Date>`clock_timestamp()`
}

/** Milliseconds from `started_at` to the database's present time, as a SQL expression. */
function elapsedMs(ctx: OpsContext): RawBuilder<number> {
  return ctx.family === 'mysql'
    ? sql<number>`timestampdiff(microsecond, started_at, now(3)) / 1000`
    : sql<number>`extract(epoch from (clock_timestamp() - started_at)) * 1000`
}

// biome-ignore lint/suspicious/noExplicitAny: the job table is named at run time.
function db(ctx: OpsContext): Kysely<any> {
  return ctx.db
}
