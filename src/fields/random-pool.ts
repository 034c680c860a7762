import { randomFillSync } from 'node:crypto'
import { startupSnapshot } from 'node:v8'

/**
 * Pool size: 12 KiB, a multiple of the 12-byte nonce, so one `randomFillSync` (one trip into
 * OpenSSL's CSPRNG) serves 1024 nonces. Larger pools save little; smaller ones cost a call more often.
 */
const POOL_SIZE = 12 * 1024

const pool = Buffer.alloc(POOL_SIZE)
let offset = POOL_SIZE // empty: the first take fills it

// A V8 startup snapshot (`node --build-snapshot`, a single-executable app's `useSnapshot`) saves
// this module's state: every process started from it would hand out the same bytes, the same
// salts and nonces, under keys it loads after starting. The pool is emptied before the heap is
// saved, so each such process fills its own.
// isBuildingSnapshot() is 1, not true, on Node 20: read as a truth value.
if (startupSnapshot?.isBuildingSnapshot()) {
  startupSnapshot.addSerializeCallback(() => {
    pool.fill(0)
    offset = POOL_SIZE
  })
}

/**
 * Takes `n` fresh random bytes from a process-wide pool filled by node:crypto's CSPRNG
 * (`randomFillSync`). Bytes are handed out once, front to back; the pool is refilled only when
 * what remains is too short, and the remainder is discarded, so no byte is ever returned twice.
 *
 * The result is a view into the pool, valid until the next call: copy it (`Buffer.from`) or
 * consume it (`createCipheriv` copies its IV) before taking again. Worker threads each load
 * their own copy of this module, and Node has no `fork()` that copies a live heap; the one way to
 * start processes from a saved heap, a V8 startup snapshot, saves this pool empty (above). So two
 * threads or processes never share a pool's bytes.
 *
 * @param n - Bytes wanted, 1..12288.
 * @returns A view of `n` random bytes.
 */
export function takeRandom(n: number): Buffer {
  if (n < 1 || n > POOL_SIZE) throw new RangeError(`takeRandom serves 1..${POOL_SIZE} bytes, not ${n}.`)
  if (offset + n > POOL_SIZE) {
    randomFillSync(pool)
    offset = 0
  }
  const view = pool.subarray(offset, offset + n)
  offset += n
  return view
}
