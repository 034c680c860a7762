import { defineCommand } from 'citty'
import { shareJob } from '../processes.js'
import { commonArgs, dryRunArg, runCommand } from '../run-command.js'
import { jobArgs, jobOptions, processesArg } from './job-args.js'
import { printJob } from './reencrypt.js'

/** `kfe encrypt-column <table> <column>`: backfill a column under migration from plaintext (resumable). */
export const encryptColumnCommand = defineCommand({
  meta: {
    name: 'encrypt-column',
    description:
      "Fill the encrypted value and blind indexes of every row from the plaintext column (resumable; run while the application is 'dual-writing')",
  },
  args: {
    ...commonArgs,
    ...dryRunArg,
    ...jobArgs,
    ...processesArg,
    table: { type: 'positional', required: true, description: 'The table' },
    column: { type: 'positional', required: true, description: 'The column, by its annotated name' },
  },
  run: ({ args }) =>
    runCommand(
      args,
      (ops, run, out, opened) => {
        const [table, column] = [String(args.table), String(args.column)]
        return shareJob(args, ['encrypt-column', table, column], opened, run, out, (run, share) =>
          ops.encryptColumn(table, column, {
            ...run,
            ...jobOptions(args),
            ...share,
            dryRun: args['dry-run'],
          }),
        )
      },
      (result, out) => printJob(result, out),
    ),
})
