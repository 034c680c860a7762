import type { JobOptions } from '../../ops/job-engine.js'
import { intArg } from '../run-command.js'

/** Options of the commands that run a re-encryption job. */
export const jobArgs = {
  'batch-size': { type: 'string', description: 'Rows per batch and transaction (default 1000)' },
  workers: {
    type: 'string',
    description:
      'Workers in this process, one connection each, sharing one CPU core (default 1; see --processes)',
  },
  'max-rows-per-second': { type: 'string', description: 'Throttle (default: unlimited)' },
  restart: {
    type: 'boolean',
    description: 'Plan the job anew instead of resuming an unfinished one (every row is read again)',
  },
} as const

/** The job options from parsed arguments. */
export function jobOptions(
  args: Record<string, unknown>,
): Pick<JobOptions, 'batchSize' | 'workers' | 'maxRowsPerSecond' | 'restart'> {
  const batchSize = intArg(args['batch-size'], 'batch-size')
  const workers = intArg(args.workers, 'workers')
  const maxRowsPerSecond = intArg(args['max-rows-per-second'], 'max-rows-per-second')
  return {
    ...(batchSize === undefined ? {} : { batchSize }),
    ...(workers === undefined ? {} : { workers }),
    ...(maxRowsPerSecond === undefined ? {} : { maxRowsPerSecond }),
    ...(args.restart === true ? { restart: true } : {}),
  }
}

/** `--processes`, for the commands whose job can be shared by processes of this machine (src/cli/processes.ts). */
export const processesArg = {
  processes: {
    type: 'string',
    description:
      'Processes on this machine: this one and N-1 copies of it, each with --workers workers, to use more than one CPU core (default 1; not on PGlite)',
  },
} as const

/** `--tenant`, for the commands that work on one tenant of a table with per-tenant keys. */
export const tenantArg = {
  tenant: {
    type: 'string',
    description: "Tables with per-tenant keys: only this tenant's rows and keys",
  },
} as const

/** `{ tenant }` when `--tenant` was given. */
export function tenantOption(args: Record<string, unknown>): { tenant?: string } {
  return args.tenant === undefined ? {} : { tenant: String(args.tenant) }
}
