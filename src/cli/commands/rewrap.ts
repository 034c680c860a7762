import { defineCommand } from 'citty'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { commonArgs, dryRunArg, runCommand } from '../run-command.js'

/** `kfe rewrap --from <kek-id> --to <kek-id>`: KEK rotation; no row is touched. */
export const rewrapCommand = defineCommand({
  meta: {
    name: 'rewrap',
    description: 'Wrap every key under another KEK and drop the old wrappings (KEK rotation)',
  },
  args: {
    ...commonArgs,
    ...dryRunArg,
    from: { type: 'string', required: true, description: 'KEK id to move away from' },
    to: { type: 'string', required: true, description: 'KEK id to wrap under' },
    keep: { type: 'boolean', description: 'Keep the wrappings under --from (add a KEK)', default: false },
  },
  run: ({ args }) =>
    runCommand(
      args,
      (ops, run) =>
        ops.rewrap({ ...run, from: args.from, to: args.to, keep: args.keep, dryRun: args['dry-run'] }),
      (result, out) => {
        out.result(result, () => {
          consola.log(
            `${result.keys} keys; ${result.rewrapped} ${result.dryRun ? 'would get' : 'got'} a wrapping under ${result.to}.`,
          )
        })
        return EXIT.ok
      },
    ),
})
