/**
 * Database drivers copy values into their errors: PostgreSQL's `detail` ("Failing row contains
 * (…)", "Key (email_bidx)=(\x…) already exists"), mysql2's `sql` (the statement with every value
 * written in, a `Buffer` as `X'…'`) and MySQL's "Duplicate entry '…' for key …" message. On a
 * table with encrypted columns those values are ciphertexts and blind indexes, which must not end
 * up in an application's logs. {@link scrubDriverError} blanks them in place, before the error
 * leaves this library; what names the failure (codes, columns, constraints, keys) stays.
 */

/** PostgreSQL's text form of `bytea`: `\x` and its hex digits. */
const BYTEA_HEX = /\\x[0-9a-fA-F]{2,}/g
/** mysql2's form of a `Buffer` inside a statement: `X'…'`. */
const MYSQL_HEX = /X'[0-9a-fA-F]*'/g
/** MySQL/MariaDB's duplicate-key message; the entry is shown byte for byte (`\xHH` for most bytes). */
const DUPLICATE_ENTRY = /Duplicate entry '([\s\S]*?)' for key/g

/** A duplicate entry holding bytes that are not text: a blind index (or another binary key). */
function redactEntry(match: string, entry: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are what marks binary.
  return /\\x[0-9A-Fa-f]{2}|[\u0000-\u0008\u000e-\u001f\ufffd]/.test(entry)
    ? match.replace(entry, '<binary value hidden>')
    : match
}

/**
 * Blanks ciphertext and blind-index bytes in a driver error's `detail`, `sql`, `message`,
 * `sqlMessage` and `stack`, in place. Anything that is not an object is left alone.
 */
export function scrubDriverError(error: unknown): void {
  if (typeof error !== 'object' || error === null) return
  const e = error as Record<string, unknown>
  rewrite(e, 'detail', (s) => s.replace(BYTEA_HEX, '\\x…'))
  rewrite(e, 'sql', (s) => s.replace(MYSQL_HEX, "X'…'"))
  for (const key of ['message', 'sqlMessage', 'stack'] as const) {
    rewrite(e, key, (s) => s.replace(DUPLICATE_ENTRY, redactEntry).replace(BYTEA_HEX, '\\x…'))
  }
}

function rewrite(e: Record<string, unknown>, key: string, scrub: (s: string) => string): void {
  const value = e[key]
  if (typeof value !== 'string') return
  const clean = scrub(value)
  if (clean === value) return
  try {
    e[key] = clean
  } catch {
    // A read-only property (a frozen error): defined anew where the object allows it.
    Object.defineProperty(e, key, { value: clean, configurable: true, writable: true })
  }
}
