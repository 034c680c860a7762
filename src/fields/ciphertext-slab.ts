/**
 * Where ciphertexts are allocated: slices of a zeroed slab that holds ciphertexts and nothing
 * else. A buffer of its own per ciphertext (`Buffer.allocUnsafeSlow`) keeps its neighbours out of
 * `ct.buffer`, but every one is an ArrayBuffer that V8 must track and sweep: in a loop that
 * encrypts 200-byte values, that garbage cost ~6 µs per value of ~15 (docs/benchmarks.md).
 * Buffer's shared pool would be as cheap, but it also holds whatever else the process put there,
 * possibly plaintext or key bytes. A slab here holds only what {@link takeCiphertextBuffer}'s
 * callers write into it (ciphertexts, which are stored in the database anyway) and zeroes.
 *
 * Like Buffer's pool, a slab lives as long as any ciphertext sliced from it is referenced (one
 * ciphertext kept for long keeps up to 16 KiB), `structuredClone(ct)` copies the whole slab (other
 * ciphertexts, nothing else; `new Uint8Array(ct)` copies one alone), and it is marked untransferable:
 * `postMessage(ct.buffer, [ct.buffer])` copies instead of detaching the other ciphertexts' bytes.
 */
import { markAsUntransferable } from 'node:worker_threads'

/** Bytes per slab. */
export const SLAB_SIZE = 16 * 1024

/** The largest ciphertext sliced from a slab; a longer one gets a buffer of its own. */
export const MAX_SLAB_ITEM = 8 * 1024

let slab: Buffer | undefined
let offset = SLAB_SIZE

/**
 * A buffer of `length` bytes for a ciphertext. The caller writes every byte before anyone else
 * sees it (a buffer of its own is not zeroed).
 *
 * @param length - Bytes of the ciphertext.
 * @returns A slice of the current slab (8-byte aligned, as Buffer's pool aligns), or a buffer of
 *   its own when `length` exceeds {@link MAX_SLAB_ITEM}.
 */
export function takeCiphertextBuffer(length: number): Buffer {
  if (length > MAX_SLAB_ITEM) return Buffer.allocUnsafeSlow(length)
  if (slab === undefined || offset + length > SLAB_SIZE) {
    slab = Buffer.alloc(SLAB_SIZE)
    markAsUntransferable(slab.buffer)
    offset = 0
  }
  const out = slab.subarray(offset, offset + length)
  offset = (offset + length + 7) & ~7
  return out
}
