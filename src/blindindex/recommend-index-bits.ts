import { ConfigError } from '../errors.js'
import { MAX_SEARCH_INDEX_BITS, MIN_SEARCH_INDEX_BITS, UNIQUE_INDEX_BITS } from './blind-index.js'

/** What {@link recommendIndexBits} needs to know about a column. */
export interface IndexSizingInput {
  /** Rows the table will hold over the index's life (plan for growth: the size cannot change later without a re-index). */
  readonly rows: number
  /**
   * Distinct values the column will hold (after normalization). If you only know the domain
   * (e.g. 10^9 possible SSNs), give it: the estimate uses `min(distinctValues, rows)`.
   */
  readonly distinctValues: number
  /**
   * Most false positives you accept per equality query (rows fetched, decrypted and dropped).
   * When given, the advice is the *fewest* bits that meet it (leaking less), but never more than
   * the privacy bound allows.
   * @default none: the most bits the privacy bound allows
   */
  readonly maxFalsePositivesPerQuery?: number
  /**
   * Set when the column needs a UNIQUE constraint (or exact lookups with no decryption): the
   * advice is then a unique index, which shows which rows share a plaintext.
   * @default false
   */
  readonly requireUnique?: boolean
}

/** The advice of {@link recommendIndexBits}. */
export interface IndexSizing {
  /** Bits to pass to `blindIndex({ bits })`: 8..255 for a search index, 256 for a unique one. */
  readonly bits: number
  readonly kind: 'unique' | 'search'
  /**
   * Expected rows that one probed index value matches (true matches plus false positives),
   * assuming values are spread evenly: `R/D + R·(1 − 1/D)/2^B`.
   */
  readonly expectedRowsPerIndexValue: number
  /** Expected false positives per equality query: `R·(1 − 1/D)/2^B` (0 for a unique index). */
  readonly expectedFalsePositivesPerQuery: number
  /** What someone who reads the table (but has no key) learns, in plain language. */
  readonly leaks: string
  /** How the number was reached, and any warning. */
  readonly rationale: string
}

const CIPHERSWEET_PLANNING = 'https://ciphersweet.paragonie.com/node.js/blind-index-planning'
const AWS_BEACON_LENGTH =
  'https://docs.aws.amazon.com/database-encryption-sdk/latest/devguide/choosing-beacon-length.html'

function assertCount(value: unknown, what: string, min: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new ConfigError('CONFIG_INVALID', `recommendIndexBits: ${what} must be a finite number ≥ ${min}.`)
  }
}

function round(n: number): number {
  return Number(n.toPrecision(4))
}

/**
 * Advises how many bits a blind index should keep, from the table's row count and the column's
 * number of distinct values, following two published planning methods:
 *
 * - CipherSweet's blind index planning ({@link https://ciphersweet.paragonie.com/node.js/blind-index-planning}):
 *   with B bits over R rows, each index value is shared by about R/2^B rows (the *coincidence
 *   count*); it should stay ≥ 2 so that an index value never singles out a row, i.e. B ≤ log2(R/2),
 *   and ≤ √R so that the index is still worth having.
 * - AWS Database Encryption SDK, "Choosing a beacon length"
 *   ({@link https://docs.aws.amazon.com/database-encryption-sdk/latest/devguide/choosing-beacon-length.html},
 *   and the SDK's specification,
 *   {@link https://github.com/aws/aws-database-encryption-sdk-dynamodb/blob/main/specification/searchable-encryption/beacons.md}): for a field with X distinct values
 *   choose 2^B < X/2, so distinct values collide, and 2^B > √X, so queries do not become scans.
 *
 * This takes the stricter of the two upper bounds, `B ≤ floor(log2(D/2))` with D = min(distinct,
 * rows) (every index value covers at least two distinct plaintexts on average, and so at least two
 * rows), then clamps to the 8..255 a search index allows. With `maxFalsePositivesPerQuery` F it
 * picks instead the fewest bits with `R·(1 − 1/D)/2^B ≤ F`, capped at that upper bound. Both
 * methods assume evenly spread values: a skewed column (one value in half the rows) leaks its
 * frequent values whatever the size, so combine it with another column in a compound index.
 *
 * A unique index (256 bits) is the right choice only when you need a UNIQUE constraint or exact
 * lookups without decryption, and it is acceptable that anyone reading the table sees which rows
 * hold equal plaintexts and how often each value occurs (e.g. a login e-mail, unique anyway).
 *
 * @param input - see {@link IndexSizingInput}
 * @returns the advice, with expected false positives and a plain-language statement of the leak
 * @throws ConfigError `CONFIG_INVALID` when `rows` or `distinctValues` is not a finite number ≥ 1,
 *   or `maxFalsePositivesPerQuery` is not a finite number > 0
 * @example
 * ```ts
 * recommendIndexBits({ rows: 1_000_000, distinctValues: 1_000_000 })
 * // { bits: 18, kind: 'search', expectedFalsePositivesPerQuery: ≈3.8, … }
 * const ssn = blindIndex({ name: 'ssn_bidx', bits: 18, normalize: ['digits'] })
 * ```
 */
export function recommendIndexBits(input: IndexSizingInput): IndexSizing {
  assertCount(input.rows, 'rows', 1)
  assertCount(input.distinctValues, 'distinctValues', 1)
  const budget = input.maxFalsePositivesPerQuery
  if (budget !== undefined && (typeof budget !== 'number' || !Number.isFinite(budget) || budget <= 0)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      'recommendIndexBits: maxFalsePositivesPerQuery must be a finite number > 0.',
    )
  }

  const rows = input.rows
  // A column cannot hold more distinct values than it has rows.
  const distinct = Math.min(input.distinctValues, rows)
  const rowsPerValue = rows / distinct
  const others = rows * (1 - 1 / distinct) // rows holding some other value than the probe's
  const sources = `CipherSweet blind index planning (${CIPHERSWEET_PLANNING}); AWS Database Encryption SDK beacon length (${AWS_BEACON_LENGTH})`

  if (input.requireUnique === true) {
    return Object.freeze({
      bits: UNIQUE_INDEX_BITS,
      kind: 'unique',
      expectedRowsPerIndexValue: round(rowsPerValue),
      expectedFalsePositivesPerQuery: 0,
      leaks:
        'Exactly which rows hold equal values, and how many rows hold each value (its frequency). ' +
        'Not the values themselves, unless a reader can match frequencies to known data (e.g. the most common city).',
      rationale:
        'A UNIQUE constraint needs the full 256-bit HMAC: a truncated index would make different values collide and be rejected. ' +
        'Use it only where showing equality is acceptable. ' +
        `Sources: ${sources}.`,
    })
  }

  // Privacy bound: D / 2^B ≥ 2 distinct values per index value (AWS: 2^B < X/2; CipherSweet:
  // coincidences ≥ 2). Floor, so the bound holds rather than merely "about 2".
  const privacyMax = Math.floor(Math.log2(distinct / 2))
  let chosen = privacyMax
  const notes: string[] = []
  if (budget !== undefined) {
    const needed = others <= budget ? 0 : Math.ceil(Math.log2(others / budget))
    if (needed > privacyMax) {
      notes.push(
        `Meeting ${budget} false positives per query would need ${needed} bits, above the privacy bound of ${privacyMax}: ` +
          'kept the bound. Accept more false positives, search by another column with more distinct values, or use a unique index if showing equality is acceptable.',
      )
    } else {
      chosen = needed
    }
  }
  const bits = Math.min(MAX_SEARCH_INDEX_BITS, Math.max(MIN_SEARCH_INDEX_BITS, chosen))
  if (bits > privacyMax) {
    notes.push(
      `With only ${round(distinct)} distinct values, even ${MIN_SEARCH_INDEX_BITS} bits (the minimum) can give a value its own index value: ` +
        'the index shows which rows are equal. Do not index this column alone (a compound index with a column of more distinct values is computed by the blindindex module, not declared in a schema).',
    )
  }
  const falsePositives = others / 2 ** bits
  const valuesPerIndexValue = distinct / 2 ** bits
  const rationale = [
    `Upper (privacy) bound: floor(log2(D/2)) = ${privacyMax} bits for D = ${round(distinct)} distinct values, the most bits at which each index value still covers ≥ 2 distinct values (and so ≥ 2 rows).`,
    budget === undefined
      ? 'No false-positive budget given: took the upper bound (fewest false positives that is still private).'
      : `False-positive budget ${budget} per query: fewest bits with R·(1 − 1/D)/2^B ≤ budget, capped by the upper bound.`,
    bits === chosen
      ? ''
      : `Clamped to the search-index range ${MIN_SEARCH_INDEX_BITS}..${MAX_SEARCH_INDEX_BITS}.`,
    ...notes,
    `Sources: ${sources}.`,
  ]
    .filter((s) => s !== '')
    .join(' ')

  return Object.freeze({
    bits,
    kind: 'search',
    expectedRowsPerIndexValue: round(rowsPerValue + falsePositives),
    expectedFalsePositivesPerQuery: round(falsePositives),
    leaks:
      bits > privacyMax
        ? `With ${round(distinct)} distinct values over 2^${bits} index values, most values get an index value of their own: ` +
          'a reader sees which rows are (almost surely) equal and how often each value occurs, and can match frequencies to known data.'
        : `Rows with equal values share an index value, but so do about ${round(valuesPerIndexValue)} distinct values each ` +
          `(2^${bits} index values): a reader learns which rows *may* be equal and the bucket sizes, a k-anonymity-like grouping, ` +
          'not which rows are equal. A skewed column still reveals its most frequent values.',
    rationale,
  })
}
