import { defineCommand } from 'citty'
import type { RetireResult } from '../../ops/retire.js'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { commonArgs, dryRunArg, intArg, runCommand, usageError } from '../run-command.js'
import { tenantArg, tenantOption } from './job-args.js'

/** `kfe retire <table> --data | --index <version>`: refused while rows use it, unless `--force`. */
export const retireCommand = defineCommand({
  meta: { name: 'retire', description: 'Retire a key version no row uses (--force to retire anyway)' },
  args: {
    ...commonArgs,
    ...dryRunArg,
    ...tenantArg,
    table: { type: 'positional', required: true, description: 'The table' },
    data: { type: 'string', description: 'The data key version to retire' },
    index: { type: 'string', description: 'The index key version to retire' },
    force: {
      type: 'boolean',
      description:
        'Retire even though rows still use it, or before the metadata TTL has passed since the successor was activated',
      default: false,
    },
  },
  run: ({ args }) =>
    runCommand(
      args,
      (ops, run) => {
        if ((args.data === undefined) === (args.index === undefined))
          throw usageError('Give exactly one of --data <version> or --index <version>.')
        const purpose = args.data === undefined ? 'index' : 'data'
        const version = intArg(args.data ?? args.index, purpose)
        if (version === undefined)
          throw usageError(`--${purpose} needs the version to retire (e.g. --${purpose} 1).`)
        return ops.retire(String(args.table), {
          ...run,
          ...tenantOption(args),
          purpose,
          version,
          force: args.force,
          dryRun: args['dry-run'],
        })
      },
      (result, out) => {
        out.result(result, () => {
          if (result.stopped) {
            consola.warn(
              `${result.table} ${result.purpose} v${result.version}: stopped before the count was through (${result.rows} rows seen using it so far); not retired, nothing changed: run the same command again.`,
            )
            return
          }
          const state = result.retired ? 'retired' : 'not retired (dry run)'
          consola.log(
            `${result.table} ${result.purpose} v${result.version}: ${state}; ${result.rows} rows still use it${result.waitMs > 0 ? `; ${Math.ceil(result.waitMs / 1000)} s of the metadata TTL were left` : ''}${result.forced ? ' (forced)' : ''}.`,
          )
        })
        return retireExit(result)
      },
    ),
})

/** Exit code of `retire`: 2 when it was stopped (SIGINT/SIGTERM) before it decided, else 0. */
export function retireExit(result: RetireResult): number {
  return result.stopped ? EXIT.attention : EXIT.ok
}
