import { timingSafeEqual } from 'node:crypto'
import { FieldEncryptionError } from '../errors.js'
import { decryptValue } from '../fields/field-cipher.js'
import { headerKeyVersion, looksLikeCiphertext } from '../fields/format.js'
import { rowAad } from '../schema/row-context.js'
import type { ColumnInfo } from '../schema/schema.js'
import type { KeySet } from './row-check.js'

/** What a stored encrypted value holds compared with the plaintext value. @internal */
export type StoredComparison = 'equal' | 'different' | 'missing' | `failed: ${string}`

/**
 * Decrypts `stored` (any data key version the set holds) and compares its canonical encoding with
 * that of `value`, in constant time (`value` undefined: only checks that it decrypts), bound to
 * the row's `context` values when the table has a row context (`failed`: a context column is
 * NULL or unusable, see `storedContext`). Never
 * throws: a value that does not decrypt is `failed: CODE`.
 * @internal
 */
export function compareStored(
  column: ColumnInfo,
  keys: KeySet,
  stored: unknown,
  value: unknown,
  context?: readonly string[] | 'failed',
): StoredComparison {
  if (stored === null || stored === undefined) return 'missing'
  if (context === 'failed') return 'failed: CONTEXT_MISSING'
  if (!(stored instanceof Uint8Array) || !looksLikeCiphertext(stored)) return 'failed: NOT_CIPHERTEXT'
  const key = keys.data.get(headerKeyVersion(stored))
  if (key === undefined) return 'failed: KEY_NOT_FOUND'
  let a: Buffer | undefined
  let b: Buffer | undefined
  try {
    const decrypted = decryptValue(column.spec.codec, stored, key, rowAad(column, context))
    if (value === undefined) return 'equal'
    a = column.spec.codec.encode(decrypted as never)
    b = column.spec.codec.encode(value as never)
    return a.length === b.length && timingSafeEqual(a, b) ? 'equal' : 'different'
  } catch (error) {
    return `failed: ${error instanceof FieldEncryptionError ? error.code : 'DECRYPT_FAILED'}`
  } finally {
    a?.fill(0)
    b?.fill(0)
  }
}
