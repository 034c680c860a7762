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
  /** True when the signal stopped it before every tenant was through: run it again. */
  readonly interrupted: boolean
}

/**
 * Rotates the data or index key of every tenant of a table with per-tenant keys (`kfe rotate
 * --all-tenants`), in two passes so the metadata TTL is waited about once, not once per tenant:
 * first every tenant's next version is staged, then each is activated (each waits only what is
 * left of the TTL since its own staging). Interrupted, a second call resumes: a tenant whose
 * version is staged is activated, one already rotated gets no further version only if it has a
 * staged one, so run it once per rotation. Then, unless `reencrypt` is false, the metadata TTL is
 * waited once more and ONE re-encryption job runs over the table (each row onto its own tenant's
 * active versions; not one job per tenant, which would read the table once per tenant).
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
      return { table: table.physical, tenants: [], reencrypt: undefined, interrupted: true }
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
    return { table: table.physical, tenants: results, reencrypt: undefined, interrupted: false }
  }
  // Pass 2: activate each; the first waits what is left of the TTL, the others hardly at all.
  const results: (RotateResult & { tenant: string })[] = []
  for (const tenant of tenants) {
    const result = await rotate(ctx, table.physical, { ...options, tenant, reencrypt: false })
    results.push({ ...result, tenant })
    if (result.interrupted && result.state === 'staged')
      return { table: table.physical, tenants: results, reencrypt: undefined, interrupted: true }
  }
  if (options.reencrypt === false || results.length === 0)
    return { table: table.physical, tenants: results, reencrypt: undefined, interrupted: false }
  // Processes keep writing with the former versions until they reload metadata.
  if (await waitTtl(table.physical, ctx.metadataTtlMs + ctx.ttlMarginMs, options))
    return { table: table.physical, tenants: results, reencrypt: undefined, interrupted: true }
  const job = (await reencrypt(ctx, table.physical, { ...options, dryRun: false })) as JobResult
  return { table: table.physical, tenants: results, reencrypt: job, interrupted: job.remainingBatches > 0 }
}
