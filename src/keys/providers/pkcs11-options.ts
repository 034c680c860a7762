import { KeyProviderError } from '../../errors.js'
import { optionKeys, refuseUnknownKeys } from '../../option-keys.js'
import type { KeyProvider } from '../key-provider.js'

/** Options of {@link pkcs11KeyProvider}. */
export interface Pkcs11ProviderOptions {
  /** Path of the PKCS#11 library, e.g. `/usr/lib/softhsm/libsofthsm2.so` or `/opt/cloudhsm/lib/libcloudhsm_pkcs11.so`. */
  readonly module: string
  /** Slot ID (`CK_SLOT_ID`, as `pkcs11-tool -L` prints it). Give `slot` or `tokenLabel`, not both. */
  readonly slot?: number
  /** Label of the token; the slot holding it is looked up on every (re)connect, so a moved token is found. */
  readonly tokenLabel?: string
  /** User PIN (CloudHSM: `<CU user>:<password>`). Give `pin` or `pinEnv`. Never logged or serialised. */
  readonly pin?: string
  /** Name of the environment variable holding the PIN, read at each login (so it can be rotated). */
  readonly pinEnv?: string
  /** `CKA_LABEL` of the AES-256 KEK on the token. */
  readonly keyLabel: string
  /**
   * Stable id stored beside every wrapping. Keep it when the token moves to another slot.
   * @default `pkcs11:<tokenLabel or slot>/<keyLabel>`
   */
  readonly id?: string
  /**
   * Logged-in sessions kept open. Each runs one HSM operation at a time; further callers queue.
   * More sessions help only when the HSM itself works in parallel (a network HSM); each costs a
   * session slot on the HSM (CloudHSM and Luna cap sessions per client).
   * @default 2
   */
  readonly sessions?: number
  /**
   * How new wrappings are made. `AES_GCM` binds each wrapping to its KeyRef through the AAD
   * (NIST SP 800-38D); `AES_KEY_WRAP_PAD` (RFC 5649) has no AAD, so the KeyRef's SHA-256 is wrapped
   * with the key and compared on unwrap. Unwrap reads both forms.
   * @default 'AES_GCM'
   */
  readonly mechanism?: 'AES_KEY_WRAP_PAD' | 'AES_GCM'
}

/** The keys of {@link Pkcs11ProviderOptions}. */
const PKCS11_OPTION_KEYS = optionKeys<Pkcs11ProviderOptions>()([
  'module',
  'slot',
  'tokenLabel',
  'pin',
  'pinEnv',
  'keyLabel',
  'id',
  'sessions',
  'mechanism',
])

/** The error of a PKCS#11 option check: a KeyProviderError, as the provider's other refusals. */
export function refusal(message: string): KeyProviderError {
  return new KeyProviderError('CONFIG_INVALID', message)
}

/** A PKCS#11 key provider; `close()` releases its sessions and the module. */
export type Pkcs11KeyProvider = KeyProvider & { close(): Promise<void> }

/**
 * Checks the options of a PKCS#11 provider (or of {@link generatePkcs11Kek}) at once.
 * @throws KeyProviderError `CONFIG_INVALID` for contradictory, missing or out-of-range options.
 */
export function validateOptions(o: Pkcs11ProviderOptions): void {
  const fail = (msg: string): never => {
    throw new KeyProviderError('CONFIG_INVALID', `pkcs11KeyProvider: ${msg}`)
  }
  refuseUnknownKeys(o, PKCS11_OPTION_KEYS, 'pkcs11KeyProvider', refusal)
  if (typeof o.module !== 'string' || o.module === '')
    fail('`module` (path of the PKCS#11 library) is required.')
  if ((o.slot === undefined) === (o.tokenLabel === undefined))
    fail('give exactly one of `slot` and `tokenLabel`.')
  if (o.slot !== undefined && (!Number.isInteger(o.slot) || o.slot < 0))
    fail('`slot` must be a slot ID (integer ≥ 0).')
  if ((o.pin === undefined) === (o.pinEnv === undefined)) fail('give exactly one of `pin` and `pinEnv`.')
  if (typeof o.keyLabel !== 'string' || o.keyLabel === '') fail('`keyLabel` is required.')
  const sessions = o.sessions ?? 2
  if (!Number.isInteger(sessions) || sessions < 1 || sessions > 64)
    fail('`sessions` must be an integer in 1..64.')
  if (o.mechanism !== undefined && o.mechanism !== 'AES_GCM' && o.mechanism !== 'AES_KEY_WRAP_PAD') {
    fail('`mechanism` must be AES_GCM or AES_KEY_WRAP_PAD.')
  }
}
