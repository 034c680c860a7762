/**
 * PKCS#11 return values the provider reacts to, and how it classifies them. Kept apart from the
 * provider so the mapping (fault → error code) can be read, and documented, in one place.
 */

import { FieldEncryptionError, KeyProviderError } from '../../errors.js'
import type { KeyRef } from '../key-provider.js'
import { unwrapFailedCauses } from '../unwrap-failed.js'

/** Return values (PKCS#11 v2.40 base specification §3.6, pkcs11t.h). */
export const CKR = {
  GENERAL_ERROR: 0x05,
  FUNCTION_FAILED: 0x06,
  DEVICE_ERROR: 0x30,
  DEVICE_MEMORY: 0x31,
  DEVICE_REMOVED: 0x32,
  ENCRYPTED_DATA_INVALID: 0x40,
  ENCRYPTED_DATA_LEN_RANGE: 0x41,
  KEY_HANDLE_INVALID: 0x60,
  KEY_FUNCTION_NOT_PERMITTED: 0x68,
  MECHANISM_INVALID: 0x70,
  MECHANISM_PARAM_INVALID: 0x71,
  OBJECT_HANDLE_INVALID: 0x82,
  PIN_INCORRECT: 0xa0,
  PIN_INVALID: 0xa1,
  PIN_LEN_RANGE: 0xa2,
  PIN_EXPIRED: 0xa3,
  PIN_LOCKED: 0xa4,
  SESSION_CLOSED: 0xb0,
  SESSION_HANDLE_INVALID: 0xb3,
  SLOT_ID_INVALID: 0x03,
  TOKEN_NOT_PRESENT: 0xe0,
  USER_ALREADY_LOGGED_IN: 0x100,
  USER_NOT_LOGGED_IN: 0x101,
  WRAPPED_KEY_INVALID: 0x110,
  WRAPPED_KEY_LEN_RANGE: 0x112,
  CRYPTOKI_NOT_INITIALIZED: 0x190,
} as const
/** `C_Initialize` flag: the library may use OS locking (several threads call it). */
export const CKF_OS_LOCKING_OK = 0x02
/** `C_OpenSession` flag: read/write session. */
export const CKF_RW_SESSION = 0x02
/** `C_OpenSession` flag, always set (PKCS#11 v2.40 §5.6). */
export const CKF_SERIAL_SESSION = 0x04

/** Return values after which the session (or the whole login) is gone: reopen, log in, retry once. */
export const SESSION_LOST = new Set<number>([
  CKR.SESSION_HANDLE_INVALID,
  CKR.SESSION_CLOSED,
  CKR.DEVICE_REMOVED,
  CKR.TOKEN_NOT_PRESENT,
  CKR.USER_NOT_LOGGED_IN,
  CKR.CRYPTOKI_NOT_INITIALIZED,
  CKR.SLOT_ID_INVALID,
  // A key handle from a session that was closed behind our back.
  CKR.KEY_HANDLE_INVALID,
  CKR.OBJECT_HANDLE_INVALID,
])
/** PIN refusals → `PROVIDER_ACCESS_DENIED`. */
export const PIN_REFUSED = new Set<number>([
  CKR.PIN_INCORRECT,
  CKR.PIN_INVALID,
  CKR.PIN_LEN_RANGE,
  CKR.PIN_EXPIRED,
  CKR.PIN_LOCKED,
])
/** What a token answers to a wrapping that does not authenticate (SoftHSM2 says CKR_GENERAL_ERROR for a bad GCM tag). */
export const UNWRAP_REFUSED = new Set<number>([
  CKR.ENCRYPTED_DATA_INVALID,
  CKR.ENCRYPTED_DATA_LEN_RANGE,
  CKR.WRAPPED_KEY_INVALID,
  CKR.WRAPPED_KEY_LEN_RANGE,
  CKR.GENERAL_ERROR,
  CKR.FUNCTION_FAILED,
])

/** The `CKR_*` value of a pkcs11js `Pkcs11Error`, or undefined for any other error. */
export function pkcs11Code(error: unknown): number | undefined {
  if (error instanceof Error && error.name === 'Pkcs11Error') {
    const code = (error as Error & { code?: unknown }).code
    return typeof code === 'number' ? code : undefined
  }
  return undefined
}

/** The `CKR_*` name of an error for messages (never data: PKCS#11 errors carry none). */
export function ckrName(error: unknown): string {
  const code = pkcs11Code(error)
  if (code === undefined) return error instanceof Error ? error.name : 'unknown error'
  return error instanceof Error && /^CKR_\w+$/.test(error.message)
    ? error.message
    : `CKR 0x${code.toString(16)}`
}

/** True when the session or login is gone and a reconnect may help. */
export function isSessionLost(error: unknown): boolean {
  const code = pkcs11Code(error)
  return code !== undefined && SESSION_LOST.has(code)
}

/**
 * A PKCS#11 failure of a wrap or unwrap as a typed error: PIN refused → `PROVIDER_ACCESS_DENIED`,
 * key not allowed to → `PROVIDER_KEY_DISABLED`, mechanism refused → `CONFIG_INVALID`, device
 * failure → `PROVIDER_UNAVAILABLE`, an unwrap the token refuses → `UNWRAP_FAILED`, anything else
 * → `PROVIDER_ERROR`. Our own typed errors pass through (named after the provider).
 */
export function mapPkcs11Error(
  error: unknown,
  ref: KeyRef,
  what: 'wrap' | 'unwrap',
  provider: { readonly providerId: string; readonly keyLabel: string; readonly mechanism: string },
): FieldEncryptionError {
  const fail = (code: KeyProviderError['code'], message: string, cause: unknown): KeyProviderError =>
    new KeyProviderError(code, message, { cause, table: ref.logicalTable, providerId: provider.providerId })
  if (error instanceof KeyProviderError) {
    return error.providerId === undefined
      ? new KeyProviderError(error.code, error.message, {
          cause: error.cause,
          table: ref.logicalTable,
          providerId: provider.providerId,
        })
      : error
  }
  if (error instanceof FieldEncryptionError) return error
  const code = pkcs11Code(error)
  const name = ckrName(error)
  if (code === undefined) return fail('PROVIDER_ERROR', `PKCS#11 ${what} failed: ${name}.`, error)
  if (PIN_REFUSED.has(code)) return fail('PROVIDER_ACCESS_DENIED', `PKCS#11 login refused: ${name}.`, error)
  if (code === CKR.KEY_FUNCTION_NOT_PERMITTED) {
    return fail(
      'PROVIDER_KEY_DISABLED',
      `The key "${provider.keyLabel}" may not be used to ${what}: ${name}.`,
      error,
    )
  }
  if (code === CKR.MECHANISM_INVALID || code === CKR.MECHANISM_PARAM_INVALID) {
    return fail('CONFIG_INVALID', `The token refused the ${provider.mechanism} mechanism: ${name}.`, error)
  }
  if (code === CKR.DEVICE_ERROR || code === CKR.DEVICE_MEMORY) {
    return fail('PROVIDER_UNAVAILABLE', `The PKCS#11 device failed: ${name}.`, error)
  }
  if (what === 'unwrap' && UNWRAP_REFUSED.has(code)) {
    return fail(
      'UNWRAP_FAILED',
      `The token could not unwrap this key for ${ref.logicalTable}/${ref.purpose}/v${ref.version} (${name}): wrong KeyRef, wrong KEK or corrupted. ${unwrapFailedCauses(provider.providerId)}`,
      error,
    )
  }
  return fail('PROVIDER_ERROR', `PKCS#11 ${what} failed: ${name}.`, error)
}
