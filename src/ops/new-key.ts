import { timingSafeEqual } from 'node:crypto'
import { OperationError } from '../errors.js'
import { keyCheckValue } from '../keys/key-check.js'
import type { KeyRef, WrappedKey } from '../keys/key-provider.js'
import { auditedCall } from '../keys/provider-call.js'
import type { OpsContext } from './context.js'

/**
 * Generates a key for `ref` under the first KEK and wraps it under every other one, then proves
 * each wrapping unwraps, through its own KEK and for this very `ref`, to the generated key. The
 * plaintext is zeroed before returning.
 * @returns one wrapping per configured KEK, and the key's check value (stored beside it, so a
 *   wrong key or a swapped row is named as such when it is loaded)
 * @throws KeyProviderError when a KEK fails
 * @throws OperationError `ROTATION_REFUSED` when a wrapping does not unwrap to the generated key
 */
export async function newWrappedKey(
  ctx: OpsContext,
  ref: KeyRef,
): Promise<{ wrappings: WrappedKey[]; checkValue: Buffer }> {
  const [primary, ...others] = ctx.providers
  if (primary === undefined) throw new OperationError('OPS_INVALID', 'No key provider is configured.')
  const generated = await auditedCall(ctx.audit, 'generateDataKey', primary.id, ref, () =>
    primary.generateDataKey(ref),
  )
  const plaintext = generated.plaintext
  const held: Buffer[] = []
  try {
    const wrappings: WrappedKey[] = [generated.wrapped]
    for (const provider of others) {
      wrappings.push(
        await auditedCall(ctx.audit, 'rewrap', provider.id, ref, () =>
          provider.rewrap(
            {
              wrapped: generated.wrapped,
              plaintext: async () => {
                const copy = Buffer.from(plaintext)
                held.push(copy)
                return copy
              },
            },
            ref,
          ),
        ),
      )
    }
    for (const [i, wrapping] of wrappings.entries()) {
      const provider = ctx.providers[i]!
      const back = await auditedCall(ctx.audit, 'unwrap', provider.id, ref, () =>
        provider.unwrap(wrapping, ref),
      )
      held.push(back)
      if (
        wrapping.kekId !== provider.id ||
        back.length !== plaintext.length ||
        !timingSafeEqual(back, plaintext)
      ) {
        throw new OperationError(
          'ROTATION_REFUSED',
          `The new ${ref.purpose} key of ${ref.logicalTable} does not unwrap through ${provider.id}; nothing was stored.`,
          { table: ref.logicalTable },
        )
      }
    }
    return { wrappings, checkValue: keyCheckValue(plaintext, ref) }
  } finally {
    plaintext.fill(0)
    for (const b of held) b.fill(0)
  }
}
