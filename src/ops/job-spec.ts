import type { Expression, SqlBool, Transaction } from 'kysely'
import type { TableInfo } from '../schema/schema.js'
import type { CasWrite } from './cas-write.js'
import type { OpsContext } from './context.js'
import type { JobStore } from './job-store.js'
import type { KeySnapshot } from './key-snapshot.js'
import type { KeyColumn } from './primary-key.js'
import type { KeySet, StoredRow } from './row-check.js'

// What a job is made of, for the job engine (job-batch.ts, job-engine.ts): the steps of one kind
// of job and what a worker needs to run its batches. Types only.

/** What one row needs, as a job's {@link JobSpec.plan} reads it. @internal */
export type RowPlan =
  /** Nothing to write. */
  | { readonly kind: 'skip' }
  /** The row cannot be read (counted in `failed`, its key listed). */
  | { readonly kind: 'failed' }
  /** The row names a key version this worker has not loaded: reload the keys once, then it fails. */
  | { readonly kind: 'reload' }
  /** The row's tenant was shredded: unreadable by design, counted apart (`shredded`), never a failure. */
  | { readonly kind: 'shredded' }
  /** The keys of the row's tenant are not loaded: load them outside the transaction, run the batch again. */
  | { readonly kind: 'keys'; readonly tenant: string }
  /** Write `set` if the row still holds `match` (compare-and-set, see {@link CasWrite}). */
  | { readonly kind: 'write'; readonly set: CasWrite['set']; readonly match: CasWrite['match'] }

/**
 * The steps that make one kind of job (re-encryption, the backfill of a column migrating from
 * plaintext); the engine does the rest: planning, claiming, the batch's transaction, the batched
 * compare-and-set write, the rounds after a conflict, the checkpoint, progress, stop and pause.
 * @internal
 */
export interface JobSpec {
  /** Job kind, recorded in the job table (`reencrypt`, `encrypt-column`). */
  readonly kind: string
  /** What the job row records as its subject: the logical table, or `table.column`. */
  readonly subject: string
  /** `op` of the progress events. */
  readonly op: string
  /** What a batch reads of each row (the exact primary key among them). */
  columns(key: KeyColumn): Array<KeyColumn['selection']>
  /**
   * Read the batch's rows locked (`FOR UPDATE`): for a job whose `match` cannot name every value
   * it depends on (a JSON column has no `=`). @default false
   */
  readonly lockRead?: boolean
  /** What `row` needs under `keys` (pure: no query, no throw for a bad row). */
  plan(row: StoredRow, keys: KeySet): RowPlan
  /** Only these rows (one tenant's): applied to the job's plan and to each batch's read. */
  readonly where?: Expression<SqlBool> | undefined
  /**
   * The keys a batch starts with, loaded outside its transaction, with the keys of `tenants` (named
   * by a `keys` plan of the batch's last attempt); `fresh`: read every key's metadata again.
   * @default the table's one key set (`loadKeySet`)
   */
  loadKeys?(tenants: readonly string[], fresh: boolean): Promise<KeySet>
  /** The versions the job moves rows onto. @default the table's active versions */
  targets?(): Promise<{ data: number; index: number }>
  /**
   * What else must be as when the job was planned for a run to join it (a whole-table job over
   * per-tenant keys: the tenants' key generation). @default none
   */
  // biome-ignore lint/suspicious/noExplicitAny: tables named at run time.
  generation?(trx: Transaction<any>): Promise<string>
  /** Explains an error of the batch's write (a unique index refusing a value); undefined: rethrown as is. */
  writeError?(error: unknown): Error | undefined
}

/** What a worker needs to run batches of one job. @internal */
export interface BatchRunner {
  readonly ctx: OpsContext
  readonly jobs: JobStore
  readonly table: TableInfo
  readonly spec: JobSpec
  readonly key: KeyColumn
  readonly jobId: string
  /** Name recorded beside each batch. */
  readonly worker: string
  /** Primary keys of failed rows, filled up to 100, each batch's once it commits. */
  readonly failedKeys: unknown[]
  /** This worker's view of the table's key versions, checked at each claim. */
  readonly keys: KeySnapshot
}
