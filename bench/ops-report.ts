/**
 * `npm run bench:ops` results as Markdown, and their place in docs/benchmarks.md: between the
 * markers below, which `npm run bench` keeps when it writes the rest of the page.
 */
import type { Environment } from './environment.js'
import type { Summary } from './harness.js'

export const OPS_START = '<!-- ops:start -->'
export const OPS_END = '<!-- ops:end -->'

export interface OpsSettings {
  readonly rows: number
  readonly batchSize: number
  /** Rounds run, including the discarded warm-up. */
  readonly rounds: number
  /** The machine's 1-minute load average at the start and the end (2 cores: above 2, other work competed). */
  readonly load?: { readonly start: number; readonly end: number }
}

/** One timed variant: a whole re-encryption of the table. */
export interface OpsVariant {
  readonly id: string
  readonly label: string
  readonly workers: number
  /** Processes the workers ran in, one worker each (bench/ops-process.ts); absent: one process. */
  readonly processes?: number
  /** The floor variant it is compared with (default: the floor's plain update at its workers). */
  readonly floor?: string
}

export interface OpsEngineResult {
  readonly engine: string
  readonly notRun?: string
  readonly server?: string
  readonly variants?: readonly OpsVariant[]
  /** variant → ms per whole re-encryption of `rows` rows, over the measured rounds. */
  readonly timings?: Readonly<Record<string, Summary>>
}

export interface OpsResults {
  readonly environment: Environment
  readonly settings: OpsSettings
  readonly engines: readonly OpsEngineResult[]
  readonly notes: readonly string[]
}

/** The issue's full size: a run with fewer rows is a smoke run, said so in the report. */
export const FULL_ROWS = 200_000

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '–'

/**
 * Per round, `a`'s time over `b`'s (round i with round i), and their medians' ratio.
 * @returns undefined when either variant did not run
 */
function paired(
  timings: Readonly<Record<string, Summary>>,
  a: string,
  b: string,
): { ratio: number; rounds: number[] } | undefined {
  const x = timings[a]
  const y = timings[b]
  if (x === undefined || y === undefined) return undefined
  return { ratio: x.median / y.median, rounds: x.samples.map((v, i) => v / (y.samples[i] ?? Number.NaN)) }
}

/**
 * yes: every measured round meets the goal; no: none does; else, or from a single round, not
 * resolved (the run cannot tell).
 */
function verdict(rounds: readonly number[], meets: (r: number) => boolean): string {
  if (rounds.length < 2)
    return `not resolved (one measured round: ${meets(rounds[0] ?? Number.NaN) ? 'met' : 'missed'} in it)`
  const met = rounds.filter(meets).length
  if (met === rounds.length) return 'yes'
  if (met === 0) return 'no'
  return `not resolved (${met} of ${rounds.length} rounds)`
}

function range(values: readonly number[], digits: number): string {
  return `${fmt(Math.min(...values), digits)}–${fmt(Math.max(...values), digits)}`
}

function engineMarkdown(e: OpsEngineResult, rows: number, batchSize: number): string {
  if (e.timings === undefined || e.variants === undefined)
    return `#### ${e.engine}\n\n${e.notRun ?? 'NOT RUN'}\n`
  const t = e.timings
  const lines = [
    `#### ${e.engine}${e.server === undefined ? '' : ` (${e.server})`}`,
    '',
    '| job | workers | rows/s (median) | rows/s (min–max) | time ÷ floor, same workers |',
    '|---|---:|---:|---:|---:|',
  ]
  for (const v of e.variants) {
    const s = t[v.id]
    if (s === undefined) continue
    // Each variant against the floor's plain update of its batch size and workers.
    const floorId =
      v.floor ??
      (v.id === 'floor-cas-half-1'
        ? 'floor-half-1'
        : v.id.startsWith('floor-') && !v.id.startsWith('floor-cas')
          ? undefined
          : `floor-${v.workers}`)
    const vsFloor = floorId === undefined ? undefined : paired(t, v.id, floorId)
    lines.push(
      `| ${v.label} | ${v.processes === undefined ? v.workers : `${v.processes} processes × 1`} | ${fmt(rows / (s.median / 1000))} | ${fmt(rows / (s.max / 1000))}–${fmt(rows / (s.min / 1000))} | ${vsFloor === undefined ? '1 (reference)' : `${fmt(vsFloor.ratio, 2)}× (rounds ${range(vsFloor.rounds, 2)})`} |`,
    )
  }
  const targets: string[] = []
  const one = paired(t, 'ours-1', 'floor-1')
  if (one !== undefined) {
    targets.push(
      `| one worker: ours within 1.25× of the floor's time | ${fmt(one.ratio, 2)}× (rounds ${range(one.rounds, 2)}) | ${verdict(one.rounds, (r) => r <= 1.25)} |`,
    )
  }
  // Ours' gain from a second worker at least the floor's, per round: in one process, and in two
  // processes (each side run that way).
  const gain = (what: string, floorWhat: string, oursId: string, floorId: string) => {
    const ours = paired(t, 'ours-1', oursId)
    const floor = paired(t, 'floor-1', floorId)
    if (ours === undefined || floor === undefined) return
    const gains = ours.rounds.map((g, i) => g - (floor.rounds[i] ?? Number.NaN))
    targets.push(
      `| two workers ${what}: ours gains at least the floor's ${floorWhat} gain | ours ${fmt(ours.ratio, 2)}×, floor ${fmt(floor.ratio, 2)}× | ${verdict(gains, (d) => d >= 0)} |`,
    )
  }
  gain('in one process (`--workers 2`)', 'two-worker', 'ours-2', 'floor-2')
  gain('in two processes (`--processes 2`)', 'two-process', 'ours-proc-2', 'floor-proc-2')
  // The issue's "at batch sizes where the database allows it": measured at the run's batch size
  // and at half of it, each reported.
  const sizes = [
    { cas: 'floor-cas-1', plain: 'floor-1', size: batchSize },
    { cas: 'floor-cas-half-1', plain: 'floor-half-1', size: Math.max(1, Math.floor(batchSize / 2)) },
  ]
  for (const { cas: casId, plain, size } of sizes) {
    const cas = paired(t, casId, plain)
    if (cas === undefined) continue
    targets.push(
      `| compare-and-set costs at most 10 % over the floor's plain update (one worker, batches of ${fmt(size)}) | ${fmt((cas.ratio - 1) * 100, 1)} % (rounds ${range(
        cas.rounds.map((r) => (r - 1) * 100),
        1,
      )} %) | ${verdict(cas.rounds, (r) => r <= 1.1)} |`,
    )
  }
  // The same goal for the job itself: every write of ours is a compare-and-set (in parts, see
  // docs/operations.md), so its time over the floor's plain update bounds what compare-and-set
  // costs it, with everything else it does on top.
  if (one !== undefined) {
    targets.push(
      `| compare-and-set as the job writes it: ours (every write compare-and-set) at most 10 % over the floor's plain update (one worker, batches of ${fmt(batchSize)}) | ${fmt((one.ratio - 1) * 100, 1)} % (rounds ${range(
        one.rounds.map((r) => (r - 1) * 100),
        1,
      )} %) | ${verdict(one.rounds, (r) => r <= 1.1)} |`,
    )
  }
  const ours4 = paired(t, 'ours-1', 'ours-4')
  const floor4 = paired(t, 'floor-1', 'floor-4')
  if (ours4 !== undefined && floor4 !== undefined) {
    const oursP4 = paired(t, 'ours-1', 'ours-proc-4')
    const floorP4 = paired(t, 'floor-1', 'floor-proc-4')
    const processes =
      oursP4 === undefined || floorP4 === undefined
        ? ''
        : `; in four processes, ours ${fmt(oursP4.ratio, 2)}×, the floor ${fmt(floorP4.ratio, 2)}×`
    lines.push(
      '',
      `Four workers over one: in one process, ours ${fmt(ours4.ratio, 2)}×, the floor ${fmt(floor4.ratio, 2)}×${processes} (the machine has ${'{cores}'} cores).`,
    )
  }
  if (targets.length > 0) {
    lines.push('', '| target | measured | met? |', '|---|---|---|', ...targets)
  }
  return `${lines.join('\n')}\n`
}

/** The section of docs/benchmarks.md (and the console) for one run. */
export function opsMarkdown(results: OpsResults): string {
  const { rows, batchSize, rounds } = results.settings
  const env = results.environment
  const head = [
    `Re-encryption of ${fmt(rows)} rows of (id, name, email, ssn), email and ssn encrypted, each with its blind index; batches of ${fmt(batchSize)} rows; ${rounds - 1} measured round${rounds - 1 === 1 ? '' : 's'} after a discarded warm-up, the variants interleaved in a rotating order. Measured ${env.date} on ${env.cpu} (${env.cores} cores), Node ${env.node}.`,
  ]
  if (results.settings.load !== undefined) {
    const { start, end } = results.settings.load
    head.push(
      '',
      `Load average (1 min) at the start ${fmt(start, 1)}, at the end ${fmt(end, 1)}, on ${env.cores} cores${Math.max(start, end) > env.cores ? ': above the cores. The process variants count in it (up to four worker processes of the benchmark and the database at once); beyond them, other work may have shared the machine.' : '.'}`,
    )
  }
  if (rows < FULL_ROWS) {
    head.push(
      '',
      `**Smoke run** (\`--rows ${rows}\`): not the issue's ${fmt(FULL_ROWS)} rows; run \`npm run bench:ops\` on a quiet machine for the real figures.`,
    )
  }
  const body = results.engines.map((e) =>
    engineMarkdown(e, rows, batchSize).replace('{cores}', String(env.cores)),
  )
  const notes = results.notes.map((n) => `- ${n}`)
  return `${[...head, '', ...body, '', ...notes].join('\n')}\n`
}

/** `doc` with its ops section replaced by `section` (appended, with a heading, where it has none). */
export function spliceOps(doc: string, section: string): string {
  const start = doc.indexOf(OPS_START)
  const end = doc.indexOf(OPS_END)
  const block = `${OPS_START}\n${section.trimEnd()}\n${OPS_END}`
  if (start === -1 || end === -1 || end < start) {
    return `${doc.trimEnd()}\n\n## Re-encryption (\`npm run bench:ops\`)\n\n${block}\n`
  }
  return `${doc.slice(0, start)}${block}${doc.slice(end + OPS_END.length)}`
}

/** The ops section `doc` holds now (the placeholder where it has none). */
export function currentOps(doc: string): string {
  const start = doc.indexOf(OPS_START)
  const end = doc.indexOf(OPS_END)
  if (start === -1 || end === -1 || end < start) return 'Not run yet: `npm run bench:ops`.'
  return doc.slice(start + OPS_START.length, end).trim()
}
