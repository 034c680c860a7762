/**
 * Characters that would let a text named in an error write a line of its own into a log, or hide
 * part of it: control characters, line and paragraph separators, lone surrogates.
 */
const UNPRINTABLE = String.raw`\p{Cc}\p{Cs}\p{Zl}\p{Zp}`

/**
 * What a KEK id may be: 1 to 2,048 characters (room for any real KMS key ARN with its provider
 * prefix), none of them unprintable (above). An id is stored in the key table beside each wrapping and named in errors;
 * a key row whose id broke these rules could write lines of its own into a log through such an
 * error (helper-120's leak audit).
 */
const KEK_ID = new RegExp(`^[^${UNPRINTABLE}]{1,2048}$`, 'u')

/** {@link isKekId}'s rule, in words, for errors. */
export const KEK_ID_RULE = 'text of 1 to 2048 characters without control characters or line separators'

/** Whether `id` may be a KEK id (see the rule above). */
export function isKekId(id: unknown): id is string {
  return typeof id === 'string' && KEK_ID.test(id)
}

const HAS_UNPRINTABLE = new RegExp(`[${UNPRINTABLE}]`, 'u')

/**
 * `text` as an error may name it: itself when it holds no unprintable character, else quoted as
 * JSON (escapes and all) and cut to its first 64 characters.
 */
export function printableText(text: string): string {
  if (!HAS_UNPRINTABLE.test(text)) return text
  return `${JSON.stringify(text.slice(0, 64))}${text.length > 64 ? '…' : ''}`
}
