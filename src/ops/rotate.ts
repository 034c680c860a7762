import { type ErrorCode, KeyError, KeyProviderError, OperationError } from '../errors.js'
import type { KeyPurpose, KeyRef } from '../keys/key-provider.js'
import { proveActiveKeys } from '../keys/key-ring-init.js'
import { tenantKeyNameOf } from '../schema/key-scope.js'
import type { TableInfo } from '../schema/schema.js'
import type { OpsContext } from './context.js'
import { checkJobOptions, type JobOptions, type JobResult } from './job-engine.js'
import { msSinceKeyEvent, recordKeyEvent } from './key-events.js'
import { newWrappedKey } from './new-key.js'
import { keyColumn } from './primary-key.js'
import { type RunOptions, report, sleep } from './progress.js'
import { reencrypt } from './reencrypt.js'
import { assertSlotComplete, assertSlotFree, nextIndexVersion, slotColumns } from './rotation-slots.js'

/** Options of `rotate`. */
export interface RotateOptions extends Omit<JobOptions, 'joinOnly'> {
  readonly purpose: KeyPurpose
  /**
   * Stage the new version and return without waiting; a second `rotate` activates it once the
   * metadata TTL has passed since staging. @default false
   */
  readonly activateLater?: boolean
  /** Run the re-encryption after activating. @default true */
  readonly reencrypt?: boolean
  /** Report what would happen; change nothing. @default false */
  readonly dryRun?: boolean
  /**
   * A table with per-tenant keys (`keyScope`): the tenant whose key is rotated (`kfe rotate
   * --tenant`). Required for such a table (or `rotateTenants` for all). Its rows are then
   * re-encrypted (only its rows: `reencrypt` with this tenant), unless `reencrypt` is false.
   */
  readonly tenant?: string | number | bigint
}

/** Outcome of `rotate`. */
export interface RotateResult {
  readonly table: string
  readonly purpose: KeyPurpose
  /** The version staged or activated by this call. */
  readonly version: number
  /** The active version before this call. */
  readonly previous: number
  /** `staged`: waiting to be activated (a second call does it); `active`: in use for writes. */
  readonly state: 'staged' | 'active'
  /** When the staged version may be activated (every process has seen it by then). */
  readonly activateAfter: Date | undefined
  readonly reencrypt: JobResult | undefined
  readonly dryRun: boolean
  /**
   * True when the signal stopped the rotation before it was through (while waiting the metadata
   * TTL, in a rotation slot's backfill, or with re-encryption batches left): `left` says what remains (staged: the same call
   * resumes; active: `reencrypt` finishes). The CLI exits 2.
   */
  readonly interrupted: boolean
  /** What is left to do, in words, when `interrupted` (or staged with `activateLater`). */
  readonly left: string | undefined
}

/**
 * Rotates a table's data or index key (DESIGN.md §5): generates a key, wraps it under every KEK,
 * proves each wrapping unwraps, stages it as the next version, waits the key metadata TTL (so every
 * process can read and search with it before anything is written with it), activates it, waits the
 * TTL again (so every process writes with it), then re-encrypts the table (unless told not to).
 * Both waits add `ttlMarginMs`; the first is measured by the database's clock from the staging.
 * Interrupted or `activateLater`, a second call finds the staged version and continues.
 * @throws KeyError `KEY_NOT_FOUND` when the table has no key yet (`kfe init`)
 * @throws KeyProviderError `UNWRAP_FAILED` (KeyError `KEY_CHECK_FAILED`) when an active key of
 *   the table does not unwrap under the configured KEKs: nothing is staged (dry run too)
 * @throws OperationError `ROTATION_REFUSED` when the staged key does not carry the version it was
 *   wrapped for, or the provider refuses it (`UNWRAP_FAILED`, `KEY_CHECK_FAILED`: it is retired
 *   at once, never activated)
 * @throws KeyProviderError `PROVIDER_UNAVAILABLE`, … when the staged key could not be proven for
 *   want of an answer: it stays staged, and the next run proves it again
 * @throws OperationError `JOB_PAUSED` from the re-encryption when the key provider fails
 */
export async function rotate(
  ctx: OpsContext,
  tableName: string,
  options: RotateOptions,
): Promise<RotateResult> {
  const table = ctx.table(tableName)
  // The re-encryption's options, checked before a key is staged (found wrong by the job, they
  // left the new version active and the rows on the old one).
  if (options.reencrypt !== false) checkJobOptions(options)
  const { purpose } = options
  const keyName = rotatedKeyName(ctx, table, options)
  const tenantOnly = keyName !== table.logical
  const ref = (version: number) => ({ logicalTable: keyName, purpose, version })
  const versions = await ctx.store.list(keyName, purpose)
  const previous = versions.find((k) => k.state === 'active')?.version
  if (previous === undefined)
    throw new KeyError('KEY_NOT_FOUND', `${keyName} has no active ${purpose} key: run \`kfe init\` first.`, {
      table: table.logical,
    })
  // The KEKs configured here must open the keys there are (as `kfe init` checks): run with
  // another KEK (another environment's, or another key behind the same id), a rotation would
  // stage and activate a version wrapped under it, which the application cannot unwrap, and only
  // then fail, in the re-encryption. Refused before anything is staged, dry run included.
  await proveActiveKeys((name, p) => ctx.ring.activeKey(name, p), keyName)
  // The re-encryption's paging column, checked before anything is staged: found unusable only
  // by the re-encryption, it left the new version active and the rows on the old one.
  if (options.reencrypt !== false) await keyColumn(ctx, table)
  const base = {
    table: table.physical,
    purpose,
    previous,
    dryRun: options.dryRun === true,
    interrupted: false,
    left: undefined,
  }
  const tenantArg = tenantOnly ? ` --tenant ${String(options.tenant)}` : ''
  const command = `kfe rotate ${table.physical} --${purpose}${tenantArg}`
  const again = `run \`${command}\` again to`
  const stopped = (
    version: number,
    state: 'staged' | 'active',
    left: string,
    activateAfter?: Date,
    job?: JobResult,
  ) => ({
    ...base,
    version,
    state,
    activateAfter,
    reencrypt: job,
    interrupted: true,
    left,
  })
  let staged = versions.find((k) => k.state === 'staged')
  if (staged === undefined) {
    const last = versions.at(-1)?.version ?? 0
    const skips = purpose === 'index' && !tenantOnly
    const version = skips ? await nextIndexVersion(ctx, table, last) : last + 1
    if (options.dryRun === true) {
      return { ...base, version, state: 'staged', activateAfter: undefined, reencrypt: undefined }
    }
    report(options, {
      op: 'rotate',
      table: table.physical,
      phase: 'staging',
      done: 0,
      total: undefined,
      unit: 'keys',
    })
    if (purpose === 'index' && !tenantOnly) await assertSlotFree(ctx, table, version)
    const { wrappings, checkValue } = await newWrappedKey(ctx, ref(version))
    // The version is passed so the store refuses (KEY_VERSION_MISMATCH) rather than storing a key
    // wrapped for `version` under another number when a concurrent rotation staged one meanwhile.
    staged = await ctx.store
      .stage(keyName, purpose, wrappings, version, checkValue, version === last + 2)
      .catch((error: unknown) => {
        if (!(error instanceof KeyError && error.code === 'KEY_VERSION_MISMATCH')) throw error
        throw new OperationError(
          'ROTATION_REFUSED',
          `The ${purpose} key generated for version ${version} of ${keyName} was not stored: another version was staged meanwhile (a concurrent rotation?); nothing was activated. Run rotate again.`,
          { table: table.logical, cause: error },
        )
      })
    if (staged.version !== version) {
      // Another rotation staged a version meanwhile: our key is bound to `version`, not to the one stored.
      await ctx.store.setState(keyName, purpose, staged.version, 'retired')
      throw new OperationError(
        'ROTATION_REFUSED',
        `The ${purpose} key generated for version ${version} of ${keyName} was stored as version ${staged.version} (a concurrent rotation?); it was retired, nothing was activated.`,
        { table: table.logical },
      )
    }
    await recordKeyEvent(ctx, 'staging', keyName, purpose, version)
  }
  // Proven before anything is activated, whoever staged it (this call, an earlier interrupted
  // one, or another tool): a key that does not unwrap, or fails its check value, would make every
  // write to the table fail once active.
  if (options.dryRun !== true) await proveStaged(ctx, ref(staged.version), command)
  // Measured by the database's clock from when the version was staged (or first seen staged, when
  // another tool staged it), plus the margin: no client clock enters the wait.
  const sinceStaged =
    options.dryRun === true ? 0 : await msSinceKeyEvent(ctx, 'staging', keyName, purpose, staged.version)
  const wait = Math.max(0, ctx.metadataTtlMs + ctx.ttlMarginMs - sinceStaged)
  const activateAfter = new Date(Date.now() + wait)
  if (options.activateLater === true || options.dryRun === true) {
    return {
      ...base,
      version: staged.version,
      state: 'staged',
      activateAfter,
      reencrypt: undefined,
      left:
        options.dryRun === true ? undefined : `${again} activate it (after ${activateAfter.toISOString()})`,
    }
  }
  if (wait > 0) {
    if (await waitTtl(table.physical, wait, options)) {
      return stopped(
        staged.version,
        'staged',
        `version ${staged.version} is staged, not active: ${again} activate it and re-encrypt`,
        activateAfter,
      )
    }
  }
  if (purpose === 'index' && slotColumns(table, staged.version).length > 0 && !tenantOnly) {
    // Rotation slots: every process now fills the staged version's column on writes; the job
    // fills it for the other rows, and the cut-over waits until it is complete.
    const job =
      options.reencrypt === false ? undefined : ((await reencrypt(ctx, table.physical, options)) as JobResult)
    if (options.signal?.aborted === true) {
      return stopped(
        staged.version,
        'staged',
        backfillLeft(table.physical, staged.version, job?.remainingBatches),
        activateAfter,
        job,
      )
    }
    await assertSlotComplete(ctx, table, staged.version)
  }
  await ctx.store.activate(keyName, purpose, staged.version)
  await recordKeyEvent(ctx, 'activation', keyName, purpose, staged.version)
  ctx.ring.refresh()
  report(options, {
    op: 'rotate',
    table: table.physical,
    phase: 'activated',
    done: 1,
    total: 1,
    unit: 'keys',
  })
  if (options.reencrypt === false) {
    return {
      ...base,
      version: staged.version,
      state: 'active',
      activateAfter,
      reencrypt: undefined,
      left: undefined,
    }
  }
  // Processes keep writing with the former version until they reload metadata.
  if (await waitTtl(table.physical, ctx.metadataTtlMs + ctx.ttlMarginMs, options)) {
    return stopped(
      staged.version,
      'active',
      `version ${staged.version} is active; no row was re-encrypted yet: run \`kfe reencrypt ${table.physical}${tenantArg}\` (another \`kfe rotate\` would stage a further version)`,
      activateAfter,
    )
  }
  const job = (await reencrypt(ctx, table.physical, {
    ...options,
    ...(tenantOnly ? { tenant: options.tenant } : {}),
  })) as JobResult
  const result = { ...base, version: staged.version, state: 'active' as const, activateAfter, reencrypt: job }
  if (job.remainingBatches === 0) return result
  return {
    ...result,
    interrupted: true,
    left: reencryptionLeft(
      table.physical,
      staged.version,
      job.remainingBatches,
      tenantOnly ? options.tenant : undefined,
    ),
  }
}

/**
 * `left` of a rotation stopped in its re-encryption with `remaining` batches left (`tenant`: a
 * rotation of that tenant's key). @internal
 */
export function reencryptionLeft(
  table: string,
  version: number,
  remaining: number,
  tenant?: string | number | bigint,
): string {
  const tenantArg = tenant === undefined ? '' : ` --tenant ${String(tenant)}`
  return `version ${version} is active; ${remaining} re-encryption batches are left: run \`kfe reencrypt ${table}${tenantArg}\` to finish`
}

/**
 * `left` of an index rotation stopped in its rotation slot's backfill (`remaining`: its batches
 * left, when it had begun). @internal
 */
export function backfillLeft(table: string, version: number, remaining: number | undefined): string {
  const batches = remaining === undefined ? '' : `; ${remaining} backfill batches are left`
  return `version ${version} is staged, not active: its rotation slot is not filled yet${batches}: run \`kfe rotate ${table} --index\` again to finish the backfill and activate it`
}

/**
 * Waits `ms` of a metadata-TTL wait, reported as a progress phase.
 * @returns true when the signal stopped the wait
 * @internal
 */
export async function waitTtl(table: string, ms: number, options: RunOptions): Promise<boolean> {
  report(options, { op: 'rotate', table, phase: 'waiting for metadata TTL', done: 0, total: ms, unit: 'ms' })
  return sleep(ms, options.signal)
}

/**
 * Answers about a staged key that prove it bad: it does not unwrap, or unwraps to another key
 * than its check value's. Anything else (the provider or the key store did not answer, or refused
 * access) says nothing about the key.
 */
const KEY_REFUSED: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'UNWRAP_FAILED',
  'PROVIDER_INVALID_CIPHERTEXT',
  'KEY_CHECK_FAILED',
])

/**
 * Unwraps the staged version (and checks its check value) before it is activated. A key the
 * provider refuses is retired, never to be activated; any other failure (an outage, throttling,
 * the key store) leaves it staged, to be proven by the next run: retiring it would burn a good
 * version, a concurrent rotator's too.
 * @throws OperationError `ROTATION_REFUSED` when the key is refused (it was retired)
 * @throws KeyProviderError, KeyError with the failure's code (`PROVIDER_UNAVAILABLE`, …) otherwise
 */
async function proveStaged(ctx: OpsContext, keyRef: KeyRef, command: string): Promise<void> {
  const { logicalTable, purpose, version } = keyRef
  try {
    ctx.ring.refresh()
    await ctx.ring.key(keyRef)
  } catch (error) {
    if (!(error instanceof KeyError)) throw error
    // Shredded meanwhile (its tenant's keys destroyed): nothing to prove or to run again.
    if (error.code === 'KEY_DESTROYED' && !(error instanceof KeyProviderError)) throw error
    if (!KEY_REFUSED.has(error.code)) {
      const message = `Staged ${purpose} version ${version} of ${logicalTable} could not be proven (${error.code}): it stays staged, nothing was activated. Run \`${command}\` again once the key provider and the key store answer.`
      const options = { cause: error, table: error.table ?? logicalTable }
      throw error instanceof KeyProviderError
        ? new KeyProviderError(error.code, message, { ...options, providerId: error.providerId })
        : new KeyError(error.code, message, options)
    }
    await ctx.store.setState(logicalTable, purpose, version, 'retired')
    throw new OperationError(
      'ROTATION_REFUSED',
      `Staged ${purpose} version ${version} of ${logicalTable} does not unwrap (${error.code}); it was retired, nothing was activated.`,
      { table: logicalTable, cause: error },
    )
  }
}

/**
 * The key name a rotation works on: the table's, or the named tenant's.
 * @throws OperationError `OPS_INVALID` for a table with per-tenant keys and no tenant, a tenant of
 *   a table without, or a rotation-slot index of a table with per-tenant keys
 */
function rotatedKeyName(ctx: OpsContext, table: TableInfo, options: RotateOptions): string {
  if (table.keyScope === undefined && options.tenant === undefined) return table.logical
  const invalid = (why: string) => new OperationError('OPS_INVALID', why, { table: table.logical })
  if (table.keyScope === undefined)
    throw invalid(`${table.physical} has no per-tenant keys (keyScope): rotate it without --tenant.`)
  if (options.tenant === undefined)
    throw invalid(
      `${table.physical} has a key per tenant (keyScope ${table.keyScope.column}): name one with --tenant, or rotate every tenant with --all-tenants.`,
    )
  if (options.purpose === 'index' && slotColumns(table, 2).length > 0)
    throw invalid(`${table.physical} has per-tenant keys and a rotation-slot index: not supported yet.`)
  return tenantKeyNameOf(ctx.schema, table.physical, options.tenant)
}
