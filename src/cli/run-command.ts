import { OperationError } from '../errors.js'
import type { FieldEncryptionOps } from '../ops/field-encryption-ops.js'
import type { RunOptions } from '../ops/progress.js'
import { type OpenedOps, openOps } from './load-config.js'
import { createOutput, EXIT, type Output } from './output.js'
import { followParent, parentGone } from './worker-process.js'

/** The arguments every command takes. */
export const commonArgs = {
  config: {
    type: 'string',
    description: 'Path of the config file (default: kfe.config.{ts,mts,mjs,js,cjs} here)',
  },
  json: { type: 'boolean', description: 'Print the result as one JSON line', default: false },
} as const

/** `--dry-run`, for every command that writes. */
export const dryRunArg = {
  'dry-run': { type: 'boolean', description: 'Report what would change; change nothing', default: false },
} as const

/**
 * Opens the config, runs `work` with an AbortSignal (SIGINT/SIGTERM: finish the batch, save the
 * checkpoint, exit 2; a second signal exits at once) and progress printing, prints its result, and
 * sets the exit code: 0 ok, 1 failed, 2 needs attention.
 */
export async function runCommand<T>(
  args: { config?: string | undefined; json?: boolean | undefined },
  work: (ops: FieldEncryptionOps, run: RunOptions, out: Output, opened: OpenedOps) => Promise<T>,
  print: (result: T, out: Output) => number,
): Promise<void> {
  // A worker of `--processes` whose parent went away, or stopped it, while it started: nothing to do.
  if (parentGone()) {
    process.exitCode = EXIT.attention
    return
  }
  const out = createOutput(args.json === true)
  const stop = new AbortController()
  // The second signal exits at once. Counted apart from the abort: a worker stopped by its parent
  // (the channel closed) still finishes its batch when a service manager signals it too.
  let signals = 0
  const onSignal = () => {
    if (++signals > 1) process.exit(EXIT.attention)
    stop.abort()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const unfollow = followParent(stop)
  let opened: Awaited<ReturnType<typeof openOps>> | undefined
  let code: number = EXIT.failed
  try {
    opened = await openOps(args.config)
    const result = await work(
      opened.ops,
      { signal: stop.signal, onProgress: (p) => out.progress(p) },
      out,
      opened,
    )
    code = print(result, out)
  } catch (error) {
    out.error(error)
    code = EXIT.failed
  } finally {
    out.close()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    unfollow()
    await opened?.close().catch(() => undefined)
    // Set after closing: PGlite's close sets process.exitCode (0) itself. And again at exit: a
    // PGlite whose start-up was still running (a command that failed before its first query)
    // restores the exit code it found at its start when that start-up ends.
    process.exitCode = code
    process.once('exit', () => {
      process.exitCode = code
    })
  }
}

/**
 * Parses a positive integer option; `undefined` when it was not given.
 * @throws OperationError `OPS_INVALID` when it is not a positive integer, or was given empty
 *   (`--workers ""`, `--batch-size=`): the command would otherwise run with its default
 */
export function intArg(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined
  if (value === '' || value === true) throw usageError(`--${name} needs a value: a positive integer.`)
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < 1) throw usageError(`--${name} must be a positive integer.`)
  return n
}

/** A mistake in a command's arguments (`OPS_INVALID`): refused before anything runs. */
export function usageError(message: string): OperationError {
  return new OperationError('OPS_INVALID', message)
}
