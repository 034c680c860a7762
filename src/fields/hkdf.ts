import { createHmac } from 'node:crypto'

const HASH_LENGTH = 32
const EMPTY = Buffer.alloc(0)
const COUNTER_1 = Buffer.from([1])

/**
 * HKDF-SHA256 (RFC 5869) for outputs of at most 32 bytes, built on node:crypto's HMAC.
 *
 * Gives the same bytes as `crypto.hkdfSync('sha256', …)`, which this library does not call
 * because Node caps `info` at 1024 bytes, and our `info` carries table and column names of up to
 * 65535 bytes each. With L ≤ HashLen, HKDF-Expand is one HMAC: T(1) = HMAC(PRK, info ‖ 0x01).
 *
 * @param ikm - Input keying material.
 * @param salt - Salt; empty means HashLen zero bytes (RFC 5869 §2.2; HMAC pads both the same way).
 * @param info - Context and application specific information.
 * @param length - Output length in bytes, 1..32.
 * @returns A fresh buffer of `length` bytes; the caller owns (and zeroes) it.
 */
export function hkdfSha256(ikm: Buffer, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  if (!Number.isInteger(length) || length < 1 || length > HASH_LENGTH) {
    throw new RangeError(`hkdfSha256 outputs 1..${HASH_LENGTH} bytes, not ${length}.`)
  }
  const prk = createHmac('sha256', salt.length === 0 ? EMPTY : salt)
    .update(ikm)
    .digest()
  try {
    const okm = createHmac('sha256', prk).update(info).update(COUNTER_1).digest()
    if (length === HASH_LENGTH) return okm
    const out = Buffer.allocUnsafeSlow(length)
    out.set(okm.subarray(0, length))
    okm.fill(0)
    return out
  } finally {
    prk.fill(0)
  }
}
