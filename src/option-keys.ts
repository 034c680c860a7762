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

/** The known key nearest to `key`: the same but for case, or within two edits. */
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
  return best
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
