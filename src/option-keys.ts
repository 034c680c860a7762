import { ConfigError, type FieldEncryptionError } from './errors.js'

/**
 * Refuses an options object that holds a key its reader does not know. A misspelt key would
 * otherwise be dropped without a word, and its default taken instead: `contxt` for `context`
 * leaves every value unbound to its row; `dryrun` for `dryRun` runs an operation for real. The
 * compiler catches such a key only in an inline object literal of TypeScript, not in a spread, a
 * variable, a `kfe.config.js` or JavaScript.
 *
 * @param options - The options as given (anything that is not a plain object is left to the
 *   reader's own shape check).
 * @param known - The keys the reader takes.
 * @param where - What the options configure, for the message (`encrypted.text(…)`, `ops.rewrap`).
 * @param refuse - Makes the error (default: `ConfigError` `CONFIG_INVALID`).
 * @throws the error `refuse` makes, naming the key and the closest known one
 */
export function refuseUnknownKeys(
  options: unknown,
  known: readonly string[],
  where: string,
  refuse: (message: string) => FieldEncryptionError = (message) => new ConfigError('CONFIG_INVALID', message),
): void {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) return
  for (const [key, value] of Object.entries(options)) {
    // An option left undefined changes nothing (an options object of a wider type passes one).
    if (known.includes(key) || value === undefined) continue
    const near = closest(key, known)
    throw refuse(
      `${where}: unknown option ${key}${near === undefined ? '' : ` (did you mean ${near}?)`}; the options are ${known.join(', ')}.`,
    )
  }
}

/**
 * The keys of an options type `T`, checked by the compiler both ways: each is a key of `T`, and
 * every key of `T` is listed, so the list cannot fall behind a new option.
 *
 * @example
 * ```ts
 * const KEYS = optionKeys<KeyStoreOptions>()(['tableName', 'family'])
 * ```
 */
export function optionKeys<T>() {
  return <const K extends readonly (KeysOf<T> & string)[]>(
    keys: K &
      ([Exclude<KeysOf<T>, K[number]>] extends [never]
        ? unknown
        : { missing: Exclude<KeysOf<T>, K[number]> }),
  ): K => keys
}

/** The keys of every member of a union (`keyof` of a union gives only the keys all share). */
type KeysOf<T> = T extends unknown ? keyof T : never

/**
 * The known key nearest to `key`: the same but for case, within two edits, or one holding the
 * other (`table` for `tableName`, `autoCreateKeys` for `autoCreate`; four letters at least).
 */
function closest(key: string, known: readonly string[]): string | undefined {
  const lower = key.toLowerCase()
  let best: string | undefined
  let bestDistance = 3
  for (const k of known) {
    if (k.toLowerCase() === lower) return k
    const d = distance(lower, k.toLowerCase())
    if (d < bestDistance) {
      best = k
      bestDistance = d
    }
  }
  return best ?? known.find((k) => holds(k.toLowerCase(), lower) || holds(lower, k.toLowerCase()))
}

/** True when `outer` holds `inner` and `inner` is long enough to mean something (4 letters). */
function holds(outer: string, inner: string): boolean {
  return inner.length >= 4 && outer.includes(inner)
}

/** Levenshtein distance (short option names only). */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++)
      current[j] = Math.min(
        (previous[j] as number) + 1,
        (current[j - 1] as number) + 1,
        (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1),
      )
    previous = current
  }
  return previous[b.length] as number
}
