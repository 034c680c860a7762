import { OperationError } from '../errors.js'
import { keyCheckValue } from '../keys/key-check.js'
import type { KeyRef, WrappedKey } from '../keys/key-provider.js'
import { generateWrappedKey } from '../keys/key-wrapping.js'
import type { OpsContext } from './context.js'

/**
 * Generates a key for `ref` under the first KEK and wraps it under every other one, then proves
 * each wrapping unwraps, through its own KEK and for this very `ref`, to the generated key (the
 * proof key creation makes too: generateWrappedKey). The plaintext is zeroed before returning.
 * @returns one wrapping per configured KEK, and the key's check value (stored beside it, so a
 *   wrong key or a swapped row is named as such when it is loaded)
 * @throws KeyProviderError when a KEK fails (`PROVIDER_UNAVAILABLE`, …)
 * @throws OperationError `ROTATION_REFUSED` when a wrapping does not unwrap to the generated key,
 *   or carries another KEK's id
 */
export async function newWrappedKey(
  ctx: OpsContext,
  ref: KeyRef,
): Promise<{ wrappings: WrappedKey[]; checkValue: Buffer }> {
  if (ctx.providers.length === 0) throw new OperationError('OPS_INVALID', 'No key provider is configured.')
  const { plaintext, wrappings } = await generateWrappedKey(
    { providers: ctx.providers, audit: ctx.audit, onCall: () => {} },
    ref,
    (kekId, reason, cause) =>
      new OperationError(
        'ROTATION_REFUSED',
        `The new ${ref.purpose} key of ${ref.logicalTable} does not prove under ${kekId}: its wrapping ${reason}; nothing was stored.`,
        { table: ref.logicalTable, ...(cause === undefined ? {} : { cause }) },
      ),
  )
  try {
    return { wrappings, checkValue: keyCheckValue(plaintext, ref) }
  } finally {
    plaintext.fill(0)
  }
}
