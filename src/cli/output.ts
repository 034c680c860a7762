import { SingleBar } from 'cli-progress'
import { FieldEncryptionError } from '../errors.js'
import type { Progress } from '../ops/progress.js'
import { consola } from './log.js'

/** Exit codes of `kfe` (docs/operations.md). */
export const EXIT = Object.freeze({ ok: 0, failed: 1, attention: 2 })

/** How a command prints: a progress bar on a TTY, JSON lines otherwise; its result as text or JSON. */
export interface Output {
  readonly json: boolean
  /** Prints one progress step. */
  progress(p: Progress): void
  /** Prints the result: `data` as one JSON line with `--json`, else `human()`. */
  result(data: unknown, human: () => void): void
  /** Prints a failure. */
  error(error: unknown): void
  /** Stops the progress bar. */
  close(): void
}

/** Line-oriented output for `--json` and non-TTY runs; a cli-progress bar with rate and ETA on a TTY. */
export function createOutput(json: boolean, stream: NodeJS.WriteStream = process.stderr): Output {
  const tty = stream.isTTY === true && !json
  let bar: SingleBar | undefined
  let barKey = ''
  let lastPhase = ''
  const started = performance.now()
  let barStarted = started
  let barFirst = 0
  const stopBar = () => {
    bar?.stop()
    bar = undefined
    barKey = ''
  }
  return {
    json,
    progress(p) {
      if (!tty) {
        const elapsed = (performance.now() - started) / 1000
        const rate = elapsed > 0 ? p.done / elapsed : 0
        const etaMs =
          p.total !== undefined && rate > 0 ? Math.round(((p.total - p.done) / rate) * 1000) : undefined
        stream.write(
          `${JSON.stringify({ type: 'progress', ...p, ratePerSecond: Math.round(rate * 10) / 10, etaMs })}\n`,
        )
        return
      }
      if (p.total === undefined || p.unit === 'ms') {
        if (p.phase !== lastPhase) {
          stopBar()
          consola.info(
            `${p.op}${p.table === undefined ? '' : ` ${p.table}`}: ${p.phase}${p.unit === 'ms' && p.total !== undefined ? ` (${Math.round(p.total / 1000)} s)` : ''}`,
          )
        }
        lastPhase = p.phase
        return
      }
      const key = `${p.op}:${p.table}:${p.phase}`
      if (bar === undefined || barKey !== key) {
        stopBar()
        bar = new SingleBar({
          format: `${p.op} ${p.table ?? ''} [{bar}] {percentage}% | {value}/{total} ${p.unit} | {rate}/s | ETA {eta_formatted}`,
          etaBuffer: 20,
          stream,
        })
        bar.start(p.total, p.done, { rate: '0' })
        barKey = key
        barStarted = performance.now()
        barFirst = p.done
      }
      const elapsed = (performance.now() - barStarted) / 1000
      bar.setTotal(p.total)
      bar.update(p.done, { rate: elapsed > 0 ? ((p.done - barFirst) / elapsed).toFixed(1) : '0' })
      lastPhase = p.phase
    },
    result(data, human) {
      stopBar()
      if (json) process.stdout.write(`${JSON.stringify(data, jsonValue)}\n`)
      else human()
    },
    error(error) {
      stopBar()
      const e = error instanceof Error ? error : new Error(String(error))
      const code = (error as FieldEncryptionError | undefined)?.code
      const table = (error as FieldEncryptionError | undefined)?.table
      if (json) {
        process.stdout.write(
          `${JSON.stringify({ ok: false, error: { code: code ?? 'ERROR', message: e.message, table } })}\n`,
        )
      } else {
        consola.error(`${code === undefined ? '' : `[${code}] `}${e.message}`)
        const cause = (e as { cause?: unknown }).cause
        if (cause instanceof FieldEncryptionError)
          consola.error(`  caused by [${cause.code}] ${cause.message}`)
      }
    },
    close: stopBar,
  }
}

/** JSON for results: bigints as strings, dates as ISO strings. */
function jsonValue(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value
}
