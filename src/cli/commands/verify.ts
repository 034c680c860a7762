import { defineCommand } from 'citty'
import type { VerifyResult } from '../../ops/verify.js'
import { consola } from '../log.js'
import { EXIT, keyText } from '../output.js'
import { commonArgs, runCommand } from '../run-command.js'
import { tenantArg, tenantOption } from './job-args.js'

/** `kfe verify <table>`: every row decrypts, every blind index matches (exit 1 on any failure). */
export const verifyCommand = defineCommand({
  meta: {
    name: 'verify',
    description: 'Check every row decrypts and every blind index equals its recomputation',
  },
  args: {
    ...commonArgs,
    ...tenantArg,
    table: { type: 'positional', required: true, description: 'The table' },
  },
  run: ({ args }) =>
    runCommand(
      args,
      (ops, run) => ops.verify(String(args.table), { ...run, ...tenantOption(args) }),
      (result, out) => {
        out.result(result, () => {
          consola.log(
            `${result.table}: ${result.rows} rows; ciphertexts per data version ${JSON.stringify(result.dataVersions)}, indexes per index version ${JSON.stringify(result.indexVersions)}`,
          )
          if (result.shredded > 0)
            consola.log(
              `  ${result.shredded} rows of shredded tenants: unreadable by design (KEY_DESTROYED), not failures`,
            )
          for (const [column, counts] of Object.entries(result.slotVersions))
            consola.log(`  rotation slot ${column}: rows per index version ${JSON.stringify(counts)}`)
          for (const f of result.failures) consola.error(`  ${keyText(f.key)}: ${f.problems.join(', ')}`)
          for (const m of result.migrating) {
            consola.log(
              `  column ${m.column} (${m.phase}): ${m.compared ? `${m.equal} rows equal to their plaintext, ${m.missing} not encrypted yet, ${m.failed} differ or fail, ${m.plaintextNull} with NULL plaintext${m.plaintextStale > 0 ? `, ${m.plaintextStale} with an older plaintext beside the encrypted value that counts (cut-over)` : ''}` : 'plaintext column gone, nothing to compare'}`,
            )
            for (const f of m.failures) consola.error(`    ${keyText(f.key)}: ${f.problems.join(', ')}`)
          }
          // Rows of columns under migration fail apart (MISSING, PLAINTEXT_MISMATCH…): count them too.
          const migrating = result.migrating.reduce((n, m) => n + m.failed + m.missing, 0)
          consola.log(
            result.ok
              ? 'verify: ok'
              : `verify: ${result.failed} rows failed${migrating === 0 ? '' : `, and ${migrating} rows of columns under migration`}`,
          )
          if (result.stopped)
            consola.warn(
              `verify: stopped before every row was read (${result.rows} rows read): the counts are partial; run the same command again.`,
            )
        })
        return verifyExit(result)
      },
    ),
})

/**
 * Exit code of `verify`: 1 when a row failed (in the rows read), 2 when it was stopped
 * (SIGINT/SIGTERM) before every row was read and none read failed, else 0.
 */
export function verifyExit(result: VerifyResult): number {
  if (result.ok) return EXIT.ok
  const failed = result.failed + result.migrating.reduce((n, m) => n + m.failed + m.missing, 0)
  return failed === 0 && result.stopped ? EXIT.attention : EXIT.failed
}
