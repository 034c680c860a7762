/**
 * Reaching the KEK on a PKCS#11 token: finding the token's slot, the PIN, logging a session in,
 * and looking the KEK up by its label.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type * as Graphene from 'graphene-pk11'
import { KeyProviderError } from '../../errors.js'
import { CKR, ckrName, PIN_REFUSED, pkcs11Code } from './pkcs11-errors.js'
import type { GrapheneModule, SharedModule } from './pkcs11-module.js'
import { KEY_BYTES } from './pkcs11-wrap.js'

/** Where a provider's token is. */
export interface Target {
  readonly module: string
  readonly slot?: number | undefined
  readonly tokenLabel?: string | undefined
}

/** The token as messages name it. */
export function describeTarget(t: Target): string {
  return t.tokenLabel !== undefined ? `token "${t.tokenLabel}"` : `slot ${String(t.slot)}`
}

function slotId(handle: Buffer): number {
  return handle.length >= 8 ? Number(handle.readBigUInt64LE(0)) : handle.readUInt32LE(0)
}

/**
 * The slot holding the target token (looked up on every (re)connect, so a moved token is found).
 * @throws KeyProviderError `PROVIDER_UNAVAILABLE` when no such slot has a token present.
 */
export function findSlot(shared: SharedModule, target: Target): Graphene.Slot {
  let slots: ReturnType<typeof shared.module.getSlots>
  try {
    slots = shared.module.getSlots(true)
  } catch (error) {
    // A module that cannot list its slots (a network HSM gone, a token deleted: CKR_GENERAL_ERROR)
    // did not answer; it did not refuse a key.
    throw new KeyProviderError(
      'PROVIDER_UNAVAILABLE',
      `The PKCS#11 module ${target.module} could not list its slots: ${ckrName(error)}.`,
      { cause: error },
    )
  }
  for (let i = 0; i < slots.length; i++) {
    const slot = slots.items(i)
    let match: boolean
    try {
      match =
        target.slot !== undefined
          ? slotId(slot.handle) === target.slot
          : slot.getToken().label === target.tokenLabel
    } catch {
      continue // a slot whose token cannot be read is not the target's
    }
    if (match) return slot
  }
  throw new KeyProviderError(
    'PROVIDER_UNAVAILABLE',
    `No PKCS#11 ${describeTarget(target)} with a token present in ${target.module}.`,
  )
}

/**
 * The PIN, given or read from its environment variable at each login. A PIN changed while the
 * process is logged in to the token is refused until every session of it has closed (see
 * {@link login}): restart after a PIN change.
 * @throws KeyProviderError `CONFIG_INVALID` when the variable is not set.
 */
export function readPin(options: { pin?: string | undefined; pinEnv?: string | undefined }): string {
  if (options.pin !== undefined) return options.pin
  const value = options.pinEnv === undefined ? undefined : process.env[options.pinEnv]
  if (value === undefined || value === '') {
    throw new KeyProviderError(
      'CONFIG_INVALID',
      `The PKCS#11 PIN variable ${String(options.pinEnv)} is not set.`,
    )
  }
  return value
}

/**
 * Logs sessions in, and remembers (as its SHA-256) a PIN the token found incorrect
 * (`CKR_PIN_INCORRECT`, the answer that counts toward locking the user): that PIN is not tried
 * again for {@link PIN_RETRY_MS} unless it changes. A token locks its user after a few wrong PINs
 * (CloudHSM after 5), and every query that needs a session would otherwise try it once more.
 * Other refusals (a locked or expired PIN) are not remembered: trying them costs no attempt, and
 * they end when an administrator acts.
 */
export class PinGuard {
  #refused: { readonly digest: Buffer; readonly until: number } | undefined

  /**
   * @throws KeyProviderError `PROVIDER_ACCESS_DENIED` when the token refuses `pin`, or found it
   *   incorrect less than {@link PIN_RETRY_MS} ago (then without a login)
   */
  login(
    session: Graphene.Session,
    shared: SharedModule,
    pin: string,
    target: Target,
    providerId: string,
    pinEnv: string | undefined,
  ): void {
    const digest = createHash('sha256').update(pin).digest()
    const refused = this.#refused
    if (refused !== undefined && Date.now() < refused.until && timingSafeEqual(refused.digest, digest))
      throw new KeyProviderError(
        'PROVIDER_ACCESS_DENIED',
        `The PKCS#11 ${describeTarget(target)} found this PIN incorrect less than a minute ago: it is not tried again before then (a token locks its user after a few wrong PINs). Correct the PIN${pinEnv === undefined ? '' : ` ($${pinEnv})`} and restart.`,
        { providerId },
      )
    try {
      login(session, shared, pin, target, providerId)
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause
      if (error instanceof KeyProviderError && pkcs11Code(cause) === CKR.PIN_INCORRECT)
        this.#refused = { digest, until: Date.now() + PIN_RETRY_MS }
      throw error
    }
    this.#refused = undefined
  }
}

/** How long a PIN the token found incorrect is not tried again. */
export const PIN_RETRY_MS = 60_000

/**
 * Logs a session in as the user. A slot already logged in (by another session of this process) is
 * fine with the PIN it was logged in with, as far as this library logged it in: another PIN
 * (a second provider on the token, configured with a wrong one) is refused, where the token would
 * never have checked it.
 * @throws KeyProviderError `PROVIDER_ACCESS_DENIED` when the PIN is refused, or differs from the
 *   one the slot is logged in with
 */
export function login(
  session: Graphene.Session,
  shared: SharedModule,
  pin: string,
  target: Target,
  providerId?: string,
): void {
  const slot = session.slot.handle.toString('hex')
  const digest = createHash('sha256').update(pin).digest()
  try {
    session.login(pin, shared.g.UserType.USER)
    shared.logins.set(slot, digest)
  } catch (error) {
    // Login state is per application and slot (PKCS#11 v2.40 §5.6): the second session is already in.
    if (pkcs11Code(error) === CKR.USER_ALREADY_LOGGED_IN) {
      const first = shared.logins.get(slot)
      if (first === undefined || timingSafeEqual(first, digest)) return
      throw new KeyProviderError(
        'PROVIDER_ACCESS_DENIED',
        `PKCS#11 ${describeTarget(target)} is logged in by this process with another PIN than this one, which the token does not check while it is: a wrong PIN, or one changed since that login. Correct it, or restart the process after a PIN change.`,
        { cause: error, providerId },
      )
    }
    const code = pkcs11Code(error)
    if (code !== undefined && PIN_REFUSED.has(code)) {
      throw new KeyProviderError(
        'PROVIDER_ACCESS_DENIED',
        `PKCS#11 login to ${describeTarget(target)} refused: ${ckrName(error)}.`,
        {
          cause: error,
        },
      )
    }
    throw error
  }
}

/**
 * The KEK of a logged-in session: the one secret key labelled `keyLabel`, which must be AES-256.
 * @throws KeyProviderError `CONFIG_INVALID` when no key, or several, carry the label, or it is not
 *   AES-256; `PROVIDER_KEY_DISABLED` when none does any more (`seenBefore`: this provider used it).
 */
export function findKek(
  session: Graphene.Session,
  g: GrapheneModule,
  keyLabel: string,
  target: Target,
  providerId: string,
  seenBefore = false,
): Graphene.SecretKey {
  const found = session.find({ class: g.ObjectClass.SECRET_KEY, label: keyLabel })
  if (found.length === 0 && seenBefore) {
    // Deleted since this provider used it: a revocation, as a deleted KMS key is (never grace).
    throw new KeyProviderError(
      'PROVIDER_KEY_DISABLED',
      `The secret key labelled "${keyLabel}" is no longer on PKCS#11 ${describeTarget(target)} (deleted).`,
      { providerId },
    )
  }
  if (found.length !== 1) {
    throw new KeyProviderError(
      'CONFIG_INVALID',
      found.length === 0
        ? `No secret key labelled "${keyLabel}" on PKCS#11 ${describeTarget(target)}; create it with generatePkcs11Kek.`
        : `${found.length} secret keys are labelled "${keyLabel}" on PKCS#11 ${describeTarget(target)}; labels must be unique.`,
      { providerId },
    )
  }
  const kek = found.items(0).toType<Graphene.SecretKey>()
  const attrs = kek.getAttribute({ keyType: null, valueLen: null })
  if (attrs.keyType !== g.KeyType.AES || attrs.valueLen !== KEY_BYTES) {
    throw new KeyProviderError('CONFIG_INVALID', `The key "${keyLabel}" is not an AES-256 key.`, {
      providerId,
    })
  }
  return kek
}
