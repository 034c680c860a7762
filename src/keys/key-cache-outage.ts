import {
  type ErrorCode,
  type FieldEncryptionError,
  isFieldEncryptionError,
  KeyError,
  KeyProviderError,
} from '../errors.js'

// What the key cache does when a key's keeper does not answer (an outage), as opposed to refusing.

/**
 * How long a load must have taken to fail with an availability error for a key not in the cache
 * to be remembered as down ({@link KeyCacheOptions.outageRetryMs}).
 */
export const SLOW_FAILURE_MS = 1000

/** A key not in the cache whose load failed with an availability error: not asked again until `until`. */
export interface Failure {
  readonly error: FieldEncryptionError
  readonly until: number
  /** The ref's logical key name, for {@link KeyCache.deleteTable}. */
  readonly table: string
}

/**
 * Failures that mean "the keeper (or the key store) did not answer", as opposed to an answer that
 * refuses the key. Only these let a stale key serve through the grace period.
 */
const AVAILABILITY_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'PROVIDER_UNAVAILABLE',
  'PROVIDER_THROTTLED',
  'KEY_STORE_ERROR',
])

export function isAvailabilityError(error: unknown): boolean {
  return isFieldEncryptionError(error) && AVAILABILITY_CODES.has(error.code)
}

/**
 * A new error of the outage's code (KeyProviderError, with its provider, or KeyError), for a query
 * failed without asking the keeper again: each query gets its own stack; the first failure is its
 * cause.
 */
export function remembered(error: FieldEncryptionError): FieldEncryptionError {
  const message = `${error.message} (remembered: the keeper failed less than outageRetryMs ago and was not asked again)`
  const options = {
    ...(error.table === undefined ? {} : { table: error.table }),
    ...(error.column === undefined ? {} : { column: error.column }),
    cause: error,
  }
  // The classes the availability codes come in; a subclass of another shape is not rebuilt.
  if (error instanceof KeyProviderError)
    return new KeyProviderError(error.code, message, {
      ...options,
      ...(error.providerId === undefined ? {} : { providerId: error.providerId }),
    })
  return new KeyError(error.code, message, options)
}
