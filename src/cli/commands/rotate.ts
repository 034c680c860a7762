import { defineCommand } from 'citty'
import type { RotateResult } from '../../ops/rotate.js'
import type { RotateTenantsResult } from '../../ops/rotate-tenants.js'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { commonArgs, dryRunArg, runCommand, usageError } from '../run-command.js'
import { jobArgs, jobOptions } from './job-args.js'
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
      (ops, run): Promise<RotateResult | RotateTenantsResult> => {
        if (args.data === args.index) throw usageError('Give exactly one of --data or --index.')
        if (args['all-tenants']) {
          if (args.tenant !== undefined) throw usageError('Give --tenant or --all-tenants, not both.')
          return ops.rotateTenants(String(args.table), {
            ...run,
            ...jobOptions(args),
            reencrypt: args.reencrypt,
            purpose: args.data ? 'data' : 'index',
            activateLater: args['activate-later'],
            dryRun: args['dry-run'],
          })
        }
        return ops.rotate(String(args.table), {
          ...(args.tenant === undefined ? {} : { tenant: String(args.tenant) }),
          ...run,
          ...jobOptions(args),
          purpose: args.data ? 'data' : 'index',
          activateLater: args['activate-later'],
          reencrypt: args.reencrypt,
          dryRun: args['dry-run'],
        })
      },
      (result, out) => {
        if ('tenants' in result) {
          out.result(result, () => {
            for (const r of result.tenants)
              consola.log(
                `${result.table} tenant ${r.tenant} ${r.purpose}: version ${r.version} ${r.state}; previous ${r.previous}.`,
              )
            if (result.reencrypt !== undefined) describeJob(result.reencrypt)
            if (result.interrupted) consola.warn('interrupted: run the same command again to finish.')
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

/** Exit code of `rotate`: rows that failed outrank an interruption (1 over 2); a stopped rotation is never 0. */
export function rotateExit(result: RotateResult | RotateTenantsResult): number {
  const job = result.reencrypt === undefined ? EXIT.ok : jobExit(result.reencrypt)
  if (job === EXIT.failed) return EXIT.failed
  return result.interrupted ? EXIT.attention : job
}
