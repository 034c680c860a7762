import { CodecError } from '../errors.js'
import { canonicalJson, type JsonValue } from './canonical-json.js'
import { isJsonValue, jsonText } from './json-text.js'

/** The value types an encrypted column can hold. */
export type CodecKind = 'text' | 'number' | 'bigint' | 'boolean' | 'date' | 'json' | 'bytes' | 'calendarDate'

/**
 * Turns one JS type into canonical bytes and back. Canonical means: the same value gives the same
 * bytes, always, in every process and every version of this library, because blind indexes are
 * computed over these bytes and the `tag` is stored in every ciphertext.
 */
export interface Codec<T> {
  /** The codec's name. */
  readonly kind: CodecKind
  /**
   * 4-bit tag stored in the low nibble of a ciphertext's type byte. Frozen forever:
   * text=1 number=2 bigint=3 boolean=4 date=5 json=6 bytes=7 calendarDate=8.
   */
  readonly tag: number
  /**
   * @returns the canonical bytes of `value`, in a fresh buffer the caller may zero.
   * @throws CodecError `CODEC_INVALID_VALUE` when `value` is not of this codec's type; the message
   *   names the expected type, never the value.
   */
  encode(value: T): Buffer
  /**
   * For a codec whose encoding is UTF-8 text (text, json): the text whose UTF-8 bytes a
   * ciphertext holds, so that `encryptValue` can hand the string to node:crypto, which encodes it
   * itself, instead of a fresh buffer per value. {@link Codec.decode} reads those bytes back as a value
   * equal to `value`; they may be a cheaper form than the canonical one (json: the value's own
   * key order), so this is never used for a blind index. Absent: {@link Codec.encode}.
   *
   * @returns a well-formed string (no lone surrogate: its UTF-8 bytes are exact).
   * @throws CodecError `CODEC_INVALID_VALUE` exactly when {@link Codec.encode} throws.
   */
  ciphertextText?(value: T): string
  /**
   * For a codec whose canonical encoding is UTF-8 text (text, json): the text whose UTF-8 bytes
   * {@link Codec.encode} returns, so that a blind index can be computed over them without a
   * fresh buffer per value. Absent: {@link Codec.encode}.
   *
   * @returns a well-formed string whose UTF-8 bytes equal `encode(value)`.
   * @throws CodecError `CODEC_INVALID_VALUE` exactly when {@link Codec.encode} throws.
   */
  canonicalText?(value: T): string
  /**
   * @returns the value whose canonical bytes are `bytes`; never a view of `bytes`.
   * @throws CodecError `CODEC_INVALID_VALUE` when `bytes` is not a canonical encoding.
   */
  decode(bytes: Buffer): T
  /** True exactly when {@link Codec.encode} accepts `value`. */
  is(value: unknown): value is T
}

function invalid(kind: CodecKind, expected: string): never {
  throw new CodecError('CODEC_INVALID_VALUE', `The ${kind} codec expects ${expected}.`)
}

function malformed(kind: CodecKind, why: string): never {
  throw new CodecError('CODEC_INVALID_VALUE', `Malformed ${kind} encoding: ${why}.`)
}

// In unicode mode a well-formed surrogate pair is one code point outside this range, so only a
// lone surrogate matches. (String#isWellFormed is ES2024; Node 20 has it, our lib setting does not.)
const LONE_SURROGATE = /[\uD800-\uDFFF]/u

/** True when `s` has no lone surrogate, i.e. it has exactly one UTF-8 encoding. */
export function isWellFormedString(s: string): boolean {
  return !LONE_SURROGATE.test(s)
}

// fatal: reject malformed UTF-8 rather than substitute U+FFFD. ignoreBOM: keep a leading U+FEFF,
// which is part of the value (the default would strip it and break the round trip).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

function decodeUtf8(kind: CodecKind, bytes: Buffer): string {
  try {
    return utf8.decode(bytes)
  } catch {
    return malformed(kind, 'not valid UTF-8')
  }
}

/** `value` when the text codec accepts it. @throws CodecError `CODEC_INVALID_VALUE` */
function checkedText(value: string): string {
  if (typeof value !== 'string') invalid('text', 'a string')
  if (!isWellFormedString(value)) invalid('text', 'a well-formed string (this one has a lone surrogate)')
  return value
}

/**
 * `text`: the UTF-8 bytes of the string exactly as given. No Unicode normalization happens here
 * (normalizers belong to blind indexes), so `'é'` precomposed and decomposed are different values.
 * Strings with a lone surrogate are rejected: UTF-8 cannot represent them, and Node would silently
 * turn each into U+FFFD, so two different strings would share one encoding.
 */
const text: Codec<string> = Object.freeze({
  kind: 'text',
  tag: 1,
  is: (value: unknown): value is string => typeof value === 'string' && isWellFormedString(value),
  encode: (value: string): Buffer => Buffer.from(checkedText(value), 'utf8'),
  ciphertextText: checkedText,
  canonicalText: checkedText,
  decode: (bytes: Buffer): string => decodeUtf8('text', bytes),
} satisfies Codec<string>)

/**
 * `number`: 8-byte IEEE-754 binary64, big-endian. `-0` is encoded as `+0` (they are `===`, so
 * they must share one encoding and one blind index); it decodes as `+0`. `NaN` is rejected: it has
 * many bit patterns and never equals itself. `±Infinity` are accepted.
 */
const number: Codec<number> = Object.freeze({
  kind: 'number',
  tag: 2,
  is: (value: unknown): value is number => typeof value === 'number' && !Number.isNaN(value),
  encode(value: number): Buffer {
    if (typeof value !== 'number') invalid('number', 'a number')
    if (Number.isNaN(value)) invalid('number', 'a number that is not NaN (NaN has no canonical encoding)')
    const out = Buffer.allocUnsafe(8)
    out.writeDoubleBE(value === 0 ? 0 : value) // -0 === 0: write +0
    return out
  },
  decode(bytes: Buffer): number {
    if (bytes.length !== 8) malformed('number', `expected 8 bytes, got ${bytes.length}`)
    const value = bytes.readDoubleBE(0)
    if (Number.isNaN(value)) malformed('number', 'NaN is never encoded')
    if (Object.is(value, -0)) malformed('number', '-0 is encoded as +0')
    return value
  },
} satisfies Codec<number>)

function bitLength(n: bigint): number {
  return n === 0n ? 0 : n.toString(2).length
}

/**
 * `bigint`: signed two's complement, big-endian, minimal length (as Java's
 * `BigInteger.toByteArray()`): `0n` → `00`, `127n` → `7f`, `128n` → `00 80`, `-1n` → `ff`,
 * `-128n` → `80`, `-129n` → `ff 7f`. Decoding rejects non-minimal forms.
 */
const bigint: Codec<bigint> = Object.freeze({
  kind: 'bigint',
  tag: 3,
  is: (value: unknown): value is bigint => typeof value === 'bigint',
  encode(value: bigint): Buffer {
    if (typeof value !== 'bigint') invalid('bigint', 'a bigint')
    // Magnitude bits of the value (or of its one's complement when negative), plus a sign bit.
    const length = Math.floor(bitLength(value >= 0n ? value : -value - 1n) / 8) + 1
    const unsigned = value >= 0n ? value : (1n << BigInt(length * 8)) + value
    return Buffer.from(unsigned.toString(16).padStart(length * 2, '0'), 'hex')
  },
  decode(bytes: Buffer): bigint {
    if (bytes.length === 0) malformed('bigint', 'empty')
    const first = bytes[0] as number
    if (bytes.length > 1) {
      const second = bytes[1] as number
      if ((first === 0x00 && second < 0x80) || (first === 0xff && second >= 0x80)) {
        malformed('bigint', 'not minimal length')
      }
    }
    const unsigned = BigInt(`0x${bytes.toString('hex')}`)
    return first >= 0x80 ? unsigned - (1n << BigInt(bytes.length * 8)) : unsigned
  },
} satisfies Codec<bigint>)

/** `boolean`: one byte, `00` for false and `01` for true; decoding rejects anything else. */
const boolean: Codec<boolean> = Object.freeze({
  kind: 'boolean',
  tag: 4,
  is: (value: unknown): value is boolean => typeof value === 'boolean',
  encode(value: boolean): Buffer {
    if (typeof value !== 'boolean') invalid('boolean', 'a boolean')
    return Buffer.from([value ? 1 : 0])
  },
  decode(bytes: Buffer): boolean {
    if (bytes.length !== 1 || (bytes[0] as number) > 1) malformed('boolean', 'expected one byte, 00 or 01')
    return bytes[0] === 1
  },
} satisfies Codec<boolean>)

// ECMA-262 §21.4.1.1: a Date's time value lies within ±8.64e15 ms of the epoch.
const MAX_TIME = 8_640_000_000_000_000n

/**
 * `date`: a JS `Date` as an instant: 8-byte signed big-endian count of milliseconds since
 * 1970-01-01T00:00:00Z. Precision is the millisecond (all a `Date` has); there is no time zone.
 * It does not carry the semantics of a database `date` (a calendar day) or `time` column: a
 * `Date` for midnight in one time zone is another day in the next. For a calendar day (a date
 * of birth) use {@link calendarDate}. Invalid dates are rejected.
 */
const date: Codec<Date> = Object.freeze({
  kind: 'date',
  tag: 5,
  is: (value: unknown): value is Date => value instanceof Date && !Number.isNaN(value.getTime()),
  encode(value: Date): Buffer {
    if (!(value instanceof Date)) invalid('date', 'a Date')
    const ms = value.getTime()
    if (Number.isNaN(ms)) invalid('date', 'a valid Date (this one is Invalid Date)')
    const out = Buffer.allocUnsafe(8)
    out.writeBigInt64BE(BigInt(ms))
    return out
  },
  decode(bytes: Buffer): Date {
    if (bytes.length !== 8) malformed('date', `expected 8 bytes, got ${bytes.length}`)
    const ms = bytes.readBigInt64BE(0)
    if (ms > MAX_TIME || ms < -MAX_TIME) malformed('date', 'outside the range of a JS Date')
    return new Date(Number(ms))
  },
} satisfies Codec<Date>)

/**
 * `json`: JSON text in UTF-8. `encode` (the bytes a blind index is computed over) is canonical
 * (see {@link canonicalJson}): keys sorted by UTF-16 code units at every depth, no whitespace,
 * numbers as `JSON.stringify` prints them. A ciphertext holds `JSON.stringify` of the value in
 * its own key order ({@link jsonText}): sorting is only needed where bytes are compared, and
 * reading takes any order. Both reject `undefined`, functions, bigints, `NaN`, `±Infinity`,
 * cycles and non-plain objects; a `Date` inside JSON is rejected (its `toJSON` is not called),
 * and so is a value nesting arrays and objects more than `MAX_JSON_DEPTH` (1000) levels deep.
 * Decoding is `JSON.parse` (not recursive: any depth stored reads back; any key order, as every
 * version of this library has read it).
 */
const json: Codec<JsonValue> = Object.freeze({
  kind: 'json',
  tag: 6,
  is: (value: unknown): value is JsonValue => isJsonValue(value),
  encode: (value: JsonValue): Buffer => Buffer.from(canonicalJson(value), 'utf8'),
  // JSON.stringify escapes lone surrogates (ES2019 well-formed JSON.stringify): well-formed.
  ciphertextText: jsonText,
  canonicalText: canonicalJson,
  decode(bytes: Buffer): JsonValue {
    const source = decodeUtf8('json', bytes)
    try {
      return JSON.parse(source) as JsonValue
    } catch {
      return malformed('json', 'not JSON text')
    }
  },
} satisfies Codec<JsonValue>)

/** `bytes`: a `Uint8Array` (or `Buffer`) as is. Encoding copies; decoding returns a fresh `Buffer`. */
const bytes: Codec<Uint8Array> = Object.freeze({
  kind: 'bytes',
  tag: 7,
  is: (value: unknown): value is Uint8Array => value instanceof Uint8Array,
  encode(value: Uint8Array): Buffer {
    if (!(value instanceof Uint8Array)) invalid('bytes', 'a Uint8Array or Buffer')
    return Buffer.from(value) // a copy: the caller's buffer is never zeroed by us
  },
  decode: (encoded: Buffer): Buffer => Buffer.from(encoded),
} satisfies Codec<Uint8Array>)

const CALENDAR_DATE = /^(\d{4})-(\d{2})-(\d{2})$/

/** Days in `month` (1..12) of `year`, proleptic Gregorian calendar (ISO 8601 §4.3.2.1). */
function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31
}

/** True when `s` is a valid `YYYY-MM-DD` calendar date, years 0001 to 9999. */
function isCalendarDate(s: string): boolean {
  const m = CALENDAR_DATE.exec(s)
  if (m === null) return false
  const year = Number(m[1])
  const month = Number(m[2])
  const day = Number(m[3])
  return year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(year, month)
}

/**
 * `calendarDate`: a calendar day as an ISO 8601 `YYYY-MM-DD` string (a date of birth, a due
 * date), with no time and no time zone: the string written is the string read, in every time
 * zone. Encoded as its 10 ASCII bytes. Years 0001 to 9999 of the proleptic Gregorian calendar;
 * the day must exist (`'2023-02-29'` is rejected). A `Date` is rejected: which day it is
 * depends on a time zone.
 */
const calendarDate: Codec<string> = Object.freeze({
  kind: 'calendarDate',
  tag: 8,
  is: (value: unknown): value is string => typeof value === 'string' && isCalendarDate(value),
  encode(value: string): Buffer {
    if (typeof value !== 'string') invalid('calendarDate', "a 'YYYY-MM-DD' string")
    if (!isCalendarDate(value))
      invalid('calendarDate', "an existing day written 'YYYY-MM-DD', years 0001 to 9999")
    return Buffer.from(value, 'latin1')
  },
  decode(bytes: Buffer): string {
    if (bytes.length !== 10) malformed('calendarDate', `expected 10 bytes, got ${bytes.length}`)
    const value = bytes.toString('latin1')
    if (!isCalendarDate(value)) malformed('calendarDate', "not an existing day written 'YYYY-MM-DD'")
    return value
  },
} satisfies Codec<string>)

/** Every codec, by kind. Frozen; tags never change meaning (they are stored in ciphertexts). */
export const codecs: {
  readonly text: Codec<string>
  readonly number: Codec<number>
  readonly bigint: Codec<bigint>
  readonly boolean: Codec<boolean>
  readonly date: Codec<Date>
  readonly json: Codec<JsonValue>
  readonly bytes: Codec<Uint8Array>
  readonly calendarDate: Codec<string>
} = Object.freeze({ text, number, bigint, boolean, date, json, bytes, calendarDate })

const byTag: ReadonlyArray<Codec<unknown> | undefined> = Object.freeze([
  undefined,
  text,
  number,
  bigint,
  boolean,
  date,
  json,
  bytes,
  calendarDate,
] as Array<Codec<unknown> | undefined>)

/**
 * Looks a codec up by the tag stored in a ciphertext's type byte.
 *
 * @param tag - The low nibble of a type byte.
 * @returns The codec, or `undefined` for a tag no codec uses.
 */
export function codecByTag(tag: number): Codec<unknown> | undefined {
  return Number.isInteger(tag) ? byTag[tag] : undefined
}

export type { JsonValue } from './canonical-json.js'
