import { SingleBar } from 'cli-progress'
import { isFieldEncryptionError } from '../errors.js'
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
  /** Writes one line to stderr (below the progress bar, on a TTY). */
  line(text: string): void
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
      // What `--processes` waits for; a bar of its own would stay on screen.
      if (p.phase === 'planned') return
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
      const { code, table, driverCode } = errorCodes(error)
      if (json) {
        process.stdout.write(
          `${JSON.stringify({ ok: false, error: { code, driverCode, message: e.message, table, ...errorData(error) } })}\n`,
        )
      } else {
        consola.error(
          `[${code}${driverCode === undefined ? '' : ` ${driverCode}`}] ${e.message}${driverCode !== undefined && connectionFailure(driverCode) ? ' (kfe could not connect: check the database connection its config gives)' : ''}`,
        )
        const cause = (e as { cause?: unknown }).cause
        if (isFieldEncryptionError(cause)) consola.error(`  caused by [${cause.code}] ${cause.message}`)
      }
    },
    line(text) {
      stopBar()
      stream.write(`${text}\n`)
    },
    close: stopBar,
  }
}

/**
 * The code `kfe` prints for a failure: a library error's own code; `DATABASE_ERROR` for an error
 * that comes from the database or its driver with a code of its own (a refused connection,
 * `ECONNREFUSED`; an unknown role, PostgreSQL's `28000`; MySQL's `ER_ACCESS_DENIED_ERROR`), which
 * is kept as `driverCode`, so that `code` only ever holds the codes of docs/errors.md; `ERROR` for
 * anything else (a file system error with its code, `EEXIST`, is no database's).
 */
function errorCodes(error: unknown): { code: string; table?: string; driverCode?: string } {
  if (isFieldEncryptionError(error))
    return error.table === undefined ? { code: error.code } : { code: error.code, table: error.table }
  if (!fromDatabase(error)) return { code: 'ERROR' }
  const driverCode = (error as { code?: unknown } | null)?.code
  if (typeof driverCode === 'string' && driverCode.length > 0) return { code: 'DATABASE_ERROR', driverCode }
  if (typeof driverCode === 'number') return { code: 'DATABASE_ERROR', driverCode: String(driverCode) }
  // Failures pg reports without a code: the database's, named as such. A connection that could
  // not open (the server refusing TLS, a connect timeout) gets the connection hint; one that was
  // cut (it may have been open for a while) does not.
  if (error instanceof Error && CODELESS_CONNECT_FAILURE.test(error.message))
    return { code: 'DATABASE_ERROR', driverCode: 'CONNECTION' }
  if (error instanceof Error && error.message === 'Connection terminated unexpectedly')
    return { code: 'DATABASE_ERROR', driverCode: 'CONNECTION_LOST' }
  return { code: 'ERROR' }
}

/**
 * pg's messages of a connection that could not open, without a code of its own; and of a reply
 * pg cannot read as PostgreSQL's protocol (`Received unexpected copyData message from backend.`:
 * the address is another server's, MySQL's port say).
 */
const CODELESS_CONNECT_FAILURE =
  /^(The server does not support SSL connections|Connection terminated due to connection timeout|timeout expired|Received unexpected \w+ message from backend\.)$/

/**
 * Whether an error with a code of its own may come from the database or its driver: not a file
 * system error (Node's errors of a file, `EEXIST`, `ENOENT`, …, name its `path`) and not an abort
 * (`ABORT_ERR`); a socket error of the connection (`ECONNREFUSED`, with an address) is the
 * driver's.
 */
function fromDatabase(error: unknown): boolean {
  if (error === null || typeof error !== 'object') return false
  const e = error as { path?: unknown; syscall?: unknown; name?: unknown }
  if (typeof e.path === 'string' && typeof e.syscall === 'string') return false
  return e.name !== 'AbortError'
}

/**
 * The machine-readable fields of a library error that docs/errors.md promises beside its code
 * (`rows` and `waitMs` of a refused `retire`, `problems` of `SCHEMA_MISMATCH`, …): names, counts
 * and durations only, never a value. A row context (plaintext context values) is left out.
 */
function errorData(error: unknown): Record<string, unknown> {
  if (!isFieldEncryptionError(error)) return {}
  const data: Record<string, unknown> = {}
  const fields = error as unknown as Record<string, unknown>
  for (const key of ERROR_FIELDS) if (fields[key] !== undefined) data[key] = fields[key]
  return data
}

/** The fields of the error classes of src/errors.ts that `--json` prints. */
const ERROR_FIELDS = [
  'column',
  'rows',
  'waitMs',
  'problems',
  'providerId',
  'operator',
  'hint',
  'index',
  'constraint',
] as const

/**
 * A driver code that says the connection itself failed: Node's socket errors, PostgreSQL's
 * classes 08 (connection exception) and 28 (authorization) and 3D000 (no such database), MySQL's
 * access-denied and unknown-database errors.
 */
function connectionFailure(driverCode: string): boolean {
  if (driverCode === 'CONNECTION') return true
  return (
    /^E(CONNREFUSED|CONNRESET|NOTFOUND|AI_AGAIN|TIMEDOUT|HOSTUNREACH|NETUNREACH|ACCES)$/.test(driverCode) ||
    /^(08|28)[0-9A-Z]{3}$/.test(driverCode) ||
    driverCode === '3D000' ||
    driverCode === 'ER_ACCESS_DENIED_ERROR' ||
    driverCode === 'ER_DBACCESS_DENIED_ERROR' ||
    driverCode === 'ER_BAD_DB_ERROR'
  )
}

/**
 * JSON for results: bigints as strings, dates as ISO strings, bytes (a `bytea` or `binary`
 * primary key's values) as {@link keyText}. A Buffer's `toJSON` has run before a replacer sees
 * the value: the holder's own property is what tells bytes.
 */
function jsonValue(this: unknown, key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString()
  const raw = (this as Record<string, unknown>)[key]
  return raw instanceof Uint8Array ? keyText(raw) : value
}

/**
 * A primary-key value as printed: bytes as `0x` and their hex (never raw bytes on a terminal),
 * anything else as its string.
 */
export function keyText(key: unknown): string {
  if (!(key instanceof Uint8Array)) return String(key)
  return `0x${Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex')}`
}
