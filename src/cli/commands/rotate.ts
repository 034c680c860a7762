import { defineCommand } from 'citty'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { commonArgs, dryRunArg, runCommand } from '../run-command.js'
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
      (ops, run) => {
        if (args.data === args.index) throw new Error('Give exactly one of --data or --index.')
        return ops.rotate(String(args.table), {
          ...run,
          ...jobOptions(args),
          purpose: args.data ? 'data' : 'index',
          activateLater: args['activate-later'],
          reencrypt: args.reencrypt,
          dryRun: args['dry-run'],
        })
      },
      (result, out) => {
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
        // Rows that failed outrank an interruption (1 over 2); a stopped rotation is never 0.
        const job = result.reencrypt === undefined ? EXIT.ok : jobExit(result.reencrypt)
        if (job === EXIT.failed) return EXIT.failed
        return result.interrupted ? EXIT.attention : job
      },
    ),
})
