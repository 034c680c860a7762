import { defineCommand } from 'citty'
import { consola } from '../log.js'
import { EXIT } from '../output.js'
import { commonArgs, intArg, runCommand, usageError } from '../run-command.js'
import { tenantArg, tenantOption } from './job-args.js'

/** `kfe status [table]`: key versions, rows per version, jobs, and a verdict (exit 2: needs attention). */
export const statusCommand = defineCommand({
  meta: { name: 'status', description: 'Key versions, rows per key version, jobs and a verdict per table' },
  args: {
    ...commonArgs,
    table: { type: 'positional', required: false, description: 'Only this table' },
    exact: { type: 'boolean', description: 'Count every row (default: a sample)', default: false },
    sample: { type: 'string', description: 'Rows sampled per table (default 2000)' },
    ...tenantArg,
  },
  run: ({ args }) =>
    runCommand(
      args,
      (ops, run) => {
        const sampleSize = intArg(args.sample, 'sample')
        if (args.tenant !== undefined && args.table === undefined)
          throw usageError('--tenant needs the table: kfe status <table> --tenant X.')
        return ops.status({
          ...tenantOption(args),
          ...run,
          exact: args.exact,
          ...(args.table === undefined ? {} : { table: String(args.table) }),
          ...(sampleSize === undefined ? {} : { sampleSize }),
        })
      },
      (result, out) => {
        out.result(result, () => {
          for (const t of result.tables) {
            consola.log(
              `${t.table}${t.logicalTable === t.table ? '' : ` (logical ${t.logicalTable})`}: ${t.rows} rows`,
            )
            for (const k of t.keys)
              consola.log(`  ${k.purpose} v${k.version} ${k.state} [${k.keks.join(', ')}]`)
            const est = t.estimated
              ? ` (estimated from ${t.scanned} sampled rows; --exact for a full count)`
              : ''
            consola.log(`  rows per data version: ${fmt(t.rowsByDataVersion)}${est}`)
            consola.log(`  rows per index version: ${fmt(t.rowsByIndexVersion)}`)
            for (const slot of t.slots) {
              consola.log(`  index ${slot.index} (${slot.column}), per column:`)
              for (const c of slot.columns)
                consola.log(
                  `    ${c.column}: ${c.version === null ? 'free' : `v${c.version} ${c.state}`}${c.searched ? ', searched' : ''}; rows: ${fmt(c.rows)}`,
                )
            }
            if (t.plaintextRows > 0) consola.log(`  rows in plaintext: ${t.plaintextRows}`)
            if (t.tenants !== undefined)
              consola.log(
                `  tenants: ${t.tenants.live} with live keys, ${t.tenants.destroyed} shredded, ${t.tenants.staged} with a staged version; rows not on their tenant's active versions: ${t.tenants.rowsNotOnActive}; rows of shredded tenants: ${t.tenants.shreddedRows}`,
              )
            for (const j of t.jobs)
              consola.log(
                `  job ${j.id}: ${j.interrupted ? 'interrupted' : j.state} ${j.doneBatches}/${j.totalBatches} batches, ${j.rewritten} rows rewritten`,
              )
            for (const m of t.migrations)
              consola.log(
                `  column ${m.column} → ${m.storedAs}: phase ${m.phase}, ${m.encryptedRows}/${m.plaintextRows} rows encrypted (${(m.share * 100).toFixed(1)}%)${m.job === undefined ? '' : `, job ${m.job.state} ${m.job.doneBatches}/${m.job.totalBatches} batches`}${m.plaintextColumn ? '' : ', plaintext column dropped'}`,
              )
            // Beside the verdict they explain (stdout), not on stderr.
            for (const a of t.attention) consola.log(`  needs attention: ${a}`)
            consola.log(`  verdict: ${t.verdict}`)
          }
        })
        return result.needsAttention ? EXIT.attention : EXIT.ok
      },
    ),
})

function fmt(counts: Readonly<Record<string, number>>): string {
  const entries = Object.entries(counts)
  return entries.length === 0
    ? 'none'
    : entries.map(([v, n]) => `${/^\d+$/.test(v) ? `v${v}` : v}: ${n}`).join(', ')
}
