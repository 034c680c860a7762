import { describe, expect, it } from 'vitest'
import { KeyProviderError } from '../../../src/errors.js'
import { kmsErrorCode, mapKmsError } from '../../../src/keys/providers/aws-kms-errors.js'

/** An error shaped like the SDK's: `name` from KMS's `__type`, `$metadata.httpStatusCode`. */
function sdkError(name: string, status?: number, code?: string): Error {
  return Object.assign(new Error('from KMS'), { name, code, $metadata: { httpStatusCode: status } })
}

describe('kmsErrorCode', () => {
  it.each([
    ['AccessDeniedException', 'PROVIDER_ACCESS_DENIED'],
    ['UnrecognizedClientException', 'PROVIDER_ACCESS_DENIED'],
    ['ExpiredTokenException', 'PROVIDER_ACCESS_DENIED'],
    ['CredentialsProviderError', 'PROVIDER_UNAVAILABLE'],
    ['DisabledException', 'PROVIDER_KEY_DISABLED'],
    ['KMSInvalidStateException', 'PROVIDER_KEY_DISABLED'],
    ['NotFoundException', 'PROVIDER_KEY_DISABLED'],
    ['ThrottlingException', 'PROVIDER_THROTTLED'],
    ['LimitExceededException', 'PROVIDER_THROTTLED'],
    ['InvalidCiphertextException', 'PROVIDER_INVALID_CIPHERTEXT'],
    ['IncorrectKeyException', 'PROVIDER_INVALID_CIPHERTEXT'],
    ['KMSInternalException', 'PROVIDER_UNAVAILABLE'],
    ['DependencyTimeoutException', 'PROVIDER_UNAVAILABLE'],
    ['KeyUnavailableException', 'PROVIDER_UNAVAILABLE'],
    ['TimeoutError', 'PROVIDER_UNAVAILABLE'],
    ['InvalidKeyUsageException', 'PROVIDER_ERROR'],
    ['ValidationException', 'PROVIDER_ERROR'],
  ])('%s → %s', (name, code) => {
    expect(kmsErrorCode(sdkError(name, 400))).toBe(code)
  })

  it.each(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'ETIMEDOUT', 'EAI_AGAIN'])(
    'a socket error %s → PROVIDER_UNAVAILABLE',
    (code) => {
      expect(kmsErrorCode(sdkError('Error', undefined, code))).toBe('PROVIDER_UNAVAILABLE')
    },
  )

  it('an unknown exception with a 5xx status → PROVIDER_UNAVAILABLE, with 429 → PROVIDER_THROTTLED', () => {
    expect(kmsErrorCode(sdkError('SomethingNew', 502))).toBe('PROVIDER_UNAVAILABLE')
    expect(kmsErrorCode(sdkError('SomethingNew', 429))).toBe('PROVIDER_THROTTLED')
    expect(kmsErrorCode(sdkError('SomethingNew', 400))).toBe('PROVIDER_ERROR')
  })

  it('a non-object → PROVIDER_ERROR', () => {
    expect(kmsErrorCode('boom')).toBe('PROVIDER_ERROR')
    expect(kmsErrorCode(null)).toBe('PROVIDER_ERROR')
  })
})

describe('mapKmsError', () => {
  const ctx = {
    operation: 'Decrypt',
    keyId: 'arn:aws:kms:eu-west-1:111122223333:key/k',
    providerId: 'aws-kms:arn:aws:kms:eu-west-1:111122223333:key/k',
    ref: { logicalTable: 'users', purpose: 'data' as const, version: 3 },
  }

  it('names the operation, key and ref, keeps the cause, and leaves the SDK message out', () => {
    const cause = Object.assign(sdkError('DisabledException', 400), { message: 'secret-ish detail' })
    const error = mapKmsError(cause, ctx)
    expect(error).toBeInstanceOf(KeyProviderError)
    expect(error.code).toBe('PROVIDER_KEY_DISABLED')
    expect(error.cause).toBe(cause)
    expect(error.table).toBe('users')
    expect(error.providerId).toBe(ctx.providerId)
    expect(error.message).toContain('KMS Decrypt on arn:aws:kms:eu-west-1:111122223333:key/k')
    expect(error.message).toContain('(table users, purpose data, version 3)')
    expect(error.message).toContain('[DisabledException]')
    expect(error.message).not.toContain('secret-ish detail')
  })

  it('says "not found" for NotFoundException, though the code is PROVIDER_KEY_DISABLED', () => {
    const error = mapKmsError(sdkError('NotFoundException', 400), ctx)
    expect(error.code).toBe('PROVIDER_KEY_DISABLED')
    expect(error.message).toMatch(/not found/)
  })

  it('passes a KeyProviderError through unchanged', () => {
    const inner = new KeyProviderError('UNWRAP_FAILED', 'x')
    expect(mapKmsError(inner, ctx)).toBe(inner)
  })
})
