/**
 * The key ring's provider calls: a new key generated under the first KEK, wrapped under every
 * other and each wrapping proven before anything is stored, and a stored key unwrapped (with
 * failover between its wrappings) and checked against its key check value. Plaintext copies are
 * zeroed as soon as they are no longer needed.
 */
import { timingSafeEqual } from 'node:crypto'
import { ConfigError, KeyError, KeyProviderError } from '../errors.js'
import { ownKeyBuffer as copyKey } from '../fields/key-bytes.js'
import { matchesKeyCheck } from './key-check.js'
import { KeyMaterial } from './key-material.js'
import type { AuditSink, KeyProvider, KeyRef, WrappedKey } from './key-provider.js'
import { describeKeyRef } from './key-row.js'
import { auditedCall, errorCode, unwrapWithFailover } from './provider-call.js'
import type { StoredKey } from './stored-key.js'

/** The providers a key ring calls, its audit sink, and a counter of calls. */
export interface ProviderCalls {
  readonly providers: readonly KeyProvider[]
  readonly audit: AuditSink | undefined
  /** Called once per provider call. */
  readonly onCall: () => void
  /** Deadline of one KEK's unwrap of a stored key, in ms (`KeyCacheOptions.unwrapTimeoutMs`); 0 or none: no deadline. */
  readonly unwrapTimeoutMs?: number
}

/** The version a stored key is. */
export function refOf(k: StoredKey): KeyRef {
  return { logicalTable: k.logicalTable, purpose: k.purpose, version: k.version }
}

/**
 * The error of a new key's wrapping that failed its proof, as the caller reports it.
 * @param kekId - the id of the KEK whose wrapping failed.
 * @param reason - what was wrong with it, in words (never key bytes).
 * @param cause - the provider's refusal, when its unwrap threw.
 */
type WrappingRefusal = (kekId: string, reason: string, cause?: unknown) => Error

/**
 * Answers of an unwrap that prove the wrapping bad: the KEK does not open it. Anything else (no
 * answer, throttling, access refused) says nothing about the wrapping and is thrown as it is.
 */
const WRAPPING_REFUSED: ReadonlySet<string> = new Set(['UNWRAP_FAILED', 'PROVIDER_INVALID_CIPHERTEXT'])

/**
 * The refusal of key creation (`init`, `initTenant`, a tenant's first write, `autoCreate`).
 * @returns a builder of KeyProviderError `UNWRAP_FAILED`, with the KEK as `providerId`.
 */
function refusedWrapping(ref: KeyRef): WrappingRefusal {
  return (kekId, reason, cause) =>
    new KeyProviderError(
      'UNWRAP_FAILED',
      `The new ${ref.purpose} key of ${ref.logicalTable} was not stored: its wrapping under ${kekId} ${reason}. Every wrapping of a new key must unwrap, through its own KEK and for this key version, to the key itself, or that KEK could not recover it. Check the provider of ${kekId} (another key behind that id, a faulty custom provider); nothing was stored for this table.`,
      { table: ref.logicalTable, providerId: kekId, ...(cause === undefined ? {} : { cause }) },
    )
}

/**
 * A new key for `ref`: generated under providers[0], wrapped under every other provider, then
 * each wrapping proven: it carries its provider's id and unwraps through that provider, for this
 * very `ref`, to the generated key (compared in constant time). A wrapping that would fail only
 * when the primary KEK is gone (a disaster-recovery KEK's) is found now, before it is stored.
 * @param refuse - builds the error of a wrapping that fails its proof; by default KeyProviderError
 *   `UNWRAP_FAILED` (key creation). `rotate` passes its own (`ROTATION_REFUSED`).
 * @returns the plaintext (the caller zeroes it) and one wrapping per provider, in order.
 * @throws KeyProviderError when a provider cannot generate, wrap or unwrap it (`PROVIDER_UNAVAILABLE`,
 *   …, as the provider said); `refuse`'s error when a wrapping fails its proof. The plaintext and
 *   every copy of it are zeroed.
 */
export async function generateWrappedKey(
  calls: ProviderCalls,
  ref: KeyRef,
  refuse: WrappingRefusal = refusedWrapping(ref),
): Promise<{ plaintext: Buffer; wrappings: WrappedKey[] }> {
  const [primary, ...others] = calls.providers
  if (primary === undefined) throw new ConfigError('CONFIG_INVALID', 'KeyRing needs a key provider.')
  calls.onCall()
  const generated = await auditedCall(calls.audit, 'generateDataKey', primary.id, ref, () =>
    primary.generateDataKey(ref),
  )
  const plaintext = generated.plaintext
  try {
    const wrappings: WrappedKey[] = [generated.wrapped]
    for (const provider of others) {
      const copies: Buffer[] = []
      calls.onCall()
      try {
        const wrapped = await auditedCall(calls.audit, 'rewrap', provider.id, ref, () =>
          provider.rewrap(
            {
              wrapped: generated.wrapped,
              plaintext: async () => {
                const copy = copyKey(plaintext)
                copies.push(copy)
                return copy
              },
            },
            ref,
          ),
        )
        wrappings.push(wrapped)
      } finally {
        for (const copy of copies) copy.fill(0)
      }
    }
    await proveWrappings(calls, ref, plaintext, wrappings, refuse)
    return { plaintext, wrappings }
  } catch (error) {
    plaintext.fill(0)
    throw error
  }
}

/**
 * Proves wrapping i of a new key, made by providers[i]: labelled with that provider's id, and
 * unwrapping through it to `plaintext`. One unwrap per wrapping; each unwrapped copy is zeroed.
 * @throws `refuse`'s error when one fails; the provider's error when it did not answer.
 */
async function proveWrappings(
  calls: ProviderCalls,
  ref: KeyRef,
  plaintext: Buffer,
  wrappings: readonly WrappedKey[],
  refuse: WrappingRefusal,
): Promise<void> {
  for (const [i, wrapping] of wrappings.entries()) {
    // One wrapping per provider, in order (generateWrappedKey).
    const provider = calls.providers[i]!
    // Failover finds a wrapping by its kek id: one labelled with another id is never tried.
    if (wrapping.kekId !== provider.id) throw refuse(provider.id, `is labelled ${wrapping.kekId}`)
    calls.onCall()
    let back: Buffer
    try {
      back = await auditedCall(calls.audit, 'unwrap', provider.id, ref, () => provider.unwrap(wrapping, ref))
    } catch (error) {
      const code = errorCode(error)
      if (!WRAPPING_REFUSED.has(code)) throw error
      throw refuse(provider.id, `does not unwrap through it (${code})`, error)
    }
    const same = back.length === plaintext.length && timingSafeEqual(back, plaintext)
    back.fill(0)
    if (!same) throw refuse(provider.id, 'unwraps through it to another key')
  }
}

/**
 * Unwraps a stored key, trying its wrappings in provider order, and checks it against its check
 * value when it has one.
 * @throws KeyProviderError with the provider's code when every wrapping fails.
 * @throws KeyError `KEY_CHECK_FAILED` when the unwrapped key is not the one the row was stored with.
 */
export async function unwrapStoredKey(calls: ProviderCalls, stored: StoredKey): Promise<KeyMaterial> {
  const ref = refOf(stored)
  const plaintext = await unwrapWithFailover(stored.wrappings, ref, {
    providers: calls.providers,
    audit: calls.audit,
    onCall: calls.onCall,
    timeoutMs: calls.unwrapTimeoutMs,
  })
  if (stored.checkValue !== undefined && !matchesKeyCheck(plaintext, ref, stored.checkValue)) {
    plaintext.fill(0)
    throw new KeyError(
      'KEY_CHECK_FAILED',
      `The key unwrapped for ${describeKeyRef(ref)} does not match its check value: its wrapping holds another key (replaced, swapped from another row, or restored from another environment). Restore the row from the key table's backup.`,
      { table: ref.logicalTable },
    )
  }
  return new KeyMaterial(ref, plaintext)
}
