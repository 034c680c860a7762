import { defineCommand } from 'citty'
import { backfillLeft, type RotateResult, reencryptionLeft } from '../../ops/rotate.js'
import { allTenantsReencryptionLeft, type RotateTenantsResult } from '../../ops/rotate-tenants.js'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { type JobWithin, shareJob } from '../processes.js'
import { commonArgs, dryRunArg, runCommand, usageError } from '../run-command.js'
import { jobArgs, jobOptions, processesArg } from './job-args.js'
import { describeJob, jobExit } from './reencrypt.js'

/** `kfe rotate <table> --data | --index`: stage, prove, wait, activate, re-encrypt. */
export const rotateCommand = defineCommand({
  meta: {
    name: 'rotate',
    description: 'Rotate a table data or index key: stage, wait the metadata TTL, activate, re-encrypt',
  },
  args: {
    ...commonArgs,
    ...dryRunArg,
    ...jobArgs,
    ...processesArg,
    table: { type: 'positional', required: true, description: 'The table' },
    data: { type: 'boolean', description: 'Rotate the data key', default: false },
    index: { type: 'boolean', description: 'Rotate the index key', default: false },
    tenant: { type: 'string', description: "Tables with per-tenant keys: rotate this tenant's key" },
    'all-tenants': {
      type: 'boolean',
      description: 'Tables with per-tenant keys: rotate every tenant (stage all, then activate each)',
      default: false,
    },
    'activate-later': { type: 'boolean', description: 'Stage only; a second call activates', default: false },
    reencrypt: {
      type: 'boolean',
      description: 'Re-encrypt after activating (--no-reencrypt to skip)',
      default: true,
    },
  },
  run: ({ args }) =>
    runCommand(
      args,
      (ops, run, out, opened): Promise<RotateResult | RotateTenantsResult> => {
        if (args.data === args.index) throw usageError('Give exactly one of --data or --index.')
        if (args['all-tenants'] && args.tenant !== undefined)
          throw usageError('Give --tenant or --all-tenants, not both.')
        if (!args.reencrypt && args.processes !== undefined)
          throw usageError(
            '--processes shares the re-encryption, which --no-reencrypt skips: give one of them.',
          )
        const table = String(args.table)
        // The workers of --processes join each job the rotation plans (a rotation slot's
        // backfill, then the re-encryption) as `kfe reencrypt` of the same rows would (one
        // argument: a tenant id may start with '-').
        const tenant = args.tenant === undefined ? [] : [`--tenant=${String(args.tenant)}`]
        return shareJob(
          args,
          ['reencrypt', table, ...tenant],
          opened,
          run,
          out,
          (run, share) => {
            const options = {
              ...run,
              ...jobOptions(args),
              ...share,
              reencrypt: args.reencrypt,
              purpose: args.data ? ('data' as const) : ('index' as const),
              activateLater: args['activate-later'],
              dryRun: args['dry-run'],
            }
            if (args['all-tenants']) return ops.rotateTenants(table, options)
            return ops.rotate(table, {
              ...(args.tenant === undefined ? {} : { tenant: String(args.tenant) }),
              ...options,
            })
          },
          rotationJob(args.tenant === undefined ? undefined : String(args.tenant)),
        )
      },
      (result, out) => {
        if ('tenants' in result) {
          out.result(result, () => {
            for (const r of result.tenants)
              consola.log(
                `${result.table} tenant ${r.tenant} ${r.purpose}: version ${r.version} ${r.state}; previous ${r.previous}.`,
              )
            if (result.reencrypt !== undefined) describeJob(result.reencrypt)
            if (result.interrupted)
              consola.warn(`interrupted: ${result.left ?? 'run the same command again to finish'}.`)
          })
          return rotateExit(result)
        }
        out.result(result, () => {
          const when =
            result.activateAfter === undefined
              ? ''
              : ` (may be activated after ${result.activateAfter.toISOString()})`
          consola.log(
            `${result.table} ${result.purpose}: version ${result.version} ${result.dryRun ? 'would be staged' : result.state}${result.state === 'staged' ? when : ''}; previous ${result.previous}.`,
          )
          if (result.reencrypt !== undefined) describeJob(result.reencrypt)
          if (result.left !== undefined)
            (result.interrupted ? consola.warn : consola.info)(
              `${result.interrupted ? 'interrupted: ' : ''}${result.left}.`,
            )
        })
        return rotateExit(result)
      },
    ),
})

/**
 * A rotation's re-encryption job (with a rotation slot, the last of its two jobs). Its
 * `interrupted` and `left` are counted again from the job's batches left with the workers': the
 * rotation counted this process's, and a worker may have finished the batch it held since.
 * @internal
 */
export function rotationJob(tenant: string | undefined): JobWithin<RotateResult | RotateTenantsResult> {
  return {
    get: (result) => result.reencrypt,
    set: (result, job) => {
      const left = job.remainingBatches
      if ('tenants' in result)
        return {
          ...result,
          reencrypt: job,
          interrupted: left > 0,
          left: left > 0 ? allTenantsReencryptionLeft(result.table, left) : undefined,
        }
      // Staged: stopped in the slot's backfill, and not through while the version is not active.
      if (result.state === 'staged')
        return { ...result, reencrypt: job, left: backfillLeft(result.table, result.version, left) }
      return {
        ...result,
        reencrypt: job,
        interrupted: left > 0,
        left: left > 0 ? reencryptionLeft(result.table, result.version, left, tenant) : undefined,
      }
    },
  }
}

/** Exit code of `rotate`: rows that failed outrank an interruption (1 over 2); a stopped rotation is never 0. */
export function rotateExit(result: RotateResult | RotateTenantsResult): number {
  const job = result.reencrypt === undefined ? EXIT.ok : jobExit(result.reencrypt)
  if (job === EXIT.failed) return EXIT.failed
  return result.interrupted ? EXIT.attention : job
}
