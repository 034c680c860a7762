import type { Reporter, TestModule } from 'vitest/node'

/** One backend the run could not reach, as the global setup found it. */
export interface NotRunBackend {
  /** Shown to the reader, e.g. `PostgreSQL`. */
  readonly label: string
  /** The backend's name as vitest prints it in the shared suites' names (`$name`), e.g. `'postgres'`. */
  readonly suiteTag: string
  /** Why it did not run. */
  readonly reason: string
  /** How to make it run. */
  readonly fix: string
}

// The global setup and this reporter both run in vitest's main process: a global is how the
// setup's findings reach the end of the output (provide/inject only reaches test workers).
const KEY = Symbol.for('kysely-field-encryption.test.notRun')

/** Called by the global setup with every backend it could not reach. */
export function recordNotRun(backends: readonly NotRunBackend[]): void {
  ;(globalThis as Record<symbol, unknown>)[KEY] = backends
}

const SKIPPED = Symbol.for('kysely-field-encryption.test.skipped')

function recorded(): readonly NotRunBackend[] {
  return ((globalThis as Record<symbol, unknown>)[KEY] as readonly NotRunBackend[] | undefined) ?? []
}

/**
 * The boxed summary of what did not run, or `undefined` when every backend ran. The global
 * setup's teardown prints it: vitest runs that after every reporter, so it is the last output.
 */
export function notRunBox(): string | undefined {
  const backends = recorded()
  if (backends.length === 0) return undefined
  const skipped = ((globalThis as Record<symbol, unknown>)[SKIPPED] as readonly string[] | undefined) ?? []
  return box('NOT RUN', notRunSummary(backends, skipped))
}

/** The lines of the boxed summary: per missing backend, the tests skipped, why, and the fix. */
export function notRunSummary(backends: readonly NotRunBackend[], skippedNames: readonly string[]): string[] {
  const lines: string[] = []
  const plural = (n: number) => `${n} test${n === 1 ? '' : 's'}`
  let counted = 0
  for (const b of backends) {
    const count = skippedNames.filter((n) => n.includes(b.suiteTag)).length
    counted += count
    lines.push(`${b.label}: ${plural(count)} NOT RUN (${b.reason}).`)
    lines.push(`  To run them: ${b.fix}`)
  }
  const other = skippedNames.length - counted
  if (other > 0) lines.push(`Other: ${plural(other)} skipped (see the lines marked ↓ above).`)
  lines.push('Those tests were skipped, not passed. Under CI=true a missing backend fails the run.')
  return lines
}

/** Draws `lines` in a box titled `title`. */
function box(title: string, lines: readonly string[]): string {
  const width = Math.max(title.length + 4, ...lines.map((l) => l.length)) + 2
  const top = `┌─ ${title} ${'─'.repeat(width - title.length - 3)}┐`
  const body = lines.map((l) => `│ ${l.padEnd(width - 2)} │`)
  return [top, ...body, `└${'─'.repeat(width)}┘`].join('\n')
}

/**
 * Collects the full names of the skipped tests, so the summary {@link notRunBox} (printed last,
 * by the global setup's teardown) can say how many tests each missing backend took with it.
 * A run without databases must not pass for a full one.
 */
export default class NotRunReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const skipped: string[] = []
    for (const module of testModules) {
      for (const test of module.children.allTests('skipped')) skipped.push(test.fullName)
    }
    ;(globalThis as Record<symbol, unknown>)[SKIPPED] = skipped
  }
}
