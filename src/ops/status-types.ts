import type { KeyPurpose } from '../keys/key-provider.js'
import type { KeyState } from '../keys/key-store.js'
import type { JobRecord } from './job-list.js'
import type { ColumnMigrationStatus } from './migration-status.js'
import type { RunOptions } from './progress.js'
import type { IndexSlotStatus } from './slot-status.js'

/**
 * What `status` reports, apart from the code that builds it (status.ts), so that the parts it
 * calls (row-counts.ts, tenant-status.ts) can name these types without an import cycle.
 */

/** Options of `status`. */
export interface StatusOptions extends RunOptions {
  /** Only this table (physical or logical name). @default every table of the schema */
  readonly table?: string
  /** Count every row instead of a sample. @default false */
  readonly exact?: boolean
  /** Rows read per table when not exact. @default 2000 */
  readonly sampleSize?: number
  /**
   * A running job with no batch held by a worker right now and none committed for this long is
   * reported as interrupted (a job stopped by a signal, a provider outage or an error is reported
   * at once). @default 60_000
   */
  readonly staleJobMs?: number
  /**
   * With `table`, a table with per-tenant keys: this tenant's key versions and its rows per
   * version. @default every tenant's rows, counted per version of each row's own tenant
   */
  readonly tenant?: string | number | bigint
}

/** One key version, as `status` reports it. */
export interface KeyVersionStatus {
  readonly purpose: KeyPurpose
  readonly version: number
  readonly state: KeyState
  /** KEKs holding a wrapping of it. */
  readonly keks: readonly string[]
  readonly createdAt: Date
}

/** The state of one annotated table. */
export interface TableStatus {
  readonly table: string
  readonly logicalTable: string
  readonly keys: readonly KeyVersionStatus[]
  /** Rows in the table. */
  readonly rows: number
  /** Rows read: all of them when `exact`, else a sample. */
  readonly scanned: number
  /** True when the counts below are scaled from a sample (estimates). */
  readonly estimated: boolean
  /** Rows holding at least one ciphertext under each data key version. */
  readonly rowsByDataVersion: Readonly<Record<string, number>>
  /** Rows holding at least one blind index of each index key version. */
  readonly rowsByIndexVersion: Readonly<Record<string, number>>
  /**
   * Each index with a rotation slot (`index: { name, rotationSlot }`): per column (its own, its
   * slot), the live index version that lives there and rows per version it holds. Empty when the
   * table has none.
   */
  readonly slots: readonly IndexSlotStatus[]
  /** Rows with a value still in plaintext. */
  readonly plaintextRows: number
  /** Rows that fail to decrypt or whose index matches no version (see `verify`). */
  readonly failedRows: number
  /**
   * True when the signal (SIGINT/SIGTERM) stopped the row scan before its end: the row counts are
   * of the `scanned` rows only, and `attention` says so.
   */
  readonly stopped: boolean
  readonly jobs: readonly (JobRecord & { readonly interrupted: boolean })[]
  /** Each column under migration from plaintext: its phase and the share of rows encrypted. */
  readonly migrations: readonly ColumnMigrationStatus[]
  /**
   * A table with per-tenant keys (`keyScope`): how many tenants have live keys, how many were
   * shredded, how many have a staged version; rows of shredded tenants (unreadable by design, not
   * in `failedRows`); rows not on their own tenant's active versions. The row counts above are
   * per version of each row's own tenant (`keys` lists the versions of the tenant named by the
   * `tenant` option, else none).
   */
  readonly tenants?: {
    readonly live: number
    readonly destroyed: number
    readonly staged: number
    readonly shreddedRows: number
    readonly rowsNotOnActive: number
  }
  /** What needs doing, one line each; empty when nothing does. */
  readonly attention: readonly string[]
  readonly verdict: string
}

/** Outcome of `status`. */
export interface StatusResult {
  readonly tables: readonly TableStatus[]
  /** True when any table lists something to do (the CLI exits 2). */
  readonly needsAttention: boolean
}
