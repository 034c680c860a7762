/**
 * PKCS#11 return values the provider reacts to, and how it classifies them. Kept apart from the
 * provider so the mapping (fault → error code) can be read, and documented, in one place.
 */

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
