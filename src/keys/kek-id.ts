/**
 * What a KEK id may be: 1 to 2,048 characters (a KMS key ARN is at most 2,048), none of them a
 * control character, a line or paragraph separator or a lone surrogate. An id is stored in the
 * key table beside each wrapping and named in errors; a key row whose id broke these rules could
 * write lines of its own into a log through such an error (helper-120's leak audit).
 */
const KEK_ID = /^[^\p{Cc}\p{Cs}\p{Zl}\p{Zp}]{1,2048}$/u

/** {@link isKekId}'s rule, in words, for errors. */
export const KEK_ID_RULE = 'text of 1 to 2048 characters without control characters or line separators'

/** Whether `id` may be a KEK id (see the rule above). */
export function isKekId(id: unknown): id is string {
  return typeof id === 'string' && KEK_ID.test(id)
}
