import { defineCommand } from 'citty'
import type { InitResult } from '../../ops/init.js'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { commonArgs, dryRunArg, runCommand } from '../run-command.js'

/** `kfe init [table…]`: the key and job tables, and version 1 of each table's keys. */
export const initCommand = defineCommand({
  meta: {
    name: 'init',
    description:
      'Create the key table and the first data and index keys of every encrypted table (idempotent)',
  },
  args: {
    ...commonArgs,
    ...dryRunArg,
    table: { type: 'positional', required: false, description: 'Only this table' },
    tenant: {
      type: 'string',
      description: "Tables with per-tenant keys: create this tenant's keys (comma-separated for several)",
    },
  },
  run: ({ args }) =>
    runCommand(
      args,
      (ops, run) =>
        ops.init({
          ...run,
          dryRun: args['dry-run'],
          ...(args.table === undefined ? {} : { tables: [String(args.table)] }),
          ...(args.tenant === undefined ? {} : { tenants: String(args.tenant).split(',') }),
        }),
      (result, out) => {
        out.result(result, () => {
          for (const k of result.keys) {
            const what = k.created ? (result.dryRun ? 'would create' : 'created') : 'exists'
            const tenant = k.tenant === undefined ? '' : ` tenant ${k.tenant}`
            consola.log(
              `${k.table}${tenant} ${k.purpose} v${k.version}: ${what} (wrapped under ${k.keks.join(', ')})`,
            )
          }
          consola.log(
            `${result.created} key${result.created === 1 ? '' : 's'} ${result.dryRun ? 'would be ' : ''}created.`,
          )
          for (const table of result.missingTables)
            consola.warn(
              `Table ${table} of the encrypted schema does not exist in this database: is its name misspelt in encryptedSchema, or are the migrations still to run? Its keys are kept either way.`,
            )
          if (result.stopped)
            consola.warn(
              'stopped before every key was created: run the same command again to create the rest.',
            )
        })
        return initExit(result)
      },
    ),
})

/** Exit code of `init`: 2 when it was stopped (SIGINT/SIGTERM) with keys left to create, else 0. */
export function initExit(result: InitResult): number {
  return result.stopped ? EXIT.attention : EXIT.ok
}
