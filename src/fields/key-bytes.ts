/**
 * Key bytes live in buffers of their own. Node's `Buffer.from`, `Buffer.concat` and
 * `Buffer.allocUnsafe` hand out slices of a shared 8 KiB pool: a key placed there shares its
 * backing `ArrayBuffer` with unrelated small buffers, so `structuredClone(buf)`,
 * `postMessage(buf)` or `buf.buffer` of any neighbour copies or exposes the key too.
 */

/**
 * A copy of `bytes` in a buffer of its own (`buffer.byteLength === length`), outside the pool.
 * @param bytes - the key bytes to copy.
 * @param zeroSource - zero `bytes` after copying (when the caller owned them). @default false
 * @returns the copy; the caller owns (and zeroes) it.
 */
export function ownKeyBuffer(bytes: Uint8Array, zeroSource = false): Buffer {
  const out = Buffer.allocUnsafeSlow(bytes.length)
  out.set(bytes)
  if (zeroSource) bytes.fill(0)
  return out
}

/**
 * `bytes` itself when it already has its own backing buffer, else a copy of its own (the source
 * is zeroed, as the caller handed it over).
 */
export function adoptKeyBuffer(bytes: Buffer): Buffer {
  if (bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length) return bytes
  return ownKeyBuffer(bytes, true)
}
