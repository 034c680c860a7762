import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { defineCommand } from 'citty'
import { OperationError } from '../../errors.js'
import type { MigrationStep } from '../../schema/migration-ddl.js'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { commonArgs, dryRunArg, runCommand, usageError } from '../run-command.js'

const STEPS: readonly MigrationStep[] = ['add', 'cutover', 'drop']

/** `kfe migration <table> <column> --phase add|cutover|drop`: writes a Kysely migration file. */
export const migrationCommand = defineCommand({
  meta: {
    name: 'migration',
    description:
      'Write the Kysely migration (kysely-ctl layout) of one step of moving a plaintext column to an encrypted one',
  },
  args: {
    ...commonArgs,
    ...dryRunArg,
    table: { type: 'positional', required: true, description: 'The table' },
    column: { type: 'positional', required: true, description: 'The column, by its annotated name' },
    phase: { type: 'string', required: true, description: 'add | cutover | drop' },
    folder: {
      type: 'string',
      description: "The migration folder (kysely-ctl's migrations.migrationFolder)",
      default: 'migrations',
    },
  },
  run: ({ args }) =>
    runCommand(
      args,
      async (ops) => {
        const step = String(args.phase) as MigrationStep
        if (!STEPS.includes(step)) throw usageError(`--phase must be one of ${STEPS.join(', ')}.`)
        const file = await ops.migration(String(args.table), String(args.column), step)
        const folder = resolve(String(args.folder))
        const path = join(folder, file.fileName)
        // A dry run prints the file it would write (DDL only: no value of any row).
        if (args['dry-run']) return { path, dryRun: true, source: file.source, ...file.ddl }
        await writeMigration(folder, path, file.source)
        return { path, dryRun: false, ...file.ddl }
      },
      (result, out) => {
        out.result(result, () => {
          consola.log(`${result.dryRun ? 'would write' : 'wrote'} ${result.path}`)
          for (const s of result.up) consola.log(`  ${s}`)
          if (result.outsideTransaction)
            consola.warn(
              '  CREATE INDEX CONCURRENTLY cannot run in a transaction: run it with migrations.disableTransactions',
            )
          for (const n of result.notes) consola.info(`  note: ${n}`)
        })
        return EXIT.ok
      },
    ),
})

/**
 * Writes the migration file, never over an existing one.
 * @throws OperationError `OPS_INVALID` naming the path when the file exists or the folder or file
 *   cannot be written (the file system's code, `EEXIST`, `EACCES`, …, in the message and `cause`)
 */
async function writeMigration(folder: string, path: string, source: string): Promise<void> {
  try {
    await mkdir(folder, { recursive: true })
    await writeFile(path, source, { flag: 'wx' })
  } catch (error) {
    const code = (error as { code?: unknown }).code
    const why =
      code === 'EEXIST'
        ? `${path} exists already: nothing was written (remove it, or give another --folder)`
        : `${path} could not be written (${typeof code === 'string' ? code : String(error)}): nothing was written (check --folder)`
    throw new OperationError('OPS_INVALID', `${why}.`, { cause: error })
  }
}
