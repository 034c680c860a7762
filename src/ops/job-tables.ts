import { type Kysely, sql } from 'kysely'
import { OperationError } from '../errors.js'
import type { OpsContext } from './context.js'

/**
 * Creates the job tables if absent (idempotent, safe when several processes start at once):
 *
 * - `kfe_jobs`: one row per job (`id` = `<kind>:<logical table>`, `kind`, `logical_table`, `state`
 *   `new`/`running`/`done`, `total_batches`, `target_data` and `target_index`: the key versions the
 *   job moves rows onto, `started_at`, `finished_at`, `stopped_at`: when a run last stopped with
 *   batches left, `key_generation`: a whole-table job's over per-tenant keys, see
 *   tenant-generation.ts; null otherwise). Also holds the key events `rotate` and `retire` time by the database's clock
 *   (`kind` `activation` / `staging`, see key-events.ts).
 * - `kfe_jobs_batches`: one row per batch of primary keys `(lo, hi]`, the checkpoint: marked done
 *   in the transaction that rewrote its rows, with its counters.
 * @internal
 */
export async function ensureJobTables(ctx: OpsContext): Promise<void> {
  // biome-ignore lint/suspicious/noExplicitAny: the job tables are named at run time.
  const db: Kysely<any> = ctx.db
  const time = ctx.family === 'mysql' ? sql`datetime(3)` : sql`timestamptz`
  const big = 'bigint'
  const batches = `${ctx.jobsTable}_batches`
  await retryCreate(() =>
    db.schema
      .createTable(ctx.jobsTable)
      .ifNotExists()
      .addColumn('id', 'varchar(300)', (c) => c.primaryKey())
      .addColumn('kind', 'varchar(32)', (c) => c.notNull())
      .addColumn('logical_table', 'varchar(255)', (c) => c.notNull())
      .addColumn('state', 'varchar(16)', (c) => c.notNull())
      .addColumn('total_batches', 'integer', (c) => c.notNull())
      .addColumn('target_data', 'integer')
      .addColumn('target_index', 'integer')
      .addColumn('started_at', time, (c) => c.notNull())
      .addColumn('finished_at', time)
      .addColumn('stopped_at', time)
      .addColumn('key_generation', 'varchar(64)')
      .execute(),
  )
  await ensureGenerationColumn(db, ctx.jobsTable)
  await retryCreate(() =>
    db.schema
      .createTable(batches)
      .ifNotExists()
      .addColumn('job_id', 'varchar(300)', (c) => c.notNull())
      .addColumn('batch_no', 'integer', (c) => c.notNull())
      .addColumn('lo', 'varchar(1000)')
      .addColumn('hi', 'varchar(1000)')
      .addColumn('done', 'integer', (c) => c.notNull())
      .addColumn('rows_seen', big, (c) => c.notNull())
      .addColumn('rewritten', big, (c) => c.notNull())
      .addColumn('conflicts', big, (c) => c.notNull())
      .addColumn('deleted', big, (c) => c.notNull())
      .addColumn('failed', big, (c) => c.notNull())
      .addColumn('worker', 'varchar(100)')
      .addColumn('finished_at', time)
      .addPrimaryKeyConstraint(`${batches}_pkey`, ['job_id', 'batch_no'])
      .execute(),
  )
}

/** A job table made before `key_generation` gets it (nullable: null for jobs of table-wide keys). */
// biome-ignore lint/suspicious/noExplicitAny: the job tables are named at run time.
async function ensureGenerationColumn(db: Kysely<any>, jobsTable: string): Promise<void> {
  const present = () =>
    db
      .selectFrom(jobsTable)
      .select('key_generation')
      .limit(1)
      .execute()
      .then(
        () => true,
        () => false,
      )
  if (await present()) return
  try {
    await db.schema.alterTable(jobsTable).addColumn('key_generation', 'varchar(64)').execute()
  } catch (error) {
    // Another process added it at the same time.
    if (!(await present())) throw error
  }
}

async function retryCreate(create: () => Promise<unknown>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await create()
      return
    } catch (error) {
      // Two concurrent CREATE TABLE IF NOT EXISTS may collide on PostgreSQL's catalog.
      if (attempt >= 3) throw error
    }
  }
}

/** What the bounds' columns hold (`varchar(1000)`). */
const BOUND_MAX = 1000

/**
 * A primary-key bound as stored: JSON, strings quoted, an integer as its digits (exact beyond 2^53),
 * bytes (a `bytea`, `binary` or `varbinary` key) as Node's JSON of a Buffer,
 * `{"type":"Buffer","data":[…]}`, whatever array type the driver gave them in (PGlite gives a
 * Uint8Array, whose own JSON would be an object of indexes).
 * @throws OperationError `OPS_INVALID` when it is longer than the bounds' columns hold
 */
export function encodeBound(value: unknown): string | null {
  if (value === null || value === undefined) return null
  const text =
    typeof value === 'bigint'
      ? value.toString()
      : value instanceof Uint8Array
        ? JSON.stringify({ type: 'Buffer', data: Array.from(value) })
        : JSON.stringify(value)
  if (text.length > BOUND_MAX)
    throw new OperationError(
      'OPS_INVALID',
      `A primary key is ${text.length} characters long as a job's batch bound (JSON), more than the ${BOUND_MAX} the job table holds: jobs cannot split this table into batches.`,
    )
  return text
}

/**
 * Reads {@link encodeBound}: an integer beyond 2^53 comes back as a bigint, bytes as a Buffer (the
 * driver then compares them as bytes; as the object JSON.parse gives, they would be sent as text
 * and compared with the wrong bytes, and the batch would skip rows).
 */
export function decodeBound(value: unknown): unknown {
  if (value === null || value === undefined) return null
  const text = String(value)
  if (/^-?\d{16,}$/.test(text)) {
    const n = Number(text)
    return Number.isSafeInteger(n) ? n : BigInt(text)
  }
  const parsed = JSON.parse(text) as unknown
  return isBufferJson(parsed) ? Buffer.from(parsed.data) : parsed
}

/** The JSON of a Buffer, as {@link encodeBound} writes it (a key is never otherwise an object). */
function isBufferJson(value: unknown): value is { readonly type: 'Buffer'; readonly data: number[] } {
  if (typeof value !== 'object' || value === null) return false
  const { type, data } = value as { type?: unknown; data?: unknown }
  return (
    type === 'Buffer' && Array.isArray(data) && data.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)
  )
}
