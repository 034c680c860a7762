import { describe, expect, it } from 'vitest'
import { KeyError, KeyProviderError } from '../../../src/errors.js'
import { errorCode } from '../../../src/keys/provider-call.js'

/**
 * The code of a provider's error: the library's own errors keep theirs; an error of another copy
 * of the library (a `kfe` bin and its config) keeps a provider code by name; anything else, a
 * look-alike of another library included, is PROVIDER_ERROR.
 */
describe('errorCode', () => {
  const lookAlike = (code: string) => Object.assign(new Error('x'), { name: 'KeyProviderError', code })

  it('keeps the code of this library’s errors', () => {
    expect(errorCode(new KeyProviderError('UNWRAP_FAILED', 'x'))).toBe('UNWRAP_FAILED')
    expect(errorCode(new KeyError('KEY_CHECK_FAILED', 'x'))).toBe('KEY_CHECK_FAILED')
  })

  it('keeps a provider code of an error named KeyProviderError (another copy of the library)', () => {
    for (const code of ['UNWRAP_FAILED', 'PROVIDER_UNAVAILABLE', 'PROVIDER_ACCESS_DENIED'])
      expect(errorCode(lookAlike(code))).toBe(code)
  })

  it('gives PROVIDER_ERROR for any other code of that name, and for untyped errors', () => {
    // KEY_DESTROYED would be skipped as a missing key; an invented code is in no documented set.
    for (const code of ['KEY_DESTROYED', 'KEY_NOT_FOUND', 'VAULT_SEALED'])
      expect(errorCode(lookAlike(code))).toBe('PROVIDER_ERROR')
    expect(errorCode(new Error('boom'))).toBe('PROVIDER_ERROR')
    expect(errorCode(undefined)).toBe('PROVIDER_ERROR')
  })
})
