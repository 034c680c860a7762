import { BlindIndexError, ConfigError } from '../errors.js'

/**
 * A built-in normalizer.
 *
 * - `trim`: `String.prototype.trim` (Unicode white space and line terminators at both ends, U+FEFF too).
 * - `lowercase`: `String.prototype.toLowerCase`, the locale-independent Unicode default case mapping
 *   (never `toLocaleLowerCase`, so a Turkish-locale server indexes `'I'` exactly like any other server).
 *   It is a case *mapping*, not full case folding: `'ß'` stays `'ß'`, `'İ'` becomes `'i̇'`.
 * - `nfc` / `nfkc`: `String.prototype.normalize('NFC' | 'NFKC')` (Unicode UAX #15). NFKC also maps
 *   compatibility characters, e.g. full-width `'１２３'` to `'123'` and `'ﬁ'` to `'fi'`.
 * - `digits`: keeps ASCII `0`–`9` only (SSNs, phone numbers: `'123-45-6789'` → `'123456789'`). Other
 *   scripts' digits are dropped; put `nfkc` first to turn full-width digits into ASCII ones.
 * - `collapse-whitespace`: every run of white space becomes one U+0020 space. It does not trim.
 */
export type NormalizerName = 'trim' | 'lowercase' | 'nfc' | 'nfkc' | 'digits' | 'collapse-whitespace'

/**
 * One normalization step of a blind index: a built-in {@link NormalizerName}, or a custom pure
 * function from string to string. A custom function must be deterministic (same input → same
 * output, on every process and every release), or rows written before a change become unfindable.
 */
export type Normalizer = NormalizerName | ((value: string) => string)

/** The built-in normalizers, in no particular order. */
export const NORMALIZER_NAMES: readonly NormalizerName[] = Object.freeze([
  'trim',
  'lowercase',
  'nfc',
  'nfkc',
  'digits',
  'collapse-whitespace',
])

const builtins: Readonly<Record<NormalizerName, (value: string) => string>> = Object.freeze({
  trim: (v: string) => v.trim(),
  // toLowerCase uses the Unicode default case mapping, independent of the process locale
  // (ECMA-262 §22.1.3.28); toLocaleLowerCase would make the index depend on the server's locale.
  lowercase: (v: string) => v.toLowerCase(),
  nfc: (v: string) => v.normalize('NFC'),
  nfkc: (v: string) => v.normalize('NFKC'),
  digits: (v: string) => v.replace(/[^0-9]/g, ''),
  'collapse-whitespace': (v: string) => v.replace(/\s+/g, ' '),
})

/**
 * True when `name` is a built-in normalizer name.
 * @param name - any value
 * @returns whether `name` is one of {@link NORMALIZER_NAMES}
 */
export function isNormalizerName(name: unknown): name is NormalizerName {
  return typeof name === 'string' && Object.hasOwn(builtins, name)
}

/**
 * Checks one configured normalizer (used by `blindIndex()` when a spec is declared).
 * @param normalizer - the configured value
 * @param indexName - the index it belongs to, for the message
 * @throws ConfigError `CONFIG_INVALID` when it is neither a built-in name nor a function
 */
export function assertNormalizer(normalizer: unknown, indexName: string): asserts normalizer is Normalizer {
  if (typeof normalizer === 'function' || isNormalizerName(normalizer)) return
  const shown = typeof normalizer === 'string' ? `'${normalizer}'` : typeof normalizer
  throw new ConfigError(
    'CONFIG_INVALID',
    `Blind index '${indexName}': unknown normalizer ${shown}; expected one of ${NORMALIZER_NAMES.join(', ')} or a function.`,
  )
}

/**
 * Applies a blind index's normalizers, in the order they were declared, to one string value.
 *
 * Normalizers change what "equal" means for the index: with `['trim', 'lowercase']`, a search for
 * `'A@x.io '` finds the row written as `'a@x.io'`. The plugin applies this function to the value
 * written *and* to the value searched for, and, because a search index has false positives that
 * it removes by decrypting and comparing, it must compare the **normalized** forms there too
 * (otherwise rows the index rightly found would be dropped). Non-string values (numbers, dates,
 * …) are never normalized.
 *
 * @param spec - the blind index (a `BlindIndexSpec`; only `name` and `normalize` are read)
 * @param value - a plaintext string
 * @returns the normalized string (the input itself when the spec has no normalizers)
 * @throws BlindIndexError `INDEX_INVALID` when `value` is not a string, or a custom normalizer throws
 *   or returns a non-string. The message never contains the value.
 * @example
 * ```ts
 * const email = blindIndex({ name: 'email_bidx', normalize: ['trim', 'lowercase'] })
 * normalizeValue(email, ' A@x.io ') // 'a@x.io'
 * ```
 */
export function normalizeValue(
  spec: { readonly name: string; readonly normalize: readonly Normalizer[] },
  value: string,
): string {
  if (typeof value !== 'string') {
    throw new BlindIndexError(
      'INDEX_INVALID',
      `Blind index '${spec.name}': normalizers apply to strings only, got ${typeof value}.`,
    )
  }
  const steps = spec.normalize
  // Indexed, not `entries()`: no iterator object per value (a search runs this twice per lookup).
  let out = value
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i] as Normalizer
    if (typeof step === 'function') {
      let next: unknown
      try {
        next = step(out)
      } catch (thrown) {
        // Not the thrown error itself: its message may quote the value, a plaintext. Only its
        // class name goes into the cause chain.
        const kind = thrown instanceof Error ? thrown.name : typeof thrown
        throw new BlindIndexError(
          'INDEX_INVALID',
          `Blind index '${spec.name}': custom normalizer #${i + 1} threw (${kind}).`,
          {
            cause: new Error(
              `a custom normalizer threw ${kind}; its message is not kept (it may hold the plaintext)`,
            ),
          },
        )
      }
      if (typeof next !== 'string') {
        throw new BlindIndexError(
          'INDEX_INVALID',
          `Blind index '${spec.name}': custom normalizer #${i + 1} must return a string, returned ${next === null ? 'null' : typeof next}.`,
        )
      }
      out = next
    } else {
      out = builtins[step](out)
    }
  }
  return out
}
