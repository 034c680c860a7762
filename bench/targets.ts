/**
 * The performance targets, checked against one run's numbers. They are reported, never asserted:
 * a benchmark on a shared 2-core machine is evidence, not a test.
 */
import type { DbOp, EngineResult } from './db.js'
import { FLOOR_THROUGH_KYSELY_PLUGIN } from './db-variants.js'
import type { FieldResults } from './fields.js'
import { median } from './harness.js'

/**
 * `met` and `missed` are decided by the run; `not resolved`: the measured ratio's 95 % interval
 * holds the goal, so this run cannot tell (database targets only); `not run`: no measurement.
 */
export type TargetStatus = 'met' | 'missed' | 'not resolved' | 'not run'

export interface TargetCheck {
  readonly target: string
  /** The measured value, formatted. */
  readonly measured: string
  readonly goal: string
  readonly status: TargetStatus
}

export const DB_GOALS: ReadonlyArray<{ variant: string; op: DbOp; max: number }> = [
  { variant: 'plugin', op: 'insert', max: 1.1 },
  { variant: 'plugin', op: 'selectAll', max: 1.1 },
  { variant: 'plugin', op: 'lookup', max: 1.05 },
  { variant: 'plugin-plain', op: 'insert', max: 1.02 },
  { variant: 'plugin-plain', op: 'lookup', max: 1.02 },
  { variant: 'plugin-plain', op: 'selectAll', max: 1.02 },
]

export const OP_LABEL: Readonly<Record<DbOp, string>> = {
  insert: 'insert 10k',
  lookup: '2k lookups',
  selectAll: 'select all',
}

/** median(variant) / median(its reference) for one engine and op, or undefined. */
export function dbRatio(e: EngineResult, variant: string, op: DbOp): number | undefined {
  const v = e.variants?.find((x) => x.id === variant)
  if (v?.reference === undefined || e.timings === undefined) return undefined
  const mine = e.timings[variant]?.[op].median
  const ref = e.timings[v.reference]?.[op].median
  return mine === undefined || ref === undefined ? undefined : mine / ref
}

/** Resamples of {@link ratioInterval}: enough for stable 2.5 / 97.5 percentiles. */
const BOOTSTRAP_RESAMPLES = 4000

/** mulberry32: a small seeded generator, so one run's results always give the same interval. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

/**
 * The 95 % interval of {@link dbRatio} by a paired percentile bootstrap over the measured rounds:
 * rounds are drawn with replacement, round i of the variant always with round i of its reference
 * (they ran side by side), and the ratio of medians is taken of each resample. It says how far
 * this run's rounds let the ratio move; it cannot see noise common to every round of a run.
 */
export function ratioInterval(
  e: EngineResult,
  variant: string,
  op: DbOp,
): { low: number; high: number } | undefined {
  const v = e.variants?.find((x) => x.id === variant)
  if (v?.reference === undefined) return undefined
  const mine = e.timings?.[variant]?.[op].samples
  const ref = e.timings?.[v.reference]?.[op].samples
  if (mine === undefined || ref === undefined || mine.length !== ref.length || mine.length < 2)
    return undefined
  const random = seededRandom(0x6b6665)
  const n = mine.length
  const ratios: number[] = []
  for (let b = 0; b < BOOTSTRAP_RESAMPLES; b++) {
    const a: number[] = []
    const r: number[] = []
    for (let i = 0; i < n; i++) {
      const pick = Math.floor(random() * n)
      a.push(mine[pick] as number)
      r.push(ref[pick] as number)
    }
    ratios.push(median(a) / median(r))
  }
  ratios.sort((x, y) => x - y)
  const at = (q: number) => ratios[Math.min(ratios.length - 1, Math.floor(q * ratios.length))] as number
  return { low: at(0.025), high: at(0.975) }
}

/** A ratio target (≤ `goal`) judged on its 95 % interval. */
export function ratioStatus(
  interval: { low: number; high: number } | undefined,
  ratio: number,
  goal: number,
): TargetStatus {
  if (interval === undefined) return ratio <= goal ? 'met' : 'missed'
  if (interval.high <= goal) return 'met'
  if (interval.low > goal) return 'missed'
  return 'not resolved'
}

/**
 * The ratio the CPU case implies for a database op: 1 + (variant's CPU − reference's CPU) /
 * reference's measured time per operation (per lookup, per inserted row, per selected row).
 */
export function cpuRatio(
  e: EngineResult,
  variant: string,
  op: DbOp,
  caches: 'warm' | 'disturbed' = 'warm',
): number | undefined {
  const v = e.variants?.find((x) => x.id === variant)
  if (v?.reference === undefined || e.cpu === undefined || e.settings === undefined) return undefined
  const lookups = caches === 'warm' ? e.cpu.lookupUs : e.cpu.coldLookupUs
  const perOp = op === 'lookup' ? lookups : op === 'insert' ? e.cpu.insertRowUs : e.cpu.selectRowUs
  const count = op === 'lookup' ? e.settings.lookups : e.settings.rows
  const mine = perOp?.[variant]?.median
  const ref = perOp?.[v.reference]?.median
  const refMs = e.timings?.[v.reference]?.[op].median
  if (mine === undefined || ref === undefined || refMs === undefined) return undefined
  return 1 + (mine - ref) / ((refMs * 1000) / count)
}

/**
 * The A/A control for one op: plain Kysely against itself on a second table. The ratio of
 * medians, and the range of the per-round ratios (round i of one against round i of the other).
 */
export function controlRatio(
  e: EngineResult,
  op: DbOp,
): { ratio: number; low: number; high: number } | undefined {
  const ratio = dbRatio(e, 'plain-control', op)
  const mine = e.timings?.['plain-control']?.[op].samples
  const ref = e.timings?.plain?.[op].samples
  if (ratio === undefined || mine === undefined || ref === undefined || mine.length !== ref.length)
    return undefined
  const perRound = mine.map((m, i) => m / (ref[i] as number))
  return { ratio, low: Math.min(...perRound), high: Math.max(...perRound) }
}

/**
 * How much more a microsecond of the process's CPU costs against the real engine than in the warm
 * loop of the CPU case, read off the floor: its measured time per operation (per lookup, per
 * inserted row) over plain Kysely's, divided by its CPU per operation over plain Kysely's. The
 * process's code runs between round trips (one per lookup, one per batch of inserted rows), with
 * caches, branch predictors and the core's clock left to the database's work in between.
 *
 * @returns the factor, what it predicts for the plugin/floor ratio of `op`, and the CPU budget
 *   (µs per operation over the floor's) that the ≤ `goal` target leaves at that factor
 */
export function roundTripFactor(
  e: EngineResult,
  op: 'lookup' | 'insert',
  goal: number,
):
  | {
      factor: number
      measuredUs: number
      cpuUs: number
      predicted: number
      budgetUs: number
      overFloorUs: number
    }
  | undefined {
  if (e.settings === undefined) return undefined
  const count = op === 'lookup' ? e.settings.lookups : e.settings.rows
  const perOp = (id: string) => {
    const ms = e.timings?.[id]?.[op].median
    return ms === undefined ? undefined : (ms * 1000) / count
  }
  const cpu = (id: string) => (op === 'lookup' ? e.cpu?.lookupUs : e.cpu?.insertRowUs)?.[id]?.median
  const [floor, plain, floorCpu, plainCpu, pluginCpu] = [
    perOp('floor'),
    perOp('plain'),
    cpu('floor'),
    cpu('plain'),
    cpu('plugin'),
  ]
  if (
    floor === undefined ||
    plain === undefined ||
    floorCpu === undefined ||
    plainCpu === undefined ||
    pluginCpu === undefined
  )
    return undefined
  const measuredUs = floor - plain
  const cpuUs = floorCpu - plainCpu
  // Noise can put the floor at or below plain Kysely: no factor can be read off such a run.
  if (measuredUs <= 0 || cpuUs <= 0) return undefined
  const factor = measuredUs / cpuUs
  const overFloorUs = pluginCpu - floorCpu
  return {
    factor,
    measuredUs,
    cpuUs,
    predicted: 1 + (overFloorUs * factor) / floor,
    budgetUs: ((goal - 1) * floor) / factor,
    overFloorUs,
  }
}

/**
 * How many TTL windows the plugin's instance lived through: a key loaded when the instance
 * starts is reloaded at most once per TTL, so ⌊lifetime / TTL⌋ + 1 loads per key at most.
 */
export function ttlWindows(e: EngineResult): number {
  if (e.pluginLifetimeMs === undefined || e.keyTtlMs === undefined) return 1
  return Math.floor(e.pluginLifetimeMs / e.keyTtlMs) + 1
}

/** ms of encrypt + decrypt (medians) of one library for one payload. */
export function encDecMs(f: FieldResults, payload: string, lib: string): number | undefined {
  const t = f.timings[payload]
  const e = t?.encrypt?.[lib]?.median
  const d = t?.decrypt?.[lib]?.median
  return e === undefined || d === undefined ? undefined : e + d
}

export function checkTargets(
  fields: FieldResults | undefined,
  db: readonly EngineResult[] | undefined,
): TargetCheck[] {
  const out: TargetCheck[] = []
  if (db !== undefined) {
    for (const e of db) {
      for (const g of DB_GOALS) {
        const ref = g.variant === 'plugin' ? 'hand-written floor' : 'plain Kysely'
        const what = g.variant === 'plugin' ? 'plugin' : 'plugin, plaintext table'
        const r = dbRatio(e, g.variant, g.op)
        const cpu = cpuRatio(e, g.variant, g.op)
        const cold = g.op === 'lookup' ? cpuRatio(e, g.variant, g.op, 'disturbed') : undefined
        const coldNote = cold === undefined ? '' : `; caches disturbed: ${cold.toFixed(3)}×`
        const rt =
          g.variant === 'plugin' && g.op !== 'selectAll' ? roundTripFactor(e, g.op, g.max) : undefined
        const rtNote = rt === undefined ? '' : `; with the round-trip factor: ${rt.predicted.toFixed(3)}×`
        const control = controlRatio(e, g.op)
        const controlNote = control === undefined ? '' : `; A/A control: ${control.ratio.toFixed(3)}×`
        // What Kysely's own thinnest plugin costs the floor: the part of the goal any plugin spends.
        const bare = g.variant === 'plugin' ? dbRatio(e, FLOOR_THROUGH_KYSELY_PLUGIN.id, g.op) : undefined
        const bareNote = bare === undefined ? '' : `; a plugin's bare cost: ${bare.toFixed(3)}×`
        const cpuNote =
          cpu === undefined
            ? ''
            : ` (CPU alone: ${cpu.toFixed(3)}×${coldNote}${rtNote}${controlNote}${bareNote})`
        const interval = ratioInterval(e, g.variant, g.op)
        const intervalNote =
          interval === undefined
            ? ''
            : `, 95 % interval ${interval.low.toFixed(3)}–${interval.high.toFixed(3)}`
        out.push({
          target: `${e.engine}: ${what} vs ${ref}, ${OP_LABEL[g.op]}`,
          measured: r === undefined ? (e.notRun ?? 'n/a') : `${r.toFixed(3)}×${intervalNote}${cpuNote}`,
          goal: `≤ ${g.max.toFixed(2)}×`,
          status: r === undefined ? 'not run' : ratioStatus(interval, r, g.max),
        })
      }
      if (e.providerCallsPerRound !== undefined && e.keys !== undefined) {
        const calls = e.providerCallsPerRound.at(-1) ?? Number.NaN
        const windows = ttlWindows(e)
        const allowed = e.keys * windows
        const minutes = (ms: number) => `${(ms / 60_000).toFixed(1)} min`
        const lifetime =
          e.pluginLifetimeMs === undefined || e.keyTtlMs === undefined
            ? ''
            : `: ${e.keys} keys × ${windows} TTL window${windows === 1 ? '' : 's'} of ${minutes(e.keyTtlMs)} in the instance's ${minutes(e.pluginLifetimeMs)}`
        out.push({
          target: `${e.engine}: key-provider calls (${e.rowsThroughPlugin?.toLocaleString('en-US')} rows written/read, ${e.providerCallsPerRound.length} rounds)`,
          measured: `${calls} (after each round: ${e.providerCallsPerRound.join(', ')})`,
          goal: `≤ ${allowed} (one per key per cache TTL${lifetime})`,
          status: calls <= allowed ? 'met' : 'missed',
        })
      }
    }
  }
  if (fields !== undefined) {
    for (const p of fields.payloads) {
      const ours = encDecMs(fields, p.id, 'ours')
      for (const [peer, factor, label] of [
        ['cloak', 2, '@47ng/cloak'],
        ['ciphersweet-modern', 4, 'ciphersweet-js ModernCrypto'],
      ] as const) {
        const theirs = encDecMs(fields, p.id, peer)
        const floor = encDecMs(fields, p.id, 'floor')
        const floorAad = encDecMs(fields, p.id, 'floor-aad')
        const ratio = ours === undefined || theirs === undefined ? undefined : theirs / ours
        // What the hand-written floor reaches against the same peer: the ceiling for AES-GCM here;
        // and with the table/column binding (AAD) every ciphertext of ours carries.
        const bound =
          floorAad === undefined || theirs === undefined
            ? ''
            : `; floor with AAD: ${(theirs / floorAad).toFixed(2)}×`
        const ceiling =
          floor === undefined || theirs === undefined
            ? ''
            : ` (floor: ${(theirs / floor).toFixed(2)}×${bound})`
        out.push({
          target: `${p.label}: encrypt+decrypt throughput vs ${label}`,
          measured: ratio === undefined ? 'n/a' : `${ratio.toFixed(2)}×${ceiling}`,
          goal: `≥ ${factor}×`,
          status: ratio === undefined ? 'not run' : ratio >= factor ? 'met' : 'missed',
        })
      }
    }
    const overheads = Object.values(fields.overhead.ours ?? {})
    const worst = Math.max(...overheads)
    out.push({
      target: 'Bytes of overhead per field (binary column)',
      measured: `${worst} B`,
      goal: '≤ 32 B',
      status: worst <= 32 ? 'met' : 'missed',
    })
  }
  return out
}
