import { ConfigError, FieldEncryptionError, KeyProviderError } from '../errors.js'
import { isKekId, KEK_ID_RULE } from './kek-id.js'
import type { AuditEvent, AuditSink, KeyProvider, KeyRef, WrappedKey } from './key-provider.js'
import { unwrapFailedCauses } from './unwrap-failed.js'

/**
 * Runs one provider call and reports it to `audit` (operation, kek id, key ref, start time,
 * duration, outcome, error code; never key bytes). The sink cannot break the call: whatever it
 * throws is swallowed.
 * @param audit - the user's sink, if any.
 * @param operation - which provider operation `call` performs.
 * @param kekId - the provider's id.
 * @param ref - the key version concerned.
 * @param call - the provider call itself.
 * @returns what `call` returns.
 * @throws whatever `call` throws, unchanged.
 */
export async function auditedCall<T>(
  audit: AuditSink | undefined,
  operation: AuditEvent['operation'],
  kekId: string,
  ref: KeyRef,
  call: () => Promise<T>,
): Promise<T> {
  const time = new Date()
  const start = performance.now()
  const report = (outcome: AuditEvent['outcome'], errorCode?: string): void => {
    if (audit === undefined) return
    const event: AuditEvent = {
      operation,
      kekId,
      logicalTable: ref.logicalTable,
      purpose: ref.purpose,
      version: ref.version,
      time,
      durationMs: performance.now() - start,
      outcome,
      ...(errorCode === undefined ? {} : { errorCode }),
    }
    try {
      audit(Object.freeze(event))
    } catch {
      // An audit sink must never change the outcome of a key operation.
    }
  }
  try {
    const result = await call()
    report('success')
    return result
  } catch (error) {
    report('failure', errorCode(error))
    throw error
  }
}

/**
 * `call`, or `timedOut(ms)` once `ms` have passed without it settling; `call` then runs on, and
 * what it returns late is handed to `discard` (a key: zeroed). No deadline when `ms` is 0 or
 * undefined. The timer does not keep the process alive.
 */
function withinDeadline<T>(
  call: Promise<T>,
  ms: number | undefined,
  timedOut: (ms: number) => Error,
  discard: (late: T) => void,
): Promise<T> {
  if (ms === undefined || ms <= 0) return call
  return new Promise<T>((resolve, reject) => {
    let late = false
    const timer = setTimeout(() => {
      late = true
      reject(timedOut(ms))
    }, ms)
    timer.unref?.()
    call.then(
      (value) => {
        if (late) discard(value)
        else {
          clearTimeout(timer)
          resolve(value)
        }
      },
      (error: unknown) => {
        if (late) return
        clearTimeout(timer)
        reject(error)
      },
    )
  })
}

/**
 * The stable code of an error, or `PROVIDER_ERROR` for anything untyped. By name as well as by
 * class: a `kfe` bin and the config it loads may each hold their own copy of this library, and a
 * wrong KEK's `UNWRAP_FAILED` from the config's provider was reported as `PROVIDER_ERROR`.
 */
export function errorCode(error: unknown): FieldEncryptionError['code'] {
  if (error instanceof FieldEncryptionError) return error.code
  // By name, only a provider code: another library's error of that name keeps none of its own
  // (a `KEY_DESTROYED` there would be skipped as a missing key, an outage code get a grace period).
  const e = error as { name?: unknown; code?: unknown } | null
  return e?.name === 'KeyProviderError' && typeof e.code === 'string' && PROVIDER_CODES.has(e.code)
    ? (e.code as FieldEncryptionError['code'])
    : 'PROVIDER_ERROR'
}

/** The codes a key provider's error carries (docs/errors.md, key providers). */
const PROVIDER_CODES: ReadonlySet<string> = new Set([
  'PROVIDER_UNAVAILABLE',
  'PROVIDER_THROTTLED',
  'PROVIDER_ACCESS_DENIED',
  'PROVIDER_KEY_DISABLED',
  'PROVIDER_INVALID_CIPHERTEXT',
  'PROVIDER_ERROR',
  'UNWRAP_FAILED',
])

/** Codes of a KEK that refused: a revocation, which no grace period may delay. */
const REVOCATION: ReadonlySet<string> = new Set(['PROVIDER_ACCESS_DENIED', 'PROVIDER_KEY_DISABLED'])
/** Codes of a KEK that did not answer. */
const OUTAGE: ReadonlySet<string> = new Set(['PROVIDER_UNAVAILABLE', 'PROVIDER_THROTTLED'])

/** What {@link unwrapWithFailover} needs to know about the caller. */
export interface FailoverOptions {
  /** Providers in preference order; each wrapping is tried through the provider of the same id. */
  readonly providers: readonly KeyProvider[]
  readonly audit?: AuditSink | undefined
  /** Called once per provider call (for call counters). */
  readonly onCall?: () => void
  /**
   * Deadline of each KEK's unwrap, in ms: past it, that KEK counts as not answering
   * (`PROVIDER_UNAVAILABLE`) and the next is tried; the call runs on, and a key it returns late is
   * zeroed. 0 or undefined: no deadline.
   */
  readonly timeoutMs?: number | undefined
}

/**
 * Unwraps a stored key by trying its wrappings in the order of `providers`, failing over to the
 * next on any error. Wrappings whose kek id has no configured provider are skipped.
 * @param wrappings - the stored key's wrappings.
 * @param ref - the key version.
 * @returns 32 plaintext bytes; the caller owns and zeroes them.
 * @throws KeyProviderError when every wrapping failed, with an `AggregateError` of every failure as
 *   cause and the code of: a refusal (`PROVIDER_ACCESS_DENIED`, `PROVIDER_KEY_DISABLED`) if any
 *   KEK refused, even while another did not answer (grace never delays a revocation); else
 *   `PROVIDER_UNAVAILABLE`/`PROVIDER_THROTTLED` if any KEK did not answer; else the first failure.
 * @throws KeyProviderError `CONFIG_INVALID` when no wrapping has a configured provider.
 */
export async function unwrapWithFailover(
  wrappings: readonly WrappedKey[],
  ref: KeyRef,
  options: FailoverOptions,
): Promise<Buffer> {
  const errors: unknown[] = []
  const tried: string[] = []
  for (const provider of options.providers) {
    const wrapped = wrappings.find((w) => w.kekId === provider.id)
    if (wrapped === undefined) continue
    tried.push(provider.id)
    options.onCall?.()
    try {
      const plaintext = await withinDeadline(
        auditedCall(options.audit, 'unwrap', provider.id, ref, () => provider.unwrap(wrapped, ref)),
        options.timeoutMs,
        (ms) =>
          new KeyProviderError(
            'PROVIDER_UNAVAILABLE',
            `Provider ${provider.id} did not answer the unwrap of ${ref.logicalTable}/${ref.purpose}/v${ref.version} within ${ms} ms (cache.unwrapTimeoutMs).`,
            { providerId: provider.id, table: ref.logicalTable },
          ),
        (late) => late.fill(0),
      )
      if (plaintext.length !== 32) {
        plaintext.fill(0)
        throw new KeyProviderError(
          'PROVIDER_ERROR',
          `Provider ${provider.id} returned a key of the wrong size.`,
          {
            providerId: provider.id,
            table: ref.logicalTable,
          },
        )
      }
      return plaintext
    } catch (error) {
      errors.push(error)
    }
  }
  const configured = new Set(options.providers.map((p) => p.id))
  const unconfigured = wrappings.map((w) => w.kekId).filter((id) => !configured.has(id))
  const where = `${ref.logicalTable}/${ref.purpose}/v${ref.version}`
  const skipped =
    unconfigured.length === 0 ? '' : ` No provider is configured for ${unconfigured.join(', ')}.`
  if (errors.length === 0) {
    throw new KeyProviderError(
      'CONFIG_INVALID',
      `Key ${where} cannot be unwrapped: none of its KEKs is configured.${skipped}`,
      { table: ref.logicalTable },
    )
  }
  // A KEK that refused (revoked: access denied, disabled) wins over one that did not answer: an
  // outage lets the cache serve a stale key within grace, and grace must never delay a
  // revocation. Otherwise an outage wins over other failures (the key may still be fine there).
  const refusal = errors.find((e) => REVOCATION.has(errorCode(e)))
  const outage = errors.find((e) => OUTAGE.has(errorCode(e)))
  const first = refusal ?? outage ?? errors[0]
  const code = errorCode(first)
  const causes =
    code === 'UNWRAP_FAILED' || code === 'PROVIDER_INVALID_CIPHERTEXT'
      ? ` ${unwrapFailedCauses(tried.join(', '))}`
      : ''
  throw new KeyProviderError(
    code,
    `Key ${where} could not be unwrapped: every wrapping failed (tried ${tried.join(', ')}).${skipped}${causes}`,
    {
      table: ref.logicalTable,
      cause: new AggregateError(errors, `unwrap of ${where} failed under every KEK`),
      ...(first instanceof KeyProviderError && first.providerId !== undefined
        ? { providerId: first.providerId }
        : {}),
    },
  )
}

/**
 * Refuses an empty provider list, an id that is no KEK id (kek-id.ts) or two providers with the
 * same id.
 * @throws ConfigError `CONFIG_INVALID`.
 */
export function checkProviders(providers: readonly KeyProvider[], what: string): void {
  if (providers.length === 0)
    throw new ConfigError('CONFIG_INVALID', `${what} needs at least one key provider.`)
  const bad = providers.findIndex((p) => !isKekId(p.id))
  if (bad >= 0) {
    // Not echoed: it is not fit to print.
    throw new ConfigError(
      'CONFIG_INVALID',
      `${what}: the id of key provider ${bad + 1} of ${providers.length} is not ${KEK_ID_RULE}.`,
    )
  }
  const ids = new Set(providers.map((p) => p.id))
  if (ids.size !== providers.length) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `${what}: two key providers share one id; each KEK needs its own id.`,
    )
  }
}

/** A view of a provider without `close`: several key rings share it, the instance closes it once. */
export function withoutClose(provider: KeyProvider): KeyProvider {
  return {
    id: provider.id,
    generateDataKey: (ref) => provider.generateDataKey(ref),
    unwrap: (wrapped, ref) => provider.unwrap(wrapped, ref),
    rewrap: (source, ref) => provider.rewrap(source, ref),
  }
}
