import { createInterface } from 'node:readline/promises'
import { defineCommand } from 'citty'
import { OperationError } from '../../errors.js'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { commonArgs, dryRunArg, runCommand } from '../run-command.js'

/** `kfe shred <table> --tenant X [--yes]`: crypto-shredding of one tenant, after a confirmation. */
export const shredCommand = defineCommand({
  meta: {
    name: 'shred',
    description:
      "Destroy every wrapping of one tenant's keys (crypto-shredding): its rows become unreadable for good",
  },
  args: {
    ...commonArgs,
    ...dryRunArg,
    table: { type: 'positional', required: true, description: 'The table (with per-tenant keys)' },
    tenant: { type: 'string', required: true, description: 'The tenant whose keys are destroyed' },
    yes: {
      type: 'boolean',
      description: 'Do not ask for confirmation (scripts; required without a terminal or with --json)',
      default: false,
    },
  },
  run: ({ args }) =>
    runCommand(
      args,
      async (ops, run, out) => {
        const table = String(args.table)
        const tenant = String(args.tenant)
        const preview = await ops.shred(table, { ...run, tenant, dryRun: true })
        if (args['dry-run']) return preview
        if (!args.yes)
          await confirmShred({
            json: out.json,
            table: preview.table,
            tenant,
            versions: preview.destroyed,
            signal: run.signal,
          })
        return ops.shred(table, { ...run, tenant })
      },
      (result, out) => {
        out.result(result, () => {
          const verb = result.dryRun ? 'would be destroyed' : 'destroyed'
          consola.log(
            `${result.table} tenant ${result.tenant}: ${result.destroyed} key version${result.destroyed === 1 ? '' : 's'} ${verb} (${result.alreadyDestroyed} already were).`,
          )
        })
        return EXIT.ok
      },
    ),
})

/** What {@link confirmShred} asks about, and where. */
export interface ShredConfirmation {
  /** `--json`: there is no one to ask. */
  readonly json: boolean
  readonly table: string
  readonly tenant: string
  /** Key versions the shred destroys. */
  readonly versions: number
  /** SIGINT/SIGTERM of the command: stops the question. */
  readonly signal?: AbortSignal | undefined
  /** @default process.stdin */
  readonly input?: NodeJS.ReadableStream & { readonly isTTY?: boolean }
  /** @default process.stderr */
  readonly output?: NodeJS.WritableStream
}

/**
 * Asks the operator to type the tenant again. Refuses without a terminal or with `--json`: a
 * script must say `--yes`.
 * @throws OperationError `OPS_INVALID` when it is not confirmed (no terminal, `--json`, another
 *   answer, Ctrl-C or the input closed): nothing was destroyed
 */
export async function confirmShred(c: ShredConfirmation): Promise<void> {
  const input = c.input ?? process.stdin
  const refused = (why: string, cause?: unknown) =>
    new OperationError('OPS_INVALID', `${why}; nothing was destroyed.`, cause === undefined ? {} : { cause })
  if (c.json || input.isTTY !== true)
    throw refused(
      'Refusing to shred without confirmation: pass --yes (there is no terminal to ask, or --json)',
    )
  const rl = createInterface({ input, output: c.output ?? process.stderr })
  // Ctrl-C at the prompt (the terminal in raw mode gives it to readline, not to the process).
  const stop = new AbortController()
  const abort = () => stop.abort()
  rl.on('SIGINT', abort)
  rl.on('close', abort)
  c.signal?.addEventListener('abort', abort)
  let answer: string
  try {
    answer = await rl.question(
      `This destroys ${c.versions} key version${c.versions === 1 ? '' : 's'} of tenant ${c.tenant} of ${c.table}: its rows can never be decrypted again. Type the tenant to confirm: `,
      { signal: stop.signal },
    )
  } catch (error) {
    throw refused('Not confirmed (interrupted)', error)
  } finally {
    c.signal?.removeEventListener('abort', abort)
    rl.off('close', abort)
    rl.close()
  }
  if (answer.trim() !== c.tenant) throw refused('Not confirmed: the answer was not the tenant')
}
