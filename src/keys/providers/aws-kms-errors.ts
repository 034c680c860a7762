/**
 * How AWS KMS failures become {@link KeyProviderError} codes. Keyed on the SDK exception's `name`
 * (the `__type` of KMS's JSON error body), then on socket error codes, then on the HTTP status,
 * so it needs no import of `@aws-sdk/client-kms` and stays testable without it.
 */
import { type ErrorCode, KeyProviderError } from '../../errors.js'
import type { KeyRef } from '../key-provider.js'

/** `(table t, purpose p, version v)`, for messages. */
export function describeRef(ref: KeyRef): string {
  return `(table ${ref.logicalTable}, purpose ${ref.purpose}, version ${ref.version})`
}

/** Where a KMS failure happened, for the message. Never bytes. */
export interface KmsErrorContext {
  readonly operation: string
  readonly keyId: string
  readonly providerId: string
  readonly ref: KeyRef | undefined
}

const CODE_BY_NAME: Readonly<Record<string, ErrorCode>> = {
  AccessDeniedException: 'PROVIDER_ACCESS_DENIED',
  InvalidGrantTokenException: 'PROVIDER_ACCESS_DENIED',
  UnrecognizedClientException: 'PROVIDER_ACCESS_DENIED',
  InvalidSignatureException: 'PROVIDER_ACCESS_DENIED',
  IncompleteSignature: 'PROVIDER_ACCESS_DENIED',
  MissingAuthenticationToken: 'PROVIDER_ACCESS_DENIED',
  MissingAuthenticationTokenException: 'PROVIDER_ACCESS_DENIED',
  ExpiredTokenException: 'PROVIDER_ACCESS_DENIED',
  // The SDK could not get credentials (the container or instance credential endpoint failing, no
  // source configured): KMS was never asked, so nothing was refused. An availability error, so
  // that a cached key is served within grace while a credential endpoint is down; a revocation
  // still comes from KMS itself (AccessDeniedException), and a process with nothing cached still
  // fails at once.
  CredentialsProviderError: 'PROVIDER_UNAVAILABLE',
  DisabledException: 'PROVIDER_KEY_DISABLED',
  KMSInvalidStateException: 'PROVIDER_KEY_DISABLED',
  // A deleted key (or a wrong id, account or region) can no more be used than a disabled one;
  // the message says "not found" so the two are told apart.
  NotFoundException: 'PROVIDER_KEY_DISABLED',
  ThrottlingException: 'PROVIDER_THROTTLED',
  LimitExceededException: 'PROVIDER_THROTTLED',
  TooManyRequestsException: 'PROVIDER_THROTTLED',
  RequestLimitExceeded: 'PROVIDER_THROTTLED',
  InvalidCiphertextException: 'PROVIDER_INVALID_CIPHERTEXT',
  IncorrectKeyException: 'PROVIDER_INVALID_CIPHERTEXT',
  KMSInternalException: 'PROVIDER_UNAVAILABLE',
  DependencyTimeoutException: 'PROVIDER_UNAVAILABLE',
  KeyUnavailableException: 'PROVIDER_UNAVAILABLE',
  CustomKeyStoreInvalidStateException: 'PROVIDER_UNAVAILABLE',
  XksProxyUriUnreachableException: 'PROVIDER_UNAVAILABLE',
  XksProxyInvalidResponseException: 'PROVIDER_UNAVAILABLE',
  ServiceUnavailableException: 'PROVIDER_UNAVAILABLE',
  InternalFailure: 'PROVIDER_UNAVAILABLE',
  TimeoutError: 'PROVIDER_UNAVAILABLE',
  RequestTimeout: 'PROVIDER_UNAVAILABLE',
  RequestTimeoutException: 'PROVIDER_UNAVAILABLE',
}

/** Socket-level failures: KMS (or the path to it) is not answering. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
])

/** Maps an SDK exception to the stable code the application branches on. */
export function kmsErrorCode(error: unknown): ErrorCode {
  if (typeof error !== 'object' || error === null) return 'PROVIDER_ERROR'
  const e = error as { name?: unknown; code?: unknown; $metadata?: { httpStatusCode?: unknown } }
  const byName = typeof e.name === 'string' ? CODE_BY_NAME[e.name] : undefined
  if (byName !== undefined) return byName
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return 'PROVIDER_UNAVAILABLE'
  const status = e.$metadata?.httpStatusCode
  if (typeof status === 'number') {
    if (status === 429) return 'PROVIDER_THROTTLED'
    if (status >= 500) return 'PROVIDER_UNAVAILABLE'
  }
  return 'PROVIDER_ERROR'
}

const WHAT: Readonly<Record<string, string>> = {
  PROVIDER_ACCESS_DENIED:
    'access denied (check the IAM/key policy and the kfe:table EncryptionContext condition)',
  PROVIDER_KEY_DISABLED: 'the KMS key is disabled, pending deletion or not found',
  PROVIDER_THROTTLED: 'KMS throttled the request after the SDK retries',
  PROVIDER_INVALID_CIPHERTEXT:
    'KMS rejected the wrapped key (wrong KMS key, wrong table/purpose/version context, or corrupt bytes)',
  PROVIDER_UNAVAILABLE: 'KMS is unreachable or failing (network, timeout or 5xx)',
  PROVIDER_ERROR: 'KMS call failed',
}

/**
 * Wraps an SDK failure in a {@link KeyProviderError} whose message names the operation, key id and
 * key ref, and whose `cause` is the SDK error. A KeyProviderError passes through unchanged.
 */
export function mapKmsError(error: unknown, ctx: KmsErrorContext): KeyProviderError {
  if (error instanceof KeyProviderError) return error
  const code = kmsErrorCode(error)
  const e = (typeof error === 'object' && error !== null ? error : {}) as { name?: unknown; code?: unknown }
  const name = typeof e.name === 'string' ? e.name : 'Error'
  const detail =
    name === 'NotFoundException'
      ? 'the KMS key was not found (deleted, or wrong id, account or region)'
      : name === 'CredentialsProviderError'
        ? 'the SDK could not load AWS credentials (the credential endpoint failed, or no credential source is configured); KMS was not asked'
        : WHAT[code]
  const where = ctx.ref === undefined ? '' : ` ${describeRef(ctx.ref)}`
  const sysCode = typeof e.code === 'string' && e.code !== name ? `/${e.code}` : ''
  // The SDK's own message is left in `cause`: KMS messages can echo request details we do not control.
  return new KeyProviderError(
    code,
    `KMS ${ctx.operation} on ${ctx.keyId}${where} failed: ${detail} [${name}${sysCode}].`,
    {
      cause: error,
      providerId: ctx.providerId,
      table: ctx.ref?.logicalTable,
    },
  )
}
