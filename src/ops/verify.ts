import type { OpsContext } from './context.js'
import { requireTable } from './primary-key.js'
import { type RunOptions, report } from './progress.js'
import { scanTable } from './scan.js'
import { scanKeys } from './tenant-key-sets.js'
import { type VerifyColumnResult, type VerifyFailure, verifyColumn } from './verify-column.js'

export type { VerifyFailure } from './verify-column.js'

/** Options of `verify`. */
export interface VerifyOptions extends RunOptions {
  /** Rows per query. @default 1000 */
  readonly pageSize?: number
  /** Failing rows listed in the result (all are counted). @default 100 */
  readonly maxListed?: number
  /**
   * A table with per-tenant keys: only this tenant's rows. @default every row, each under its own
   * tenant's keys
   */
  readonly tenant?: string | number | bigint
}

/** Outcome of `verify`. */
export interface VerifyResult {
  readonly table: string
  readonly rows: number
  /** True when every row decrypts and every blind index equals its recomputation. */
  readonly ok: boolean
  readonly failed: number
  /**
   * Rows of shredded tenants (per-tenant keys): unreadable by design (`KEY_DESTROYED`), counted
   * here, not in `failed`, and not in `ok`.
   */
  readonly shredded: number
  readonly failures: readonly VerifyFailure[]
  /** Ciphertexts per data key version (one per encrypted, non-null value). */
  readonly dataVersions: Readonly<Record<string, number>>
  /** Blind indexes per index key version that produced them. */
  readonly indexVersions: Readonly<Record<string, number>>
  /**
   * Indexes with a rotation slot: per column that searches do not probe (the staged version's
   * during a rotation), rows per index version it holds, and `missing`: rows whose value lacks
   * it (not backfilled yet; an index version is activated only once this is 0).
   */
  readonly slotVersions: Readonly<Record<string, Readonly<Record<string, number>>>>
  /** Values still in plaintext (columns being migrated from plaintext). */
  readonly plaintext: number
  /** Each column under migration from plaintext, compared row by row with its plaintext column. */
  readonly migrating: readonly VerifyColumnResult[]
  readonly stopped: boolean
}

/**
 * Reads every row of `table`: each ciphertext must decrypt under the key version its header names,
 * each blind index must equal its recomputation under some index version (which one is counted).
 * Read-only. Cost: one decryption per value and one HMAC per index (two or more for rows still on
 * an old index version; one per live index version for an index with a rotation slot, whose
 * columns tell the version: odd ones in the index's column, even ones in its slot). A column under
 * migration from plaintext is also compared, row by row, with its plaintext column (see
 * `verifyColumn`): `ok` needs every row with a plaintext to hold its equal encrypted value.
 * @throws KeyProviderError when a key cannot be unwrapped
 */
export async function verify(
  ctx: OpsContext,
  tableName: string,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  const table = ctx.table(tableName)
  await requireTable(ctx, table)
  const opened = await scanKeys(ctx, table, options.tenant)
  const dataVersions: Record<string, number> = {}
  const indexVersions: Record<string, number> = {}
  const slotVersions: Record<string, Record<string, number>> = {}
  const failures: VerifyFailure[] = []
  let failed = 0
  let shredded = 0
  let plaintext = 0
  const maxListed = options.maxListed ?? 100
  const scan = await scanTable(
    ctx,
    table,
    opened.keys,
    {
      signal: options.signal,
      tenants: opened.tenants,
      ...(options.pageSize === undefined ? {} : { pageSize: options.pageSize }),
      onPage: (rows) =>
        report(options, {
          op: 'verify',
          table: table.physical,
          phase: 'rows',
          done: rows,
          total: undefined,
          unit: 'rows',
        }),
    },
    ({ key, check, shredded: gone }) => {
      if (gone) {
        shredded++
        return
      }
      for (const v of check.dataVersions.values()) dataVersions[v] = (dataVersions[v] ?? 0) + 1
      for (const v of check.indexVersions.values()) {
        if (v !== null) indexVersions[v] = (indexVersions[v] ?? 0) + 1
      }
      for (const [column, v] of check.slotVersions) {
        const counts = slotVersions[column] ?? {}
        slotVersions[column] = counts
        const at = v === null ? 'missing' : String(v)
        counts[at] = (counts[at] ?? 0) + 1
      }
      plaintext += check.plaintext.length
      if (check.failures.length > 0) {
        failed++
        if (failures.length < maxListed) failures.push({ key, problems: check.failures })
      }
    },
  ).finally(() => opened.close())
  const migrating: VerifyColumnResult[] = []
  for (const column of table.columns.values()) {
    if (column.migration === undefined || scan.stopped) continue
    migrating.push(await verifyColumn(ctx, table.physical, column.physical, options))
  }
  return {
    table: table.physical,
    rows: scan.rows,
    ok: failed === 0 && !scan.stopped && migrating.every((m) => m.ok),
    failed,
    shredded,
    failures,
    dataVersions,
    indexVersions,
    slotVersions,
    plaintext,
    migrating,
    stopped: scan.stopped || migrating.some((m) => m.stopped),
  }
}
