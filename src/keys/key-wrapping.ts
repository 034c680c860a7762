/**
 * The key ring's provider calls: a new key generated under the first KEK and wrapped under every
 * other, and a stored key unwrapped (with failover between its wrappings) and checked against its
 * key check value. Plaintext copies are zeroed as soon as they are no longer needed.
 */
import { ConfigError, KeyError } from '../errors.js'
import { ownKeyBuffer as copyKey } from '../fields/key-bytes.js'
import { matchesKeyCheck } from './key-check.js'
import { KeyMaterial } from './key-material.js'
import type { AuditSink, KeyProvider, KeyRef, WrappedKey } from './key-provider.js'
import { describeKeyRef } from './key-row.js'
import { auditedCall, unwrapWithFailover } from './provider-call.js'
import type { StoredKey } from './stored-key.js'

/** The providers a key ring calls, its audit sink, and a counter of calls. */
export interface ProviderCalls {
  readonly providers: readonly KeyProvider[]
  readonly audit: AuditSink | undefined
  /** Called once per provider call. */
  readonly onCall: () => void
}

/** The version a stored key is. */
export function refOf(k: StoredKey): KeyRef {
  return { logicalTable: k.logicalTable, purpose: k.purpose, version: k.version }
}

/**
 * A new key for `ref`: generated under providers[0], wrapped under every provider.
 * @returns the plaintext (the caller zeroes it) and one wrapping per provider, in order.
 * @throws KeyProviderError when a provider cannot generate or wrap it (the plaintext is zeroed).
 */
export async function generateWrappedKey(
  calls: ProviderCalls,
  ref: KeyRef,
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
    return { plaintext, wrappings }
  } catch (error) {
    plaintext.fill(0)
    throw error
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
