/** The markdown report of one run: targets, per-field table, database tables, environment. */

import { PENDING_PLANS_MAX } from '../src/plugin/plan.js'
import { COLD_BYTES } from './cpu.js'
import { DB_OPS, type DbOp, type EngineResult, REPEATS } from './db.js'
import { FLOOR_THROUGH_KYSELY_PLUGIN } from './db-variants.js'
import type { Environment } from './environment.js'
import type { FieldOp, FieldResults } from './fields.js'
import type { Summary } from './harness.js'
import {
  controlRatio,
  cpuRatio,
  DB_GOALS,
  dbRatio,
  encDecMs,
  OP_LABEL,
  ratioInterval,
  roundTripFactor,
  type TargetCheck,
  type TargetStatus,
} from './targets.js'

/** Everything one run produced; also the JSON written to bench/results/. */
export interface BenchResults {
  readonly environment: Environment
  readonly notes: readonly string[]
  readonly fields?: FieldResults
  readonly db?: readonly EngineResult[]
  readonly targets: readonly TargetCheck[]
}

function us(ms: number): string {
  const v = ms * 1000
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)
}

function spreadUs(s: Summary | undefined): string {
  return s === undefined ? '—' : `${us(s.median)} (${us(s.min)}–${us(s.max)})`
}

function spreadMs(s: Summary | undefined): string {
  if (s === undefined) return '—'
  const f = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1))
  return `${f(s.median)} (${f(s.min)}–${f(s.max)})`
}

function table(head: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const line = (cells: readonly string[]) => `| ${cells.join(' | ')} |`
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n')
}

function statusCell(status: TargetStatus): string {
  switch (status) {
    case 'met':
      return 'yes'
    case 'missed':
      return '**no**'
    case 'not resolved':
      return 'not resolved'
    case 'not run':
      return 'NOT RUN'
  }
}

export function targetsMarkdown(targets: readonly TargetCheck[]): string {
  return table(
    ['target', 'measured', 'goal', 'met?'],
    targets.map((t) => [t.target, t.measured, t.goal, statusCell(t.status)]),
  )
}

function fieldsMarkdown(f: FieldResults): string {
  const parts: string[] = [
    `Microseconds per operation: median (min–max) over ${f.rounds - 1} measured rounds of ${f.timeMs} ms per variant (one warm-up round discarded). "vs ours": how many times more encrypt+decrypt operations per second ours does than this library (> 1: ours is faster). Overhead: stored length − plaintext length, in bytes (characters for text storage).`,
  ]
  for (const p of f.payloads) {
    const ours = encDecMs(f, p.id, 'ours')
    const rows = f.libraries.map((lib) => {
      const t = f.timings[p.id] ?? {}
      const get = (op: FieldOp) => t[op]?.[lib.id]
      const ms = encDecMs(f, p.id, lib.id)
      return [
        lib.id === 'ours' ? `**${lib.label}**` : lib.label,
        spreadUs(get('encrypt')),
        spreadUs(get('decrypt')),
        ms === undefined ? '—' : Math.round(1000 / ms).toLocaleString('en-US'),
        ms === undefined || ours === undefined ? '—' : `${(ms / ours).toFixed(2)}×`,
        lib.indexNote === undefined ? 'none' : spreadUs(get('index')),
        `${f.overhead[lib.id]?.[p.id] ?? '—'} (${lib.storage})`,
      ]
    })
    parts.push(
      `#### ${p.label} (${p.bytes} bytes of plaintext)`,
      table(
        ['library', 'encrypt µs', 'decrypt µs', 'enc+dec ops/s', 'vs ours', 'blind index µs', 'overhead'],
        rows,
      ),
    )
  }
  const notes = f.libraries
    .filter((l) => l.indexNote !== undefined)
    .map((l) => `- ${l.label}: ${l.indexNote}`)
  parts.push(`Blind indexes:\n${notes.join('\n')}`)
  return parts.join('\n\n')
}

function dbMarkdown(engines: readonly EngineResult[]): string {
  const parts: string[] = []
  for (const e of engines) {
    if (e.timings === undefined || e.variants === undefined) {
      parts.push(`#### ${e.engine}\n\n${e.notRun ?? 'NOT RUN'}`)
      continue
    }
    const rounds = Object.values(e.timings)[0]?.insert.samples.length ?? 0
    const rows = e.variants.map((v) => {
      const cells = DB_OPS.map((op) => {
        const r = dbRatio(e, v.id, op)
        return `${spreadMs(e.timings?.[v.id]?.[op])}${r === undefined ? '' : ` · **${r.toFixed(3)}×**`}`
      })
      const ref = e.variants?.find((x) => x.id === v.reference)
      return [v.label, ...cells, ref === undefined ? '—' : ref.label]
    })
    parts.push(
      `#### ${e.engine} (${e.server})`,
      `Milliseconds for the whole operation: median (min–max) over ${rounds} measured rounds · ratio of medians to the reference.`,
      table(['variant', ...DB_OPS.map((op) => `${OP_LABEL[op]} ms`), 'reference'], rows),
      ...controlMarkdown(e),
      ...barePluginMarkdown(e),
      `Key-provider calls of the plugin's instance, cumulative after each round: ${e.providerCallsPerRound?.join(', ')} (keys in cache: ${e.keys}; key cache TTL ${((e.keyTtlMs ?? Number.NaN) / 60_000).toFixed(0)} min, instance lifetime ${((e.pluginLifetimeMs ?? Number.NaN) / 60_000).toFixed(1)} min: each key may be loaded once per TTL it lives through).`,
      ...cpuMarkdown(e),
    )
  }
  return parts.join('\n\n')
}

/** What the A/A control says about the resolution of this engine's ratios. */
function controlMarkdown(e: EngineResult): string[] {
  const cells = DB_OPS.map((op) => {
    const c = controlRatio(e, op)
    return c === undefined
      ? undefined
      : `${OP_LABEL[op]} ${c.ratio.toFixed(3)}× (per-round ratios ${c.low.toFixed(2)}–${c.high.toFixed(2)})`
  })
  if (cells.some((c) => c === undefined)) return []
  return [
    `A/A control: plain Kysely against itself, on a second table, in the same rounds: ${cells.join(', ')}. Identical code, so every departure from 1.000 is this machine's noise: a ratio of two variants that differs from 1 by less than that departure is not resolved by this run.`,
  ]
}

/** What Kysely's own thinnest plugin costs the floor, against each plugin goal. */
function barePluginMarkdown(e: EngineResult): string[] {
  const id = FLOOR_THROUGH_KYSELY_PLUGIN.id
  const cells: string[] = []
  const beyond: string[] = []
  for (const g of DB_GOALS.filter((x) => x.variant === 'plugin')) {
    const r = dbRatio(e, id, g.op)
    const i = ratioInterval(e, id, g.op)
    if (r === undefined || i === undefined) return []
    const share = r <= 1 ? 'none' : `${(((r - 1) / (g.max - 1)) * 100).toFixed(0)} %`
    cells.push(
      `${OP_LABEL[g.op]} **${r.toFixed(3)}×** (95 % interval ${i.low.toFixed(3)}–${i.high.toFixed(3)}; ${share} of the ${((g.max - 1) * 100).toFixed(0)} % the ≤ ${g.max.toFixed(2)}× goal allows)`,
    )
    if (i.low > g.max) beyond.push(`${OP_LABEL[g.op]} (≤ ${g.max.toFixed(2)}×)`)
  }
  const verdict =
    beyond.length === 0
      ? ''
      : ` On ${e.engine} the bare cost alone is past the goal for ${beyond.join(' and ')}, over its whole 95 % interval: no design that works as a Kysely plugin, as this library must, can meet that goal on this machine.`
  return [
    `A plugin's bare cost: the floor's own queries, with its own crypto, through Kysely's WithSchemaPlugin, which walks each query tree and qualifies its tables and does nothing else, against the floor without it: ${cells.join(', ')}. A plugin that rewrites queries has to walk their trees as this one does, so that much of each plugin/floor goal is spent before the plugin does any work of its own.${verdict}`,
  ]
}

/** The CPU case of one engine (bench/cpu.ts) and what it implies for the plugin/floor ratios. */
function cpuMarkdown(e: EngineResult): string[] {
  const cpu = e.cpu
  if (cpu === undefined || e.variants === undefined || e.settings === undefined) return []
  const f = (v: number) => (v >= 10 ? v.toFixed(1) : v.toFixed(2))
  const cell = (s: Summary | undefined) =>
    s === undefined ? '—' : `${f(s.median)} (${f(s.min)}–${f(s.max)})`
  const rows = e.variants.map((v) => [
    v.label,
    cell(cpu.lookupUs[v.id]),
    cell(cpu.compileUs[v.id]),
    cell(cpu.coldLookupUs[v.id]),
    cell(cpu.coldCompileUs[v.id]),
    cell(cpu.insertRowUs[v.id]),
    cell(cpu.compileInsertRowUs[v.id]),
    cell(cpu.selectRowUs[v.id]),
  ])
  const parts = [
    `CPU of this process alone, the database replaced by results recorded on ${e.engine} (bench/cpu.ts): µs per lookup, per inserted row (batches of ${e.settings.batchSize}) and per selected row (a select of those rows), median (min–max) over the same number of rounds.`,
    table(
      [
        'variant',
        'CPU µs per lookup',
        'of which build + compile',
        `per lookup, ${COLD_BYTES >> 20} MiB touched before each`,
        'of which build + compile, touched the same way',
        'CPU µs per inserted row',
        'of which build + compile',
        'CPU µs per selected row',
      ],
      rows,
    ),
  ]
  const delta = (m: Record<string, Summary>) =>
    (m.plugin?.median ?? Number.NaN) - (m.floor?.median ?? Number.NaN)
  const lookup = cpuRatio(e, 'plugin', 'lookup')
  const insert = cpuRatio(e, 'plugin', 'insert')
  const cold = cpuRatio(e, 'plugin', 'lookup', 'disturbed')
  if (lookup !== undefined && insert !== undefined && cold !== undefined) {
    parts.push(
      `The plugin's CPU over the floor's: ${f(delta(cpu.lookupUs))} µs per lookup (${f(delta(cpu.compileUs))} µs of it the rewrite: building and compiling the query through the plugin, against the floor's query on its index column; an upper bound, because a compile loop leaves each tree's plan pending until ${PENDING_PLANS_MAX} newer trees replace it, as a compile() that never runs does, which is garbage a query that runs does not leave), ${f(delta(cpu.insertRowUs))} µs per inserted row (${f(delta(cpu.compileInsertRowUs))} µs of it the rewrite, on the same terms, against the floor's insert with fixed values standing for its ciphertexts and index). Added to the floor's real time per lookup and per row on ${e.engine}, that CPU alone gives plugin/floor ratios of **${lookup.toFixed(3)}×** for lookups and **${insert.toFixed(3)}×** for inserts (the "CPU alone" figures in the targets table). That is the CPU in a warm loop. A real lookup runs after a round trip that has filled the CPU caches with other work: with ${COLD_BYTES >> 20} MiB of other memory touched before each lookup (not timed), the plugin's CPU over the floor's is ${f(delta(cpu.coldLookupUs))} µs per lookup (${f(delta(cpu.coldCompileUs))} µs of it the rewrite, timed the same way: code and data the rewrite needs that a round trip has pushed out of the caches), a ratio of **${cold.toFixed(3)}×**. Why a measured lookup ratio is higher still: see "Round trips" below.`,
    )
  }
  const goal = (op: DbOp) => DB_GOALS.find((g) => g.variant === 'plugin' && g.op === op)?.max ?? Number.NaN
  const lookupRt = roundTripFactor(e, 'lookup', goal('lookup'))
  const lookupMeasured = dbRatio(e, 'plugin', 'lookup')
  if (lookupRt !== undefined && lookupMeasured !== undefined) {
    parts.push(
      `Round trips: on ${e.engine} the floor's lookups take ${f(lookupRt.measuredUs)} µs more than plain Kysely's, ${lookupRt.factor.toFixed(1)} times the ${f(lookupRt.cpuUs)} µs more CPU they take in the warm loop: code that runs right after a round trip finds its caches, branch predictors and the core's clock given to the database's work in between. At that factor the plugin's ${f(lookupRt.overFloorUs)} µs of CPU over the floor's predicts a lookup ratio of **${lookupRt.predicted.toFixed(3)}×** (measured: ${lookupMeasured.toFixed(3)}×), and the ≤ ${goal('lookup').toFixed(2)}× goal leaves the plugin **${f(lookupRt.budgetUs)} µs** of CPU per lookup over the floor's.`,
    )
  }
  const insertRt = roundTripFactor(e, 'insert', goal('insert'))
  const insertMeasured = dbRatio(e, 'plugin', 'insert')
  if (insertRt !== undefined && insertMeasured !== undefined) {
    parts.push(
      `Inserts, read the same way (one round trip per batch of ${e.settings.batchSize} rows): the floor's inserts take ${f(insertRt.measuredUs)} µs more per row than plain Kysely's, ${insertRt.factor.toFixed(2)} times the ${f(insertRt.cpuUs)} µs more CPU per row they take in the warm loop. At that factor the plugin's ${f(insertRt.overFloorUs)} µs of CPU per row over the floor's predicts an insert ratio of **${insertRt.predicted.toFixed(3)}×** (measured: ${insertMeasured.toFixed(3)}×), and the ≤ ${goal('insert').toFixed(2)}× goal leaves the plugin **${f(insertRt.budgetUs)} µs** of CPU per inserted row over the floor's.`,
    )
  }
  return parts
}

function environmentMarkdown(env: Environment): string {
  const rows: Array<[string, string]> = [
    ['date', env.date],
    ['Node', env.node],
    ['OpenSSL', env.openssl],
    ['V8', env.v8],
    ['platform', env.platform],
    ['CPU', `${env.cpu} × ${env.cores}`],
    ['memory', `${env.memoryGiB} GiB`],
    ['kysely-field-encryption', env.library],
    ...Object.entries(env.packages),
    ...Object.entries(env.servers).map(([k, v]) => [`server: ${k}`, v] as [string, string]),
  ]
  return table(['', 'version'], rows)
}

/** The markdown of a run (no title: the caller adds one). */
export function resultsMarkdown(r: BenchResults, chartPath?: string): string {
  const parts: string[] = []
  parts.push('### Targets', targetsMarkdown(r.targets))
  if (chartPath !== undefined) parts.push(`![Benchmark chart](${chartPath})`)
  if (r.fields !== undefined) parts.push('### Per field', fieldsMarkdown(r.fields))
  if (r.db !== undefined) {
    parts.push(
      '### Database',
      `Insert 10,000 rows of (id, email, name, ssn) in batches of 500, each time into a table just dropped and created again, outside the timed part (${REPEATS.insert} times per round, median kept); 2,000 sequential lookups by email, each row checked (${REPEATS.lookup} times per round, median kept); select all 10,000 rows, decrypted where encrypted (${REPEATS.selectAll} times per round, median kept). Variants interleaved in a rotating order per round; fresh tables every round.`,
      dbMarkdown(r.db),
    )
  }
  parts.push('### Environment', environmentMarkdown(r.environment))
  if (r.notes.length > 0) parts.push('### Notes', r.notes.map((n) => `- ${n}`).join('\n'))
  return `${parts.join('\n\n')}\n`
}
