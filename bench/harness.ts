/**
 * Round-robin measurement on tinybench, for a noisy machine: every variant of a case runs once
 * per round, in an order that rotates from round to round, so a slow patch of the machine (another
 * process, a GC, a thermal step) lands on every variant alike instead of on whichever ran last.
 * Round 0 is a warm-up (JIT, connection pools, key cache) and is discarded.
 */
import { Bench } from 'tinybench'

/**
 * A full garbage collection. The bench runs with `--expose-gc` (`npm run bench`); without it the
 * measurements would charge one variant's garbage to the next, so it refuses to run.
 */
export function collectGarbage(): void {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) {
    throw new Error('Run the benchmarks with node --expose-gc (npm run bench does).')
  }
  gc()
}

/** Summary of one variant over the measured rounds (round 0 excluded). */
export interface Summary {
  /** One value per measured round (ms per operation), in round order. */
  readonly samples: readonly number[]
  readonly min: number
  readonly median: number
  readonly max: number
}

/** The median of `values` (mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  if (sorted.length === 0) return Number.NaN
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** min/median/max of the measured samples. */
export function summarize(samples: readonly number[]): Summary {
  return {
    samples,
    min: Math.min(...samples),
    median: median(samples),
    max: Math.max(...samples),
  }
}

/** `items` rotated left by `by`: round r starts with the r-th variant. */
export function rotate<T>(items: readonly T[], by: number): T[] {
  if (items.length === 0) return []
  const k = by % items.length
  return [...items.slice(k), ...items.slice(0, k)]
}

/**
 * One operation of one variant. `run` performs `batch` operations (so a ~1 µs operation is timed
 * over many calls, not against the timer's own cost); the harness reports ms per operation.
 */
export interface Timed {
  readonly name: string
  readonly batch: number
  /** Performs `batch` operations; may return the ms to count (then the wall time of the call is not used). */
  run(batch: number): unknown
}

/** Options of {@link measureRound}. */
export interface RoundOptions {
  /** Time budget per variant in this round, ms (tinybench `time`). 0: run `iterations` calls only. */
  readonly timeMs: number
  /** Minimum calls of `run` per variant in this round (tinybench `iterations`). */
  readonly iterations: number
}

/**
 * Runs every variant once (for `timeMs`, at least `iterations` calls of `run`), in the given
 * order, on one tinybench `Bench`, and returns the median (over calls) ms per operation of each.
 *
 * Each call times itself and returns `overriddenDuration` = elapsed / batch, so tinybench's
 * statistics are per operation while its time budget counts the whole call.
 */
export async function measureRound(
  variants: readonly Timed[],
  options: RoundOptions,
): Promise<Map<string, number>> {
  const bench = new Bench({
    time: options.timeMs,
    iterations: options.iterations,
    warmup: false,
    throws: true,
  })
  for (const v of variants) {
    bench.add(
      v.name,
      async () => {
        const start = performance.now()
        const out = v.run(v.batch)
        const counted = out instanceof Promise ? await out : out
        const wall = performance.now() - start
        // A run may time itself (to leave out work between operations): it returns those ms. The
        // time budget still counts the whole call.
        const elapsed = typeof counted === 'number' ? counted : wall
        return { overriddenDuration: elapsed / v.batch, overriddenIterationCost: wall }
      },
      // Each variant starts on a collected heap: otherwise the garbage of the variant before it
      // (always the same one: rotation keeps the cyclic order) is collected on its time.
      { async: true, beforeAll: collectGarbage },
    )
  }
  await bench.run()
  const out = new Map<string, number>()
  for (const task of bench.tasks) {
    const r = task.result
    if (r.state !== 'completed') {
      const why = r.state === 'errored' ? r.error.message : r.state
      throw new Error(`Benchmark task ${task.name} did not complete: ${why}`)
    }
    // The median call, not the mean: a call preempted by another process is an outlier, not data.
    out.set(task.name, r.latency.p50)
  }
  return out
}

/**
 * Runs `rounds` rounds of {@link measureRound} over each group (a group = the variants compared
 * with each other), round-major: round r visits every group before round r+1 starts.
 *
 * @returns per group, per variant, the summary over rounds 1..rounds-1
 */
export async function measureGroups(
  groups: ReadonlyArray<{ readonly id: string; readonly variants: readonly Timed[] }>,
  rounds: number,
  options: RoundOptions,
  onRound?: (round: number) => void,
): Promise<Map<string, Map<string, Summary>>> {
  const raw = new Map<string, Map<string, number[]>>()
  for (let r = 0; r < rounds; r++) {
    onRound?.(r)
    for (const group of groups) {
      const result = await measureRound(rotate(group.variants, r), options)
      if (r === 0) continue // warm-up round: discarded
      const byVariant = raw.get(group.id) ?? new Map<string, number[]>()
      raw.set(group.id, byVariant)
      for (const [name, ms] of result) {
        const list = byVariant.get(name) ?? []
        list.push(ms)
        byVariant.set(name, list)
      }
    }
  }
  const out = new Map<string, Map<string, Summary>>()
  for (const [id, byVariant] of raw) {
    out.set(id, new Map([...byVariant].map(([name, samples]) => [name, summarize(samples)])))
  }
  return out
}
