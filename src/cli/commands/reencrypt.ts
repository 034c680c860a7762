import { defineCommand } from 'citty'
import { replacedJobText } from '../../ops/job-engine.js'
import { consola } from '../log.js'
import { EXIT, keyText, type Output } from '../output.js'
import { type JobOutcome, shareJob } from '../processes.js'
import { commonArgs, dryRunArg, runCommand, usageError } from '../run-command.js'
import { jobArgs, jobOptions, processesArg, tenantArg, tenantOption } from './job-args.js'

/** `kfe reencrypt <table>`: every row onto the active data and index key versions (resumable). */
export const reencryptCommand = defineCommand({
  meta: {
    name: 'reencrypt',
    description: 'Rewrite every row whose data or index key version is not the active one (resumable)',
  },
  args: {
    ...commonArgs,
    ...dryRunArg,
    ...jobArgs,
    ...processesArg,
    ...tenantArg,
    'all-tenants': {
      type: 'boolean',
      description:
        "Tables with per-tenant keys: every tenant's rows, each onto its own tenant's keys, in one pass (the default)",
      default: false,
    },
    table: { type: 'positional', required: true, description: 'The table' },
  },
  run: ({ args }) =>
    runCommand(
      args,
      (ops, run, out, opened) => {
        if (args['all-tenants'] && args.tenant !== undefined)
          throw usageError('Give --tenant or --all-tenants, not both.')
        const table = String(args.table)
        // One argument: a tenant id that starts with '-' is not read as an option.
        const tenant = args.tenant === undefined ? [] : [`--tenant=${String(args.tenant)}`]
        return shareJob(args, ['reencrypt', table, ...tenant], opened, run, out, (run, share) =>
          ops.reencrypt(table, {
            ...run,
            ...jobOptions(args),
            ...share,
            ...tenantOption(args),
            dryRun: args['dry-run'],
          }),
        )
      },
      (result, out) => printJob(result, out),
    ),
})

/** Prints a job's result; returns its exit code ({@link jobExit}). */
export function printJob(result: JobOutcome, out: Output): number {
  out.result(result, () => describeJob(result))
  return jobExit(result)
}

/** A job's result in words. */
export function describeJob(result: JobOutcome): void {
  if ('dryRun' in result) {
    if ('shredded' in result && result.shredded > 0)
      consola.log(
        `${result.table}: ${result.shredded} rows of shredded tenants (unreadable by design, left as they are).`,
      )
    consola.log(
      `${result.table}: ${result.wouldRewrite} of ${result.rows} rows would be ${'column' in result ? `written (${result.column})` : 'rewritten'}; ${result.failed} ${'column' in result ? 'hold a plaintext the codec refuses' : 'fail to decrypt'}.`,
    )
    return
  }
  if ('processes' in result && result.processes > 1)
    consola.log(`${result.table}: shared by ${result.processes} processes (the counts below are their sum).`)
  if (result.replaced !== undefined) {
    consola.warn(`not resumed: ${replacedJobText(result.replaced, result.targets)}.`)
  }
  consola.log(
    `${result.table}: ${result.rows} rows read, ${result.rewritten} rewritten, ${result.conflicts} changed by the application meanwhile (re-read), ${result.deleted} deleted meanwhile, ${result.failed} failed.`,
  )
  if (result.shredded > 0)
    consola.log(
      `${result.table}: ${result.shredded} rows of shredded tenants (unreadable by design, left as they are).`,
    )
  if (result.failed > 0) consola.error(`failing primary keys: ${result.failedKeys.map(keyText).join(', ')}`)
  if (result.jobFailed > result.failed)
    consola.error(
      `${result.jobFailed - result.failed} more rows failed in earlier runs of this job: \`kfe verify ${result.table}\` lists them.`,
    )
  if ('processFailures' in result)
    for (const f of result.processFailures)
      consola.error(`worker process ${f.pid ?? '?'} failed: [${f.code}] ${f.message}`)
  if (result.stopped)
    consola.warn(`stopped with ${result.remainingBatches} batches left: run the same command to resume.`)
}

/**
 * Exit code of a job: 1 when rows failed (in this run or an earlier one of the job), 2 when
 * batches are left or a worker process of `--processes` failed (the others took over its batch),
 * else 0.
 */
export function jobExit(result: JobOutcome): number {
  if ('dryRun' in result) return result.failed > 0 ? EXIT.failed : EXIT.ok
  if (result.failed > 0 || result.jobFailed > 0) return EXIT.failed
  if ('processFailures' in result && result.processFailures.length > 0) return EXIT.attention
  return result.remainingBatches > 0 ? EXIT.attention : EXIT.ok
}
