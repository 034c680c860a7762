import { createHmac, timingSafeEqual } from 'node:crypto'
import type { KeyRef } from './key-provider.js'

/** Domain-separation label of a key check value (no other use of a key is an HMAC under it). */
const LABEL = 'kfe/v1/key-check'
/** Bytes kept of the HMAC: 128 bits, enough that a wrong key matches with probability 2^-128. */
export const KEY_CHECK_LENGTH = 16

/**
 * The key check value (KCV) of a stored key: HMAC-SHA256 under the key of a fixed label and the
 * key's ref (table, purpose, version), truncated to {@link KEY_CHECK_LENGTH} bytes. Stored beside
 * the key's wrappings, it names a wrong key (a wrapping replaced by another key's wrapping under
 * the same KEK) or a row moved to another ref, instead of letting it surface as
 * `DECRYPT_AUTH_FAILED` or as searches that find nothing. It reveals nothing usable about the key
 * (an HMAC output under it).
 *
 * @param key - the 32 plaintext key bytes.
 * @param ref - the key's table, purpose and version.
 * @returns the check value, in its own (non-pooled) buffer.
 */
export function keyCheckValue(key: Uint8Array, ref: KeyRef): Buffer {
  const mac = createHmac('sha256', key)
    .update(`${LABEL}\0${ref.logicalTable}\0${ref.purpose}\0${ref.version}`, 'utf8')
    .digest()
  const out = Buffer.allocUnsafeSlow(KEY_CHECK_LENGTH)
  mac.copy(out, 0, 0, KEY_CHECK_LENGTH)
  mac.fill(0)
  return out
}

/**
 * Whether `key` matches a stored check value, compared in constant time.
 * @param key - the unwrapped key.
 * @param ref - its ref.
 * @param expected - the stored check value.
 */
export function matchesKeyCheck(key: Uint8Array, ref: KeyRef, expected: Uint8Array): boolean {
  const actual = keyCheckValue(key, ref)
  try {
    return actual.length === expected.length && timingSafeEqual(actual, expected)
  } finally {
    actual.fill(0)
  }
}
