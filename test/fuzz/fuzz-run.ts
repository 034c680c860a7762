import fc from 'fast-check'
import type { FuzzDb } from './fuzz-db.js'
import { type FuzzCase, fuzzCase } from './generate.js'
import { isBug, printCase, runCase, type Verdict } from './run-case.js'

/** Counts by shape (the kind of query). */
export interface ShapeStats {
  total: number
  ok: number
  refused: number
  bothError: number
  wrong: number
  leak: number
  plaintextRefused: number
}

/** One bug the fuzzer found, shrunk, with what reproduces it. */
export interface Finding {
  readonly seed: number
  readonly path: string
  readonly verdict: Verdict
  readonly code: string
  readonly shape: string
}

export interface FuzzReport {
  readonly backend: string
  readonly seed: number
  readonly runs: number
  readonly byShape: Map<string, ShapeStats>
  readonly findings: Finding[]
  /** Refusal codes seen, with counts. */
  readonly codes: Map<string, number>
}

function empty(): ShapeStats {
  return { total: 0, ok: 0, refused: 0, bothError: 0, wrong: 0, leak: 0, plaintextRefused: 0 }
}

function record(stats: ShapeStats, v: Verdict): void {
  stats.total += 1
  if (v.kind === 'ok') stats.ok += 1
  else if (v.kind === 'both-error') stats.bothError += 1
  else if (v.kind === 'wrong') stats.wrong += 1
  else if (v.kind === 'leak') stats.leak += 1
  else {
    stats.refused += 1
    if (v.plaintextOnly) stats.plaintextRefused += 1
  }
}

/**
 * Runs `runs` generated cases on `fuzz`, counting verdicts by shape; then shrinks up to
 * `maxFindings` of the failing cases (one per distinct first line of their verdict) to a minimal
 * case, replaying fast-check's path from the same seed.
 */
export async function fuzz(
  db: FuzzDb,
  options: { runs: number; seed: number; maxFindings?: number; onCase?: (n: number) => void },
): Promise<FuzzReport> {
  const arb = fuzzCase(db.family)
  const byShape = new Map<string, ShapeStats>()
  const codes = new Map<string, number>()
  const failing: { path: string; key: string }[] = []
  let n = 0
  await fc.assert(
    fc.asyncProperty(arb, async (c) => {
      const v = await runCase(db, c)
      const stats = byShape.get(c.shape) ?? empty()
      byShape.set(c.shape, stats)
      record(stats, v)
      if (v.kind === 'refused') codes.set(v.code, (codes.get(v.code) ?? 0) + 1)
      if (isBug(v)) failing.push({ path: String(n), key: `${v.kind}:${firstLine(v)}` })
      n += 1
      options.onCase?.(n)
    }),
    { numRuns: options.runs, seed: options.seed },
  )
  const findings: Finding[] = []
  const seen = new Set<string>()
  for (const f of failing) {
    if (findings.length >= (options.maxFindings ?? 5)) break
    if (seen.has(f.key)) continue
    seen.add(f.key)
    const shrunk = await shrink(db, options.seed, f.path)
    if (shrunk !== undefined) findings.push(shrunk)
  }
  return { backend: db.backend, seed: options.seed, runs: n, byShape, findings, codes }
}

function firstLine(v: Verdict): string {
  if (v.kind === 'wrong' || v.kind === 'leak') return v.detail.split('\n')[0]!.replace(/statement \d+: /, '')
  return v.kind === 'refused' ? `plaintext-only refused ${v.code}` : v.kind
}

/** Replays the failing run at `path` and lets fast-check shrink it; undefined if it no longer fails. */
export async function shrink(db: FuzzDb, seed: number, path: string): Promise<Finding | undefined> {
  let last: { c: FuzzCase; v: Verdict } | undefined
  const result = await fc.check(
    fc.asyncProperty(fuzzCase(db.family), async (c) => {
      const v = await runCase(db, c)
      if (isBug(v)) {
        last = { c, v }
        return false
      }
      return true
    }),
    { seed, path, numRuns: 1 },
  )
  if (!result.failed || result.counterexample === null) return undefined
  let [c] = result.counterexample
  // The last failing run fast-check tried is the shrunk counterexample.
  let v = last?.c === c ? last.v : await runCase(db, c)
  // fast-check shrinks the generator's choices, not the statements of a transaction: try each
  // statement alone.
  if (c.statements.length > 1) {
    for (const s of c.statements) {
      const alone: FuzzCase = { ...c, shape: 'transaction (one statement)', statements: [s] }
      const w = await runCase(db, alone)
      if (isBug(w)) {
        c = alone
        v = w
        break
      }
    }
  }
  return { seed, path: result.counterexamplePath ?? path, verdict: v, code: printCase(c), shape: c.shape }
}

/** A Markdown table of the refusal rate by shape. */
export function refusalTable(report: FuzzReport): string {
  const rows = [...report.byShape.entries()].sort((a, b) => b[1].total - a[1].total)
  const pct = (x: number, of: number) => (of === 0 ? '–' : `${((100 * x) / of).toFixed(0)} %`)
  const lines = [
    '| shape | cases | ran, same result | refused | both copies failed | refusal rate | wrong | leaks | plaintext-only refused |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  const total = empty()
  for (const [shape, s] of rows) {
    lines.push(
      `| ${shape} | ${s.total} | ${s.ok} | ${s.refused} | ${s.bothError} | ${pct(s.refused, s.total)} | ${s.wrong} | ${s.leak} | ${s.plaintextRefused} |`,
    )
    for (const k of Object.keys(total) as (keyof ShapeStats)[]) total[k] += s[k]
  }
  lines.push(
    `| **all** | ${total.total} | ${total.ok} | ${total.refused} | ${total.bothError} | ${pct(total.refused, total.total)} | ${total.wrong} | ${total.leak} | ${total.plaintextRefused} |`,
  )
  return lines.join('\n')
}

/** Totals over every shape. */
export function totals(report: FuzzReport): ShapeStats {
  const t = empty()
  for (const s of report.byShape.values())
    for (const k of Object.keys(t) as (keyof ShapeStats)[]) t[k] += s[k]
  return t
}

/** A finding as text: seed, path, verdict, and the case as Kysely code. */
export function describeFinding(f: Finding, backend: string): string {
  const what =
    f.verdict.kind === 'wrong' || f.verdict.kind === 'leak' ? f.verdict.detail : JSON.stringify(f.verdict)
  return [
    `[${backend}] ${f.verdict.kind} (${f.shape}); replay: --seed ${f.seed} --path ${f.path}`,
    what,
    '// N: the fixture tables (users, orders, tags); db: the plugin Kysely',
    f.code,
  ].join('\n')
}
