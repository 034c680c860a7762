import { CodecError } from '../errors.js'

/**
 * A JSON value the `json` codec accepts: what `JSON.parse` can return, with plain objects only.
 */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue }

function reject(path: string, what: string): never {
  // The message names the position and the kind of value, never the value itself.
  throw new CodecError('CODEC_INVALID_VALUE', `The json codec expects a JSON value, but ${path} is ${what}.`)
}

function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value) as unknown
  return proto === Object.prototype || proto === null
}

// Default Array#sort order: UTF-16 code units, as the spec of the `json` codec requires.
function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/**
 * Most arrays and objects one JSON value may nest (`[[1]]` is 2 levels deep; a scalar is 0). A
 * deeper value is refused with `CODEC_INVALID_VALUE` rather than overflowing the stack of the
 * recursive writer. Reading is not limited: decoding is `JSON.parse`, which does not recurse.
 */
export const MAX_JSON_DEPTH = 1000

function tooDeep(): never {
  // No position: at this depth the path alone would be thousands of characters.
  throw new CodecError(
    'CODEC_INVALID_VALUE',
    `The json codec accepts arrays and objects nested at most ${MAX_JSON_DEPTH} levels deep, but value is nested deeper.`,
  )
}

/** `depth` counts the arrays and objects that enclose `value`. */
function write(value: unknown, path: string, open: Set<object>, out: string[], depth: number): void {
  switch (typeof value) {
    case 'string':
      // JSON.stringify escapes lone surrogates as \udXXX (ES2019 well-formed stringify): canonical.
      out.push(JSON.stringify(value))
      return
    case 'boolean':
      out.push(value ? 'true' : 'false')
      return
    case 'number':
      if (!Number.isFinite(value)) reject(path, Number.isNaN(value) ? 'NaN' : 'an infinite number')
      // JSON.stringify prints the shortest round-tripping form, and -0 as 0.
      out.push(JSON.stringify(value))
      return
    case 'undefined':
      reject(path, 'undefined (JSON.stringify would drop it silently)')
      break
    case 'bigint':
      reject(path, 'a bigint (JSON has no bigint; store it as a string, or use the bigint codec)')
      break
    case 'function':
      reject(path, 'a function')
      break
    case 'symbol':
      reject(path, 'a symbol')
      break
    case 'object':
      break
  }
  if (value === null) {
    out.push('null')
    return
  }
  const obj = value as object
  if (open.has(obj)) reject(path, 'a circular reference')
  if (depth >= MAX_JSON_DEPTH) tooDeep()
  open.add(obj)
  if (Array.isArray(obj)) {
    out.push('[')
    for (let i = 0; i < obj.length; i++) {
      if (i > 0) out.push(',')
      if (!(i in obj)) reject(`${path}[${i}]`, 'a hole in a sparse array')
      write(obj[i], `${path}[${i}]`, open, out, depth + 1)
    }
    out.push(']')
  } else {
    if (obj instanceof Date) {
      reject(path, 'a Date (store date.toISOString() in JSON, or use the date codec)')
    }
    if (!isPlainObject(obj))
      reject(path, 'an object that is not a plain object (a class instance, Map, Buffer, …)')
    if (Object.getOwnPropertySymbols(obj).length > 0) reject(path, 'an object with symbol keys')
    const record = obj as Record<string, unknown>
    const keys = Object.keys(record).sort(byCodeUnits)
    out.push('{')
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      if (i > 0) out.push(',')
      out.push(JSON.stringify(key), ':')
      // The key itself may be plaintext (a map keyed by e-mail), so the path names its rank only.
      write(record[key], `${path}.<key #${i}>`, open, out, depth + 1)
    }
    out.push('}')
  }
  open.delete(obj)
}

/**
 * Serialises `value` as canonical JSON: object keys sorted by UTF-16 code units at every depth,
 * no whitespace, numbers as `JSON.stringify` prints them. Equal values give equal strings, so
 * blind indexes over JSON columns are stable.
 *
 * Stricter than `JSON.stringify`, which silently drops or rewrites what JSON cannot hold: this
 * throws on `undefined`, functions, symbols, bigints, `NaN`, `±Infinity`, sparse arrays, cycles,
 * on objects that are not plain (including `Date`: no `toJSON` is called, so a value never
 * changes shape on the way into the database), and on arrays and objects nested more than
 * {@link MAX_JSON_DEPTH} (1000) levels deep.
 *
 * @param value - The value to serialise.
 * @returns The canonical JSON text.
 * @throws CodecError `CODEC_INVALID_VALUE` when `value` is not representable; the message names
 *   the position (e.g. `value.<key #0>[2]`: object keys by rank, since keys may be data) and the kind of the offending value, never the value
 *   (a value nested too deep is refused without a position).
 */
export function canonicalJson(value: unknown): string {
  try {
    return fast(value, 0)
  } catch (error) {
    if (error !== BAIL) throw error
  } finally {
    // Keys may be data (a map keyed by e-mail): none is kept past the call.
    lastKeys = undefined
    lastSorted = undefined
  }
  // Something to reject (or a very deep value): the careful writer finds it and names its position.
  const out: string[] = []
  write(value, 'value', new Set(), out, 0)
  return out.join('')
}

/** Thrown by {@link fast} when the value needs the careful writer. Never escapes this module. */
const BAIL: unique symbol = Symbol('canonical-json.bail')

/**
 * Strings JSON.stringify prints as they are between quotes: no `"`, `\\`, control character
 * (U+0000..U+001F) or surrogate code unit (a lone one is escaped; pairs go the slow way too).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what JSON escapes.
const VERBATIM = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/

/** `JSON.stringify(s)`, without the call for the common string that needs no escaping. */
function quote(s: string): string {
  return VERBATIM.test(s) ? `"${s}"` : JSON.stringify(s)
}

/**
 * Depth past which {@link fast} hands over to {@link write}: its bound on cycles (it keeps no set
 * of open objects). Deeper values are still serialised, only by the slower writer.
 */
const FAST_MAX_DEPTH = 128

/**
 * The last object's own keys, as `Object.keys` gave them, and sorted: objects of one value often
 * share their keys in the same order (an array of records), and comparing the list is cheaper
 * than sorting it again. Reset at the end of every {@link canonicalJson} call.
 */
let lastKeys: string[] | undefined
let lastSorted: string[] | undefined

/** `Object.keys(record)` sorted by UTF-16 code units (the default sort's order, as byCodeUnits). */
function sortedKeys(record: object): string[] {
  const keys = Object.keys(record)
  const previous = lastKeys
  if (previous !== undefined && previous.length === keys.length) {
    let same = true
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] !== previous[i]) {
        same = false
        break
      }
    }
    if (same) return lastSorted as string[]
  }
  // Only read here, never changed: the cached list can be handed out again.
  const sorted = keys.slice().sort()
  lastKeys = keys
  lastSorted = sorted
  return sorted
}

/**
 * The same output as {@link write} for every value it accepts, without building error paths or a
 * cycle set on the way (the common case: a valid value). Anything {@link write} would reject,
 * and any value deeper than {@link FAST_MAX_DEPTH}, throws {@link BAIL} instead.
 */
function fast(value: unknown, depth: number): string {
  switch (typeof value) {
    case 'string':
      return quote(value)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'number':
      if (!Number.isFinite(value)) throw BAIL
      // Number::toString, which is what JSON.stringify prints for a finite number (-0 as 0).
      return `${value}`
    case 'object':
      break
    default:
      throw BAIL
  }
  if (value === null) return 'null'
  if (depth >= FAST_MAX_DEPTH) throw BAIL
  if (Array.isArray(value)) {
    let s = '['
    for (let i = 0; i < value.length; i++) {
      if (!(i in value)) throw BAIL
      if (i > 0) s += ','
      s += fast(value[i], depth + 1)
    }
    return `${s}]`
  }
  const proto = Object.getPrototypeOf(value) as unknown
  if (proto !== Object.prototype && proto !== null) throw BAIL
  if (Object.getOwnPropertySymbols(value).length > 0) throw BAIL
  const record = value as Record<string, unknown>
  const keys = sortedKeys(record)
  let s = '{'
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string
    if (i > 0) s += ','
    s += `${quote(key)}:${fast(record[key], depth + 1)}`
  }
  return `${s}}`
}
