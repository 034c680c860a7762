import { createInterface } from 'node:readline/promises'
import { defineCommand } from 'citty'
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
        if (!args.yes) await confirm(out.json, preview.table, tenant, preview.destroyed)
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

/**
 * Asks the operator to type the tenant again. Refuses without a terminal or with `--json`: a
 * script must say `--yes`.
 */
async function confirm(json: boolean, table: string, tenant: string, versions: number): Promise<void> {
  if (json || process.stdin.isTTY !== true) {
    throw new Error(
      `Refusing to shred without confirmation: pass --yes (there is no terminal to ask, or --json).`,
    )
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  try {
    const answer = await rl.question(
      `This destroys ${versions} key version${versions === 1 ? '' : 's'} of tenant ${tenant} of ${table}: its rows can never be decrypted again. Type the tenant to confirm: `,
    )
    if (answer.trim() !== tenant) throw new Error('Not confirmed; nothing was destroyed.')
  } finally {
    rl.close()
  }
}
