import { KeyError, OperationError } from '../errors.js'
import type { KeyPurpose } from '../keys/key-provider.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { msSinceKeyEvent } from './key-events.js'
import { type RunOptions, report } from './progress.js'
import { clearSlot } from './rotation-slots.js'
import { scanTable } from './scan.js'
import { scanKeys } from './tenant-key-sets.js'

/** Options of `retire`. */
export interface RetireOptions extends RunOptions {
  readonly purpose: KeyPurpose
  readonly version: number
  /**
   * Retire even though rows still use the version (they stay decryptable; an index version stops
   * being searched), or before the metadata TTL has passed since its successor's activation.
   */
  readonly force?: boolean
  /** Count the rows and report; change nothing. */
  readonly dryRun?: boolean
  /**
   * A table with per-tenant keys (`keyScope`): the tenant whose version is retired (required for
   * such a table); only its rows are counted.
   */
  readonly tenant?: string | number | bigint
}

/** Outcome of `retire`. */
export interface RetireResult {
  readonly table: string
  readonly purpose: KeyPurpose
  readonly version: number
  /** Rows still using the version (exact count over every row; a partial count when `stopped`). */
  readonly rows: number
  readonly retired: boolean
  /**
   * True when the signal stopped the count before its end: nothing was changed, `rows` counts only
   * the rows read, and the refusals (`RETIRE_REFUSED`, `RETIRE_TOO_EARLY`) were not decided.
   */
  readonly stopped: boolean
  readonly forced: boolean
  /** True when `dryRun` was set: nothing was changed. */
  readonly dryRun: boolean
  /** Milliseconds still to wait after the successor's activation (0: none); see `RETIRE_TOO_EARLY`. */
  readonly waitMs: number
}

/**
 * Retires a key version: it is no longer searched (index) and expected unused (data; it still
 * decrypts, so no data is ever lost). Counts, over every row, the rows still using it first:
 * data versions from the ciphertext headers, index versions by recomputing each blind index.
 * Refused, too, until the key ring's metadata TTL plus `ttlMarginMs` has passed since the active
 * version was activated (by the database's clock): until then an application instance may still
 * write with the version being retired, after the count said none uses it.
 * @throws OperationError `RETIRE_REFUSED` (with `rows`) when rows still use it and `force` is not set
 * @throws OperationError `RETIRE_TOO_EARLY` (with `waitMs`) before that time, unless `force`
 * @throws KeyError `KEY_STATE_INVALID` when it is the active version; `KEY_NOT_FOUND` when it does not exist
 */
export async function retire(
  ctx: OpsContext,
  tableName: string,
  options: RetireOptions,
): Promise<RetireResult> {
  const table = ctx.table(tableName)
  if (table.keyScope !== undefined && options.tenant === undefined)
    throw new OperationError(
      'OPS_INVALID',
      `${table.physical} has a key per tenant (keyScope ${table.keyScope.column}): name the tenant whose version to retire (--tenant).`,
      { table: table.logical },
    )
  const opened = await scanKeys(ctx, table, options.tenant)
  try {
    return await retireCounted(ctx, table, options, opened)
  } finally {
    opened.close()
  }
}

async function retireCounted(
  ctx: OpsContext,
  table: TableInfo,
  options: RetireOptions,
  opened: Awaited<ReturnType<typeof scanKeys>>,
): Promise<RetireResult> {
  const { purpose, version } = options
  const keyName = opened.tenants?.subject ?? table.logical
  const tenantArg = options.tenant === undefined ? '' : ` --tenant ${String(options.tenant)}`
  const target = (await ctx.store.list(keyName, purpose)).find((k) => k.version === version)
  if (target === undefined)
    throw new KeyError('KEY_NOT_FOUND', `No ${purpose} version ${version} for ${keyName}.`, {
      table: table.logical,
    })
  if (target.state === 'active') {
    throw new KeyError(
      'KEY_STATE_INVALID',
      `${purpose} version ${version} of ${keyName} is the active one: rotate to a new version first.`,
      { table: table.logical },
    )
  }
  // Timed before the count: an instance whose key metadata predates the activation may write with
  // the version until the metadata TTL has passed, and only a count that starts after that (plus
  // the margin) is sure to see its rows. Timed after the count, a long count let the wait pass
  // while rows it had already passed were written with the version.
  let waitMs = 0
  const active = (await ctx.store.list(keyName, purpose)).find((k) => k.state === 'active')
  // A version that was never active (staged, refused) was never written with: no wait.
  if (target.state !== 'staged' && active !== undefined) {
    const since = await msSinceKeyEvent(ctx, 'activation', keyName, purpose, active.version, {
      record: options.dryRun !== true,
    })
    waitMs = Math.max(0, Math.ceil(ctx.metadataTtlMs + ctx.ttlMarginMs - since))
  }
  let rows = 0
  const scan = await scanTable(
    ctx,
    table,
    opened.keys,
    {
      signal: options.signal,
      tenants: opened.tenants,
      onPage: (n) =>
        report(options, {
          op: 'retire',
          table: table.physical,
          phase: 'counting',
          done: n,
          total: undefined,
          unit: 'rows',
        }),
    },
    ({ check }) => {
      const versions = purpose === 'data' ? check.dataVersions.values() : check.indexVersions.values()
      for (const v of versions) {
        if (v === version) {
          rows++
          return
        }
      }
    },
  )
  // A stopped count decides nothing: a partial count may miss rows that still use the version.
  const stopped = scan.stopped
  const result = {
    table: table.physical,
    purpose,
    version,
    rows,
    forced: !stopped && (rows > 0 || waitMs > 0) && options.force === true,
    dryRun: options.dryRun === true,
    waitMs,
    stopped,
  }
  if (stopped) return { ...result, retired: false }
  if (rows > 0 && options.force !== true) {
    throw new OperationError(
      'RETIRE_REFUSED',
      `${rows} rows of ${table.physical} still use ${purpose} version ${version}: run \`kfe reencrypt ${table.physical}${tenantArg}\` first, or force it.`,
      { table: table.logical, rows },
    )
  }
  if (waitMs > 0 && options.force !== true) {
    throw new OperationError(
      'RETIRE_TOO_EARLY',
      `${purpose} version ${active?.version} of ${keyName} was activated less than the metadata TTL (${ctx.metadataTtlMs} ms) plus ${ctx.ttlMarginMs} ms ago: an application instance may still write with version ${version}. Retry in ${Math.ceil(waitMs / 1000)} s, or force it.`,
      { table: table.logical, waitMs },
    )
  }
  if (options.dryRun === true) return { ...result, retired: false }
  // Stopped after the count, before the change: nothing changed either.
  if (options.signal?.aborted) return { ...result, stopped: true, retired: false }
  await ctx.store.setState(keyName, purpose, version, 'retired')
  ctx.ring.refresh()
  // An index with a rotation slot: the retired version's column is free for the next version.
  if (purpose === 'index' && keyName === table.logical) await clearSlot(ctx, table, version)
  return { ...result, retired: true }
}
