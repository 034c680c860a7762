import { fixedByTag } from './shape-key.js'

/** What {@link variant} gives when it makes no value. */
const NO_VALUE = Symbol('kfe.shape-values.none')

/**
 * For each of `values`, another value of the same tag (the same length where it has one), none
 * equal to any of `values` or to another made here; undefined when one cannot be made (an empty
 * string or byte array, a string of surrogates).
 */
export function otherValues(values: readonly unknown[]): unknown[] | undefined {
  const taken = new Set<unknown>(values)
  const others: unknown[] = []
  for (const value of values) {
    if (fixedByTag(value)) {
      others.push(value)
      continue
    }
    let other: unknown = NO_VALUE
    // Enough tries to step past every other value of the query (consecutive ids, say).
    const tries = 16 + 2 * values.length
    for (let n = 1; n <= tries && (other === NO_VALUE || taken.has(other)); n++) other = variant(value, n)
    if (other === NO_VALUE || taken.has(other)) return undefined
    taken.add(other)
    others.push(other)
  }
  return others
}

/** The `n`th other value of the same tag as `value` (see {@link otherValues}), or {@link NO_VALUE}. */
function variant(value: unknown, n: number): unknown {
  if (typeof value === 'string') {
    if (value.length === 0) return NO_VALUE
    // The last UTF-16 unit, or the first when the last is a surrogate, changed into another unit
    // of the same UTF-8 length that is not a surrogate: the same kind of text.
    const last = value.length - 1
    const at = isSurrogate(value.charCodeAt(last)) ? 0 : last
    const unit = value.charCodeAt(at)
    const changed = unit ^ n
    if (isSurrogate(unit) || isSurrogate(changed) || utf8Length(unit) !== utf8Length(changed)) return NO_VALUE
    return value.slice(0, at) + String.fromCharCode(changed) + value.slice(at + 1)
  }
  if (typeof value === 'number')
    return Number.isSafeInteger(value) ? value + (value > 0 ? -n : n) : value / (n + 1)
  if (typeof value === 'bigint') return value + BigInt(n)
  if (value instanceof Uint8Array) {
    if (value.length === 0) return NO_VALUE
    const copy = Buffer.from(value)
    copy[0] = (copy[0] as number) ^ n
    return Buffer.isBuffer(value) ? copy : new Uint8Array(copy)
  }
  if (value instanceof Date) return new Date(value.getTime() + n)
  return NO_VALUE
}

function isSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdfff
}

/** UTF-8 bytes of one UTF-16 unit that is not a surrogate. */
function utf8Length(unit: number): number {
  return unit < 0x80 ? 1 : unit < 0x800 ? 2 : 3
}
