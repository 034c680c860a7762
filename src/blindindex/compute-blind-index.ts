import { createHmac } from 'node:crypto'
import { BlindIndexError } from '../errors.js'
import type { KeyMaterial } from '../keys/key-material.js'
import { type BlindIndexSpec, indexArity } from './blind-index.js'
import { indexSubkey } from './index-subkey.js'

/** First byte of the HMAC input of a single-column index. Compound inputs start with their part count (≥ 2). */
const SINGLE_PART_PREFIX = Buffer.from([0x01])

/**
 * Keeps the first `bits` bits of `mac` (big-endian bit order: the high bits of the first byte
 * first) in a new buffer of `ceil(bits / 8)` bytes, with the unused low bits of the last byte
 * zeroed. Truncating an HMAC to its leftmost bits is the usual MAC truncation (NIST SP 800-107
 * §5.3.3, RFC 2104 §5).
 * @param mac - the full MAC
 * @param bits - 1..mac.length × 8
 * @returns a new buffer; `mac` is left untouched
 */
export function truncateToBits(mac: Uint8Array, bits: number): Buffer {
  const length = Math.ceil(bits / 8)
  const out = Buffer.alloc(length)
  out.set(mac.subarray(0, length))
  const spare = length * 8 - bits
  if (spare > 0) out[length - 1] = (out[length - 1] ?? 0) & ((0xff << spare) & 0xff)
  return out
}

/**
 * Computes one blind index value.
 *
 * - subkey = HKDF-SHA256(indexKey, salt = empty, info = "kfe/v1/bidx" ‖ lp(table) ‖ lp(spec.name), 32),
 *   derived once and cached on `indexKey`;
 * - input = `0x01 ‖ part` for one column, or `n ‖ (len₃₂ ‖ part)…` for a compound index of n columns
 *   (n in one byte, each length 4 bytes big-endian), so ("ab", "c") and ("a", "bc") differ;
 * - output = the first `spec.bits` bits of HMAC-SHA256(subkey, input), in `ceil(bits / 8)` bytes
 *   with the unused low bits of the last byte zeroed.
 *
 * The caller normalizes string values (`normalizeValue`) and encodes every value with its column's
 * codec before calling; NULL is never indexed. Unique indexes are exact; search indexes have
 * false positives that the caller removes by decrypting and comparing normalized values.
 *
 * @param indexKey - the table's index key of one version (`ref.purpose === 'index'`); search over every live version
 * @param table - logical table: the index key domain, bound into the subkey
 * @param spec - the blind index
 * @param encodedParts - the codec-encoded values, one per column of the index, in `spec.columns` order
 * @returns `indexLength(spec)` bytes, i.e. `ceil(spec.bits / 8)`
 * @throws BlindIndexError `WRONG_KEY` when `indexKey` is not an index key
 * @throws BlindIndexError `INDEX_INVALID` when the number of parts does not match the index's columns
 * @throws KeyError `KEY_NOT_FOUND` when `indexKey` was evicted and wiped
 * @example
 * ```ts
 * const ssn = blindIndex({ name: 'ssn_bidx', bits: 32, normalize: ['digits'] })
 * const bidx = computeBlindIndex(key, 'users', ssn, [codec.encode(normalizeValue(ssn, '123-45-6789'))])
 * // insert into "users" ("ssn", "ssn_bidx") values ($1, $2)   -- $2 = bidx, 4 bytes
 * ```
 */
export function computeBlindIndex(
  indexKey: KeyMaterial,
  table: string,
  spec: BlindIndexSpec,
  encodedParts: readonly Buffer[],
): Buffer {
  const arity = indexArity(spec)
  if (encodedParts.length !== arity) {
    throw new BlindIndexError(
      'INDEX_INVALID',
      `Blind index '${spec.name}' covers ${arity} column(s) but got ${encodedParts.length} value(s).`,
      { table },
    )
  }
  const hmac = createHmac('sha256', indexSubkey(indexKey, table, spec.name).key)
  if (arity === 1) {
    hmac.update(SINGLE_PART_PREFIX)
    hmac.update(encodedParts[0] as Buffer)
  } else {
    hmac.update(Buffer.from([arity]))
    const length = Buffer.alloc(4)
    for (const part of encodedParts) {
      if (part.length > 0xffff_ffff) {
        throw new BlindIndexError(
          'INDEX_INVALID',
          `Blind index '${spec.name}': a value is longer than 4 GiB.`,
          {
            table,
          },
        )
      }
      length.writeUInt32BE(part.length, 0)
      hmac.update(length)
      hmac.update(part)
    }
  }
  return finish(hmac.digest(), spec)
}

/** The blind index from its full HMAC: the MAC itself for a unique index, else truncated. */
function finish(mac: Buffer, spec: BlindIndexSpec): Buffer {
  // A unique index keeps every bit: the digest is already the answer.
  if (spec.bits === mac.length * 8) return mac
  const out = truncateToBits(mac, spec.bits)
  // The dropped bits are exactly what a search index must not reveal: wipe them.
  mac.fill(0)
  return out
}

/**
 * Where a single-part index input (`0x01 ‖ the value's UTF-8 bytes`) is written when the value
 * has a text encoding: one buffer outside Buffer's shared pool, written, hashed and zeroed within
 * one synchronous call, so no two values ever share it and no encoded plaintext is left in the pool.
 */
const TEXT_INPUT = Buffer.alloc(16 * 1024)

/**
 * {@link computeBlindIndex} of a single-column index over a value whose encoding is the UTF-8
 * bytes of `text` (the text and json codecs' canonical text): the same bytes are hashed, without
 * a fresh buffer per value.
 *
 * @throws BlindIndexError as {@link computeBlindIndex}.
 */
export function computeTextBlindIndex(
  indexKey: KeyMaterial,
  table: string,
  spec: BlindIndexSpec,
  text: string,
): Buffer {
  // UTF-8 takes at most 3 bytes per UTF-16 code unit: only a long text needs its length counted.
  if (
    indexArity(spec) !== 1 ||
    (text.length * 3 >= TEXT_INPUT.length && Buffer.byteLength(text, 'utf8') >= TEXT_INPUT.length)
  ) {
    const input = Buffer.from(text, 'utf8')
    try {
      return computeBlindIndex(indexKey, table, spec, [input])
    } finally {
      input.fill(0)
    }
  }
  const hmac = createHmac('sha256', indexSubkey(indexKey, table, spec.name).key)
  TEXT_INPUT[0] = SINGLE_PART_PREFIX[0] as number
  let end = -1
  try {
    end = 1 + TEXT_INPUT.write(text, 1, 'utf8')
    hmac.update(TEXT_INPUT.subarray(0, end))
  } finally {
    // A write that threw (none does, for a string) may have written anything: zero it all.
    TEXT_INPUT.fill(0, 1, end === -1 ? TEXT_INPUT.length : end)
  }
  return finish(hmac.digest(), spec)
}

/** @internal True when the text input buffer holds no byte but 0 (and the prefix), for the zeroization test. */
export function textInputIsZero(): boolean {
  return TEXT_INPUT.every((b, i) => i === 0 || b === 0)
}
