import { CodecError } from '../errors.js'
import type { ColumnInfo } from './schema.js'

/**
 * A plaintext column's value as the driver returns it, turned into the JS value the column's
 * codec takes: numeric strings for `number`/`bigint` (PostgreSQL's numeric and int8), 0/1 for
 * `boolean` (MySQL's tinyint), the JSON text for `json` (read as text: `columnRowColumns`), a `Date` of a
 * `date` column for `calendarDate` (the drivers make it local midnight). Anything else is
 * returned as it is, for the codec to accept or refuse. `exact`: the row's `PLAINTEXT_EXACT`
 * (src/ops/plaintext-exact.ts; undefined when the column's type needs none, and on the plugin's
 * reads, which have none).
 * @throws CodecError `CODEC_INVALID_VALUE` when the driver read the value rounded (`exact` false:
 *   a timestamp with microseconds, a MySQL `FLOAT`), or for a decimal a number cannot hold
 *   exactly: the row is counted failed, never stored rounded
 * @internal
 */
export function plaintextValue(column: ColumnInfo, raw: unknown, exact?: unknown): unknown {
  if (raw === null || raw === undefined) return null
  if (exact === false || exact === 0 || exact === '0')
    throw new CodecError(
      'CODEC_INVALID_VALUE',
      `${column.table.physical}.${column.physical} holds a value its driver reads rounded (a timestamp with more than millisecond precision, a FLOAT the nearest double does not hold): it would be stored as another value. Round the column first (to milliseconds), or encrypt it with a codec that holds it.`,
      { table: column.table.logical, column: column.logical },
    )
  switch (column.spec.codec.kind) {
    case 'number':
      return typeof raw === 'string' && raw.trim() !== '' ? exactNumber(column, raw) : raw
    case 'bigint':
      return typeof raw === 'string' || typeof raw === 'number' ? BigInt(raw) : raw
    case 'boolean':
      return raw === 0 || raw === 1 ? raw === 1 : raw
    case 'json': {
      if (typeof raw !== 'string') return raw
      const parsed: unknown = JSON.parse(raw)
      // The JSON value null, not SQL NULL: the encrypted column has only SQL NULL for it (the
      // codec's null), so the row cannot be moved as it is, and is counted failed.
      if (parsed === null)
        throw new CodecError(
          'CODEC_INVALID_VALUE',
          `${column.table.physical}.${column.physical} holds the JSON value null in a row: its encrypted form can only be SQL NULL. Set such rows to SQL NULL first.`,
          { table: column.table.logical, column: column.logical },
        )
      return parsed
    }
    case 'calendarDate': {
      if (!(raw instanceof Date)) return raw
      const pad = (n: number, w = 2) => String(n).padStart(w, '0')
      return `${pad(raw.getFullYear(), 4)}-${pad(raw.getMonth() + 1)}-${pad(raw.getDate())}`
    }
    case 'bytes':
      return raw instanceof Uint8Array ? Buffer.from(raw) : raw
    default:
      return raw
  }
}

/**
 * `Number(text)` of a decimal the database returned as text (numeric, int8, DECIMAL), only when
 * the number prints back as the same decimal: `9007199254740993` or `12345678901234567.89` would
 * be stored as another value (a double has ~17 significant digits).
 * @throws CodecError `CODEC_INVALID_VALUE` otherwise (the row is counted failed, never altered)
 */
function exactNumber(column: ColumnInfo, text: string): number {
  const trimmed = text.trim()
  // PostgreSQL's numeric holds ±Infinity and NaN (14+): the codec decides on those.
  if (/^[+-]?(Infinity|NaN)$/.test(trimmed)) return Number(trimmed)
  const n = Number(trimmed)
  if (Number.isFinite(n) && decimalKey(String(n)) === decimalKey(trimmed)) return n
  throw new CodecError(
    'CODEC_INVALID_VALUE',
    `${column.table.physical}.${column.physical} holds a decimal that a JavaScript number cannot hold exactly (more than ~17 significant digits): the number codec would store another value. Encrypt it with the bigint codec (integers) or as text.`,
    { table: column.table.logical, column: column.logical },
  )
}

/**
 * A decimal's value as `digits e exponent`, without leading or trailing zeros or a plus sign:
 * equal for `1.50`, `1.5` and `15e-1`; undefined for anything else than a decimal.
 */
function decimalKey(text: string): string | undefined {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text)
  if (m === null) return undefined
  const fraction = m[3] ?? ''
  let digits = `${m[2] ?? ''}${fraction}`.replace(/^0+/, '')
  if (digits === '') return '0'
  let exponent = Number(m[4] ?? 0) - fraction.length
  const trailing = digits.length - digits.replace(/0+$/, '').length
  digits = digits.slice(0, digits.length - trailing)
  exponent += trailing
  return `${m[1] === '-' ? '-' : ''}${digits}e${exponent}`
}
