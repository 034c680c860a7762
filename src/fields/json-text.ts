import { canonicalJson, MAX_JSON_DEPTH } from './canonical-json.js'

/**
 * True when `value` is one `JSON.stringify` prints exactly as it is, with nothing the `json`
 * codec refuses (see {@link canonicalJson}): strings, booleans, finite numbers, null, dense
 * arrays, and plain objects (prototype `Object.prototype` or null) without symbol keys, nested at
 * most `MAX_JSON_DEPTH` levels, and no `toJSON` anywhere (own or inherited, so `JSON.stringify`
 * has nothing to call). No output, no error path and no cycle set: a cycle runs into the depth
 * bound. `false` means "ask {@link canonicalJson}", which either refuses the value with its
 * position or accepts it (a `toJSON` that is not a function, an array with a custom prototype).
 */
function printsAsIs(value: unknown): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(value)
    case 'object':
      return value === null || containerPrintsAsIs(value, 0)
    default:
      // undefined, function, bigint, symbol
      return false
  }
}

/**
 * {@link printsAsIs} of an array or object that `depth` arrays and objects enclose. Leaves are
 * checked in the loops, without a call each: on a 4 KiB record list this pass costs about a third
 * of `JSON.stringify` itself, half of it the symbol-key check.
 */
function containerPrintsAsIs(value: object, depth: number): boolean {
  if (depth >= MAX_JSON_DEPTH) return false
  if ((value as { toJSON?: unknown }).toJSON !== undefined) return false
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      // A hole reads as undefined, which is refused either way.
      if (!leafOk(value[i], depth)) return false
    }
    return true
  }
  const proto = Object.getPrototypeOf(value) as unknown
  if (proto !== Object.prototype && proto !== null) return false
  if (Object.getOwnPropertySymbols(value).length > 0) return false
  const record = value as Record<string, unknown>
  const keys = Object.keys(record)
  for (let i = 0; i < keys.length; i++) {
    if (!leafOk(record[keys[i] as string], depth)) return false
  }
  return true
}

/** One element or property value inside a container at `depth`. */
function leafOk(x: unknown, depth: number): boolean {
  const type = typeof x
  if (type === 'string' || type === 'boolean') return true
  if (type === 'number') return Number.isFinite(x)
  if (type !== 'object') return false
  return x === null || containerPrintsAsIs(x as object, depth + 1)
}

/**
 * The JSON text the `json` codec encrypts: `JSON.stringify(value)`, in the value's own key
 * order, after one validating pass that refuses exactly what {@link canonicalJson} refuses
 * (`undefined`, functions, symbols, bigints, `NaN`, `±Infinity`, sparse arrays, cycles, `Date`
 * and other non-plain objects, symbol keys, nesting past 1000 levels), with the same errors.
 *
 * Not canonical: two equal values with their keys in another order give other text. That is
 * fine inside a ciphertext (AES-GCM authenticates whatever bytes were written, and reading is
 * `JSON.parse`, which takes any key order, in every version of this library); a blind index is
 * computed over {@link canonicalJson} instead, where the order must not matter. Sorting keys in
 * JavaScript costs about twice the native `JSON.stringify` on a 4 KiB value (docs/benchmarks.md).
 *
 * Getters on the value run twice (once to validate, once to print): a getter that returns
 * something else the second time is not caught.
 *
 * @param value - The value to serialise.
 * @returns Its JSON text.
 * @throws CodecError `CODEC_INVALID_VALUE` as {@link canonicalJson}.
 */
export function jsonText(value: unknown): string {
  if (printsAsIs(value)) return JSON.stringify(value)
  // Refuses the value with its position, or accepts one the quick check leaves to it (canonical
  // text is JSON text too).
  return canonicalJson(value)
}

/**
 * True exactly when {@link canonicalJson} (and so {@link jsonText}) accepts `value`, without
 * printing it in the common case.
 */
export function isJsonValue(value: unknown): boolean {
  if (printsAsIs(value)) return true
  try {
    canonicalJson(value)
    return true
  } catch {
    return false
  }
}
