import { OperationError } from '../errors.js'
import { parseTenantKeyName, SCOPE_SEPARATOR } from '../schema/key-scope.js'
import type { OpsContext } from './context.js'
import { checkJobOptions, type JobResult } from './job-engine.js'
import { report } from './progress.js'
import { reencrypt } from './reencrypt.js'
import { type RotateOptions, type RotateResult, rotate, waitTtl } from './rotate.js'

/** Outcome of `rotateTenants`. */
export interface RotateTenantsResult {
  readonly table: string
  /** One rotation per tenant that has live keys (destroyed tenants are skipped), in key-name order. */
  readonly tenants: readonly (RotateResult & { readonly tenant: string })[]
  /**
   * The one re-encryption over the table that moved each row onto its tenant's new version (after
   * every tenant was activated and the metadata TTL passed); undefined with `reencrypt: false`, or
   * when interrupted before it.
   */
  readonly reencrypt: JobResult | undefined
  /** True when the signal stopped it before every tenant was through: `left` says what to run. */
  readonly interrupted: boolean
  /**
   * What is left to do, in words, when `interrupted`: the same call again while versions are
   * staged, `kfe reencrypt` once every tenant's new version is active (the same call then would
   * rotate every tenant once more).
   */
  readonly left: string | undefined
}

/**
 * Rotates the data or index key of every tenant of a table with per-tenant keys (`kfe rotate
 * --all-tenants`), in two passes so the metadata TTL is waited about once, not once per tenant:
 * first every tenant's next version is staged, then each is activated (each waits only what is
 * left of the TTL since its own staging). Then, unless `reencrypt` is false, the metadata TTL is
 * waited once more and ONE re-encryption job runs over the table (each row onto its own tenant's
 * active versions; not one job per tenant, which would read the table once per tenant).
 *
 * Stopped by the signal, it leaves one of two states, and `left` says which. While staging, or
 * before the first activation: the same call again stages what is missing (a tenant with a staged
 * version gets no other) and activates every staged version. Once a tenant is activated the pass
 * runs to its end despite the signal (the rest wait at most what is left of their TTL): a stop
 * between two activations would leave tenants on a new version beside tenants with a staged one,
 * and a second call could not tell the first from tenants not rotated yet, and would rotate them
 * once more. Stopped after that (waiting the TTL, or in the re-encryption), every tenant's new
 * version is active: `kfe reencrypt` finishes. A process killed between two activations (no
 * signal) leaves that mixed state: the same call then rotates the tenants already activated once
 * more, which costs a re-encryption of their rows and loses nothing.
 * @throws OperationError `OPS_INVALID` when the table has no per-tenant keys
 */
export async function rotateTenants(
  ctx: OpsContext,
  tableName: string,
  options: Omit<RotateOptions, 'tenant'>,
): Promise<RotateTenantsResult> {
  const table = ctx.table(tableName)
  if (table.keyScope === undefined) {
    throw new OperationError('OPS_INVALID', `${table.physical} has no per-tenant keys (keyScope).`, {
      table: table.logical,
    })
  }
  if (options.reencrypt !== false) checkJobOptions(options)
  const prefix = `${table.logical}${SCOPE_SEPARATOR}${table.keyScope.column}=`
  const all = await ctx.store.listAll()
  const tenants = [
    ...new Set(
      all
        .filter(
          (k) => k.logicalTable.startsWith(prefix) && k.purpose === options.purpose && k.state === 'active',
        )
        .map((k) => parseTenantKeyName(k.logicalTable)?.tenant)
        .filter((t): t is string => t !== undefined),
    ),
  ]
  const staged = new Set(
    all
      .filter(
        (k) => k.logicalTable.startsWith(prefix) && k.purpose === options.purpose && k.state === 'staged',
      )
      .map((k) => k.logicalTable),
  )
  // Pass 1: stage a version for every tenant without a staged one.
  for (const [i, tenant] of tenants.entries()) {
    if (options.signal?.aborted === true)
      return {
        table: table.physical,
        tenants: [],
        reencrypt: undefined,
        interrupted: true,
        left: `versions are staged for ${i} of ${tenants.length} tenants: run \`kfe rotate ${table.physical} --all-tenants --${options.purpose}\` again to stage the rest and activate them`,
      }
    if (staged.has(`${prefix}${encodeURIComponent(tenant)}`)) continue
    await rotate(ctx, table.physical, { ...options, tenant, activateLater: true })
    report(options, {
      op: 'rotate',
      table: table.physical,
      phase: 'staging',
      done: i + 1,
      total: tenants.length,
      unit: 'keys',
    })
  }
  if (options.activateLater === true || options.dryRun === true) {
    const results = []
    for (const tenant of tenants)
      results.push({
        ...(await rotate(ctx, table.physical, { ...options, tenant, activateLater: true })),
        tenant,
      })
    return {
      table: table.physical,
      tenants: results,
      reencrypt: undefined,
      interrupted: false,
      left: undefined,
    }
  }
  // Pass 2: activate each; the first waits what is left of the TTL, the others hardly at all.
  // Only the first activation may be stopped (see above): the others are given no signal.
  const { signal: _signal, ...unstoppable } = options
  const results: (RotateResult & { tenant: string })[] = []
  for (const tenant of tenants) {
    const result = await rotate(ctx, table.physical, {
      ...(results.length === 0 ? options : unstoppable),
      tenant,
      reencrypt: false,
    })
    results.push({ ...result, tenant })
    if (result.interrupted && result.state === 'staged')
      return {
        table: table.physical,
        tenants: results,
        reencrypt: undefined,
        interrupted: true,
        left: `every tenant's new version is staged, none active: run \`kfe rotate ${table.physical} --all-tenants --${options.purpose}\` again to activate them`,
      }
  }
  const done = { table: table.physical, tenants: results }
  if (options.reencrypt === false || results.length === 0)
    return { ...done, reencrypt: undefined, interrupted: false, left: undefined }
  // Processes keep writing with the former versions until they reload metadata.
  if (await waitTtl(table.physical, ctx.metadataTtlMs + ctx.ttlMarginMs, options))
    return {
      ...done,
      reencrypt: undefined,
      interrupted: true,
      left: allTenantsReencryptionLeft(table.physical, undefined),
    }
  const job = (await reencrypt(ctx, table.physical, { ...options, dryRun: false })) as JobResult
  const interrupted = job.remainingBatches > 0
  return {
    ...done,
    reencrypt: job,
    interrupted,
    left: interrupted ? allTenantsReencryptionLeft(table.physical, job.remainingBatches) : undefined,
  }
}

/**
 * `left` of a rotation of every tenant stopped once every new version was active: what is left is
 * the re-encryption (`remaining`: its batches left; undefined before it began). The same rotation
 * again would rotate every tenant once more. @internal
 */
export function allTenantsReencryptionLeft(table: string, remaining: number | undefined): string {
  const batches =
    remaining === undefined
      ? 'the re-encryption has not begun'
      : `${remaining} re-encryption batches are left`
  return `every tenant's new version is active; ${batches}: run \`kfe reencrypt ${table}\` to finish (rotating again would rotate every tenant once more)`
}
