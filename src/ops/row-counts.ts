import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { type RunOptions, report } from './progress.js'
import type { KeySet, RowCheck } from './row-check.js'
import { scanTable } from './scan.js'
import type { KeyVersionStatus } from './status-types.js'
import type { TenantKeySets } from './tenant-key-sets.js'

/** Rows of a table counted by key version, as `status` reports them. @internal */
export interface RowCounts {
  readonly rows: number
  readonly scanned: number
  readonly estimated: boolean
  /** Rows holding at least one ciphertext under each data key version (estimates when sampled). */
  readonly byData: Readonly<Record<string, number>>
  readonly byIndex: Readonly<Record<string, number>>
  readonly plaintextRows: number
  readonly failedRows: number
  /** Rows of shredded tenants (per-tenant keys). */
  readonly shreddedRows: number
  /** Rows with a ciphertext or blind index not of their key set's active version (their tenant's). */
  readonly behindRows: number
  /**
   * True when the signal stopped the scan before its end: the counts are of the rows read
   * (`scanned`) only, and say nothing of a version being unused.
   */
  readonly stopped: boolean
  /** Scales a count of sampled rows to the table (identity when every row was read). */
  readonly est: (n: number) => number
}

/**
 * Reads a table (a sample of `sampleSize` rows, or every row when `exact`) and counts its rows
 * per data and index key version, each row under its key set (its tenant's, per-tenant keys).
 * Takes ownership of `keys`; `onCheck` sees each readable row's check.
 */
export async function countRows(
  ctx: OpsContext,
  table: TableInfo,
  keys: KeySet,
  tenants: TenantKeySets | undefined,
  options: RunOptions & { readonly exact?: boolean; readonly sampleSize?: number },
  onCheck?: (check: RowCheck) => void,
): Promise<RowCounts> {
  const byData: Record<string, number> = {}
  const byIndex: Record<string, number> = {}
  let plaintextRows = 0
  let failedRows = 0
  let shreddedRows = 0
  let behindRows = 0
  const scan = await scanTable(
    ctx,
    table,
    keys,
    {
      signal: options.signal,
      tenants,
      sample: options.exact === true ? undefined : (options.sampleSize ?? 2000),
      onPage: (rows) =>
        report(options, {
          op: 'status',
          table: table.physical,
          phase: 'rows',
          done: rows,
          total: undefined,
          unit: 'rows',
        }),
    },
    ({ check, shredded, keys: own }) => {
      if (shredded) {
        shreddedRows++
        return
      }
      for (const v of new Set(check.dataVersions.values())) byData[v] = (byData[v] ?? 0) + 1
      for (const v of new Set(check.indexVersions.values()))
        if (v !== null) byIndex[v] = (byIndex[v] ?? 0) + 1
      onCheck?.(check)
      if (check.plaintext.length > 0) plaintextRows++
      if (check.failures.length > 0) failedRows++
      if (
        own !== undefined &&
        ([...check.dataVersions.values()].some((v) => v !== own.activeData) ||
          [...check.indexVersions.values()].some((v) => v !== null && v !== own.activeIndex))
      )
        behindRows++
    },
  )
  const scale = scan.sampled && scan.rows > 0 ? scan.total / scan.rows : 1
  const est = (n: number) => (scale === 1 ? n : Math.round(n * scale))
  const scaled = (counts: Record<string, number>) =>
    Object.fromEntries(Object.entries(counts).map(([v, n]) => [v, est(n)]))
  return {
    rows: scan.total,
    scanned: scan.rows,
    estimated: scan.sampled,
    byData: scaled(byData),
    byIndex: scaled(byIndex),
    plaintextRows: est(plaintextRows),
    failedRows: est(failedRows),
    shreddedRows: est(shreddedRows),
    behindRows: est(behindRows),
    stopped: scan.stopped,
    est,
  }
}

/**
 * What a table's row counts ask for: rows still on versions other than the active ones
 * (re-encrypt), decrypt-only versions no row uses (retire), plaintext and failing rows. `tenant`
 * is ` --tenant X` for one tenant's counts.
 * @internal
 */
export function versionAttention(
  physical: string,
  tenant: string,
  keys: readonly KeyVersionStatus[],
  counts: RowCounts,
): string[] {
  const attention: string[] = []
  const approx = counts.estimated ? 'about ' : ''
  for (const purpose of ['data', 'index'] as const) {
    const byVersion = purpose === 'data' ? counts.byData : counts.byIndex
    const active = keys.find((k) => k.purpose === purpose && k.state === 'active')?.version
    for (const [v, n] of Object.entries(byVersion)) {
      if (Number(v) !== active && n > 0)
        attention.push(
          `${approx}${n} rows still on ${purpose} version ${v}: run \`kfe reencrypt ${physical}${tenant}\``,
        )
    }
    // A stopped count has not seen every row: no version is known unused.
    for (const k of counts.stopped ? [] : keys) {
      if (k.purpose === purpose && k.state === 'decrypt-only' && (byVersion[k.version] ?? 0) === 0)
        attention.push(
          `${purpose} version ${k.version} ${counts.estimated ? 'appears unused (sampled)' : 'is unused'}: \`kfe retire ${physical}${tenant} --${purpose} ${k.version}\``,
        )
    }
  }
  attention.push(...rowAttention(physical, tenant, counts))
  return attention
}

/**
 * What the plaintext and failing rows of a table's counts ask for (per-tenant tables over every
 * tenant too).
 * @internal
 */
export function rowAttention(physical: string, tenant: string, counts: RowCounts): string[] {
  const attention: string[] = []
  const approx = counts.estimated ? 'about ' : ''
  if (counts.stopped)
    attention.push(
      `the row count was stopped after ${counts.scanned} of ${counts.rows} rows: the counts are partial; run \`kfe status ${physical}${tenant}${counts.estimated ? '' : ' --exact'}\` again`,
    )
  if (counts.plaintextRows > 0)
    attention.push(
      `${approx}${counts.plaintextRows} rows hold plaintext values in columns declared migratingFromPlaintext: \`kfe reencrypt ${physical}${tenant}\` encrypts those that are text (UTF-8, within maxBytes); \`kfe verify ${physical}${tenant}\` lists the others`,
    )
  if (counts.failedRows > 0)
    attention.push(
      `${approx}${counts.failedRows} rows fail to decrypt or to match their index: run \`kfe verify ${physical}${tenant}\``,
    )
  return attention
}

/** The parts of a table's status that its row counts give. @internal */
export function counted(table: TableInfo, counts: RowCounts) {
  return {
    table: table.physical,
    logicalTable: table.logical,
    rows: counts.rows,
    scanned: counts.scanned,
    estimated: counts.estimated,
    rowsByDataVersion: counts.byData,
    rowsByIndexVersion: counts.byIndex,
    plaintextRows: counts.plaintextRows,
    failedRows: counts.failedRows,
    stopped: counts.stopped,
  } as const
}

/** The parts of a table's status that a status without a row scan leaves at zero. @internal */
export function unscanned(table: TableInfo) {
  return {
    table: table.physical,
    logicalTable: table.logical,
    rows: 0,
    scanned: 0,
    estimated: false,
    rowsByDataVersion: {},
    rowsByIndexVersion: {},
    slots: [],
    plaintextRows: 0,
    failedRows: 0,
    stopped: false,
  } as const
}
