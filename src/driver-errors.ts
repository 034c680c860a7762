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
  /(Key \([\s\S]*?\)=)\([\s\S]*?\)( already exists| conflicts with| is (?:still referenced|not present|duplicated))/g
/*
 * The values a server's message quotes. Each is matched greedily up to the text that follows it
 * in that message, so that a quote inside the value ends nothing early; they are applied to the
 * message, and to the part of `stack` before its first frame.
 */
/** MySQL/MariaDB's duplicate-key message, which shows the entry. */
const DUPLICATE_ENTRY = /Duplicate entry '[\s\S]*' for key/g
/**
 * MySQL/MariaDB's syntax error, which quotes the statement (mysql2's, with its values written in)
 * from the point of the error on: "… near 'X'1101…'…' at line 1".
 */
const NEAR = /near '[\s\S]*' at line (\d+)/g
/** MySQL's refusal of a value for a column's type: "Incorrect integer value: 'abc' for column …". */
const INCORRECT_VALUE = /( value: )'[\s\S]*'(?=(?: for column [\s\S]*)?$)/g
/** A number, boolean, NaN or Infinity literal in mysql2's statement (not part of a name, a backquoted one included). */
const MYSQL_LITERAL = /(?<![\w`.$])(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|NaN|-?Infinity)(?![\w`])/gi
/** PostgreSQL's SQLSTATE class 22 (data exception): its messages quote the value refused. */
const PG_DATA_EXCEPTION = /^22[0-9A-Z]{3}$/
/** The quoted part of such a message or detail, first quote to last: `… type integer: "…"`. */
const PG_QUOTED = /"[\s\S]*"/g
/** Bytes such a message shows: `invalid byte sequence for encoding "UTF8": 0xe9 0x74`. */
const PG_BYTES = /0x[0-9a-fA-F]{2}(?:\s+0x[0-9a-fA-F]{2})*/g
/** The input a JSON parse error shows in `where`: "JSON data, line 1: {…". */
const JSON_DATA = /(JSON data, line \d+: )[\s\S]*/g
/** A bound parameter's value in `where`: "unnamed portal parameter $1 = '…'". */
const PARAMETER = /(parameter \$\d+ = )'(?:[^']|'')*'/g

/**
 * Blanks the values a driver error copies from a statement, in place: in `detail` (PostgreSQL's
 * failing row and key values), `sql` (mysql2's statement: every string, number, boolean and
 * `X'…'` literal; or, when `statement` is given, that statement with its placeholders), `params`
 * (PGlite's bound parameters), and `message`, `sqlMessage` and `stack` (MySQL's duplicate entry,
 * the statement a syntax error quotes, a value refused for its type; PostgreSQL's value refused
 * by a data exception; bytes as `\x…`). A value may be a ciphertext, a blind index, or the
 * plaintext of a column under migration (written as plaintext in the early phases, and matched by
 * a backfill's compare-and-set). What names the failure (codes, columns, constraints, keys, the
 * statement's shape) stays. Also walks `cause` (a library error that wraps a driver error).
 * Anything that is not an object is left alone.
 * @param statement - the compiled SQL that failed, with placeholders instead of values, when the
 *   caller knows it (the wrapped dialect does)
 */
export function scrubDriverError(error: unknown, statement?: string): void {
  const seen = new Set<unknown>()
  for (let e = error; typeof e === 'object' && e !== null && !seen.has(e) && seen.size < 8; ) {
    seen.add(e)
    scrubOne(e as Record<string, unknown>, statement)
    e = (e as { cause?: unknown }).cause
  }
}

function scrubOne(e: Record<string, unknown>, statement: string | undefined): void {
  rewrite(e, 'detail', (s) =>
    s
      .replace(FAILING_ROW, 'Failing row contains (…)')
      .replace(KEY_VALUE, '$1(…)$2')
      .replace(BYTEA_HEX, '\\x…'),
  )
  rewrite(
    e,
    'sql',
    (s) => statement ?? s.replace(MYSQL_HEX, "X'…'").replace(MYSQL_STRING, "'…'").replace(MYSQL_LITERAL, '…'),
  )
  // PGlite puts the statement's parameters on its errors, as they were bound.
  if (Array.isArray(e.params) && e.params.length > 0)
    replace(
      e,
      'params',
      e.params.map(() => '…'),
    )
  const dataException = typeof e.code === 'string' && PG_DATA_EXCEPTION.test(e.code)
  const message = (s: string) => {
    const clean = s
      .replace(DUPLICATE_ENTRY, "Duplicate entry '…' for key")
      .replace(NEAR, "near '…' at line $1")
      .replace(INCORRECT_VALUE, "$1'…'")
      .replace(FAILING_ROW, 'Failing row contains (…)')
      .replace(BYTEA_HEX, '\\x…')
    return dataException ? clean.replace(PG_QUOTED, '"…"').replace(PG_BYTES, '0x…') : clean
  }
  if (dataException) {
    rewrite(e, 'detail', (s) => s.replace(PG_QUOTED, '"…"').replace(PG_BYTES, '0x…'))
    rewrite(e, 'where', (s) => s.replace(JSON_DATA, '$1…'))
  }
  rewrite(e, 'where', (s) => s.replace(PARAMETER, "$1'…'"))
  rewrite(e, 'message', message)
  rewrite(e, 'sqlMessage', message)
  // The stack's first lines are the message; its frames hold no value.
  rewrite(e, 'stack', (s) => {
    const frames = s.search(/\n\s+at /)
    return frames < 0 ? message(s) : message(s.slice(0, frames)) + s.slice(frames)
  })
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

/** PostgreSQL's `unique_violation` (`23505`); MySQL/MariaDB's `ER_DUP_ENTRY` (errno 1062). */
export function isUniqueViolation(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false
  const e = error as { code?: unknown; errno?: unknown }
  return e.code === '23505' || e.errno === 1062
}
