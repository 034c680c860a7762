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
/** A string literal as mysql2 writes one into a statement (`\` escapes; `''` too). */
const MYSQL_STRING = /'(?:[^'\\]|\\[\s\S]|'')*'/g
/** PostgreSQL's dump of a row in `detail`: "Failing row contains (…)." */
const FAILING_ROW = /Failing row contains \([\s\S]*\)/g
/** PostgreSQL's key and value in `detail`: "Key (email_bidx)=(…) already exists." */
const KEY_VALUE =
  /(Key \([\s\S]*?\)=)\([\s\S]*?\)( already exists| conflicts with| is (?:still referenced|not present))/g
/** MySQL/MariaDB's duplicate-key message, which shows the entry. */
const DUPLICATE_ENTRY = /Duplicate entry '[\s\S]*?' for key/g

/**
 * Blanks the values a driver error copies from a statement, in place: in `detail` (PostgreSQL's
 * failing row and key values), `sql` (mysql2's statement: every string and `X'…'` literal), `params`
 * (PGlite's bound parameters), and
 * `message`, `sqlMessage` and `stack` (MySQL's duplicate entry, bytes as `\x…`). A value may be a
 * ciphertext, a blind index, or the plaintext of a column under migration (written as plaintext
 * in the early phases, and matched by a backfill's compare-and-set). What names the failure
 * (codes, columns, constraints, keys, the statement's shape) stays. Also walks `cause` (a library
 * error that wraps a driver error). Anything that is not an object is left alone.
 */
export function scrubDriverError(error: unknown): void {
  const seen = new Set<unknown>()
  for (let e = error; typeof e === 'object' && e !== null && !seen.has(e) && seen.size < 8; ) {
    seen.add(e)
    scrubOne(e as Record<string, unknown>)
    e = (e as { cause?: unknown }).cause
  }
}

function scrubOne(e: Record<string, unknown>): void {
  rewrite(e, 'detail', (s) =>
    s
      .replace(FAILING_ROW, 'Failing row contains (…)')
      .replace(KEY_VALUE, '$1(…)$2')
      .replace(BYTEA_HEX, '\\x…'),
  )
  rewrite(e, 'sql', (s) => s.replace(MYSQL_HEX, "X'…'").replace(MYSQL_STRING, "'…'"))
  // PGlite puts the statement's parameters on its errors, as they were bound.
  if (Array.isArray(e.params) && e.params.length > 0)
    replace(
      e,
      'params',
      e.params.map(() => '…'),
    )
  for (const key of ['message', 'sqlMessage', 'stack'] as const) {
    rewrite(e, key, (s) =>
      s
        .replace(DUPLICATE_ENTRY, "Duplicate entry '…' for key")
        .replace(FAILING_ROW, 'Failing row contains (…)')
        .replace(BYTEA_HEX, '\\x…'),
    )
  }
}

function rewrite(e: Record<string, unknown>, key: string, scrub: (s: string) => string): void {
  const value = e[key]
  if (typeof value !== 'string') return
  const clean = scrub(value)
  if (clean !== value) replace(e, key, clean)
}

function replace(e: Record<string, unknown>, key: string, clean: unknown): void {
  try {
    e[key] = clean
  } catch {
    // A read-only property (a frozen error): defined anew where the object allows it.
    Object.defineProperty(e, key, { value: clean, configurable: true, writable: true })
  }
}
