/**
 * Model B of DESIGN.md §2: the key-encrypting key (KEK) is an AES-256 secret key object inside a
 * PKCS#11 token (SoftHSM2, AWS CloudHSM, Thales Luna, …), reached through graphene-pk11. The KEK
 * never leaves the token; data keys are generated here and encrypted under it on the token.
 *
 * This file is the provider: its session pool, reconnects and errors. The wire format and the
 * wrap mechanisms are in `pkcs11-wrap.ts`, the library in `pkcs11-module.ts`, slot, login and KEK
 * lookup in `pkcs11-token.ts`, KEK creation in `pkcs11-kek.ts`.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import { inspect } from 'node:util'
import type * as Graphene from 'graphene-pk11'
import { FieldEncryptionError, KeyProviderError } from '../../errors.js'
import type { GeneratedKey, KeyRef, RewrapSource, WrappedKey } from '../key-provider.js'
import {
  CKF_OS_LOCKING_OK,
  CKF_SERIAL_SESSION,
  CKR,
  ckrName,
  isSessionLost,
  mapPkcs11Error,
  pkcs11Code,
} from './pkcs11-errors.js'
import {
  acquirePkcs11Module,
  type GrapheneModule,
  releasePkcs11Module,
  type SharedModule,
} from './pkcs11-module.js'
import { type Pkcs11KeyProvider, type Pkcs11ProviderOptions, validateOptions } from './pkcs11-options.js'
import { SessionPool } from './pkcs11-session-pool.js'
import { describeTarget, findKek, findSlot, PinGuard, readPin, type Target } from './pkcs11-token.js'
import {
  encodeKeyRef,
  FORMAT_GCM,
  FORMAT_KWP,
  GCM_WRAPPED_BYTES,
  gcmOpen,
  gcmSeal,
  KEY_BYTES,
  KWP_WRAPPED_BYTES,
  kwpOpen,
  kwpSeal,
  type Pooled,
} from './pkcs11-wrap.js'

export type { GeneratePkcs11KekOptions } from './pkcs11-kek.js'
export { generatePkcs11Kek } from './pkcs11-kek.js'
export { acquirePkcs11Module, releasePkcs11Module } from './pkcs11-module.js'
export type { Pkcs11KeyProvider, Pkcs11ProviderOptions } from './pkcs11-options.js'
export { encodeKeyRef } from './pkcs11-wrap.js'

/**
 * Any PKCS#11 failure leaves the session in a state we cannot see (an operation may still be
 * active: CKR_OPERATION_ACTIVE on the next init), so the pool closes it rather than reuse it.
 */
function discardAfter(error: unknown): boolean {
  return pkcs11Code(error) !== undefined
}

interface Connection {
  readonly shared: SharedModule
  slot: Graphene.Slot
}

class Pkcs11Provider implements Pkcs11KeyProvider {
  readonly id: string
  readonly #target: Target
  readonly #pin: { pin?: string | undefined; pinEnv?: string | undefined }
  /** Logs sessions in; a PIN the token refused is not tried again until it changes. */
  readonly #logins = new PinGuard()
  readonly #keyLabel: string
  readonly #mechanism: 'AES_KEY_WRAP_PAD' | 'AES_GCM'
  readonly #sessions: number
  readonly #pool: SessionPool<Pooled>
  readonly #inflight = new Set<Promise<unknown>>()
  #connection: Promise<Connection> | undefined
  #closed = false
  /** Whether a session found the KEK once: after that, its absence is a deletion (see findKek). */
  #kekSeen = false

  constructor(options: Pkcs11ProviderOptions) {
    validateOptions(options)
    this.#target = { module: options.module, slot: options.slot, tokenLabel: options.tokenLabel }
    this.#pin = { pin: options.pin, pinEnv: options.pinEnv }
    this.#keyLabel = options.keyLabel
    this.#mechanism = options.mechanism ?? 'AES_GCM'
    this.#sessions = options.sessions ?? 2
    this.id = options.id ?? `pkcs11:${options.tokenLabel ?? String(options.slot)}/${options.keyLabel}`
    this.#pool = new SessionPool<Pooled>({
      size: this.#sessions,
      open: () => this.#openSession(),
      close: (p) => p.session.close(),
    })
  }

  async generateDataKey(ref: KeyRef): Promise<GeneratedKey> {
    // node:crypto (OpenSSL's CSPRNG, seeded by the OS) rather than C_GenerateRandom: the key is
    // used in this process anyway, and it saves one HSM round trip per key.
    const plaintext = randomBytes(KEY_BYTES)
    try {
      return { plaintext, wrapped: await this.#wrap(plaintext, ref) }
    } catch (error) {
      plaintext.fill(0)
      throw error
    }
  }

  async unwrap(wrapped: WrappedKey, ref: KeyRef): Promise<Buffer> {
    const aad = encodeKeyRef(ref)
    if (wrapped.kekId !== this.id) {
      throw this.#error(
        'PROVIDER_INVALID_CIPHERTEXT',
        `This key was wrapped by ${wrapped.kekId}, not ${this.id}.`,
        ref,
      )
    }
    const bytes = Buffer.from(wrapped.wrapped)
    const format = bytes[0]
    if (
      !(format === FORMAT_GCM && bytes.length === GCM_WRAPPED_BYTES) &&
      !(format === FORMAT_KWP && bytes.length === KWP_WRAPPED_BYTES)
    ) {
      throw this.#error(
        'PROVIDER_INVALID_CIPHERTEXT',
        `Not a PKCS#11 wrapped key of a known format (${bytes.length} bytes).`,
        ref,
      )
    }
    return this.#run(ref, 'unwrap', async (p) =>
      format === FORMAT_GCM
        ? gcmOpen(await this.#graphene(), p, bytes, aad)
        : kwpOpen(await this.#graphene(), p, bytes, aad),
    )
  }

  async rewrap(source: RewrapSource, ref: KeyRef): Promise<WrappedKey> {
    const plaintext = await source.plaintext()
    try {
      return await this.#wrap(plaintext, ref)
    } finally {
      plaintext.fill(0)
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await Promise.allSettled([...this.#inflight])
    const connection = this.#connection
    this.#connection = undefined
    if (connection === undefined) {
      this.#pool.close()
      return
    }
    const conn = await connection.catch(() => undefined)
    if (conn !== undefined && conn.shared.refs === 1) {
      // Last user of the library in this process: the login is per application and slot
      // (PKCS#11 v2.40 §5.6), so logging out here cannot pull it from under another provider.
      try {
        const session = conn.slot.open(CKF_SERIAL_SESSION)
        try {
          session.logout()
        } finally {
          session.close()
        }
      } catch {
        // Not logged in any more, or the token is gone: nothing to log out of.
      }
    }
    this.#pool.close()
    if (conn !== undefined) releasePkcs11Module(this.#target.module, conn.shared)
  }

  toJSON(): unknown {
    return {
      id: this.id,
      module: this.#target.module,
      slot: this.#target.slot,
      tokenLabel: this.#target.tokenLabel,
      keyLabel: this.#keyLabel,
      sessions: this.#sessions,
      mechanism: this.#mechanism,
      pin: this.#pin.pin !== undefined ? '[redacted]' : `[from $${String(this.#pin.pinEnv)}]`,
    }
  }

  toString(): string {
    return `Pkcs11KeyProvider(${this.id})`
  }

  [inspect.custom](): string {
    return `Pkcs11KeyProvider ${JSON.stringify(this.toJSON())}`
  }

  async #wrap(plaintext: Buffer, ref: KeyRef): Promise<WrappedKey> {
    if (plaintext.length !== KEY_BYTES) {
      throw this.#error(
        'CONFIG_INVALID',
        `A data key must be ${KEY_BYTES} bytes, got ${plaintext.length}.`,
        ref,
      )
    }
    const aad = encodeKeyRef(ref)
    return this.#run(ref, 'wrap', async (p) => {
      const wrapped =
        this.#mechanism === 'AES_GCM'
          ? await gcmSeal(await this.#graphene(), p, plaintext, aad)
          : await kwpSeal(await this.#graphene(), p, plaintext, aad)
      // Read the wrapping back before anyone stores it: a token that silently ignored our IV
      // (and did not hand back its own) would otherwise leave a key nobody can unwrap. Wraps are
      // rare (new key versions, KEK rotation), so the extra HSM call is cheap insurance.
      const back =
        this.#mechanism === 'AES_GCM'
          ? await gcmOpen(await this.#graphene(), p, wrapped, aad)
          : await kwpOpen(await this.#graphene(), p, wrapped, aad)
      const same = timingSafeEqual(back, plaintext)
      back.fill(0)
      if (!same)
        throw new KeyProviderError('PROVIDER_ERROR', 'The token produced a wrapping that does not unwrap.')
      return { kekId: this.id, wrapped }
    })
  }

  /** Runs one operation on a pooled session; on a lost session/login, reconnects and retries once. */
  async #run<T>(ref: KeyRef, what: 'wrap' | 'unwrap', op: (p: Pooled) => Promise<T>): Promise<T> {
    if (this.#closed)
      throw this.#error('PROVIDER_UNAVAILABLE', `The PKCS#11 provider ${this.id} is closed.`, ref)
    const task = (async () => {
      try {
        await this.#connect()
        return await this.#pool.use(op, discardAfter)
      } catch (error) {
        if (!isSessionLost(error)) throw this.#mapError(error, ref, what)
        this.#pool.invalidate()
        try {
          await this.#reconnect(error)
          return await this.#pool.use(op, discardAfter)
        } catch (again) {
          if (isSessionLost(again)) {
            this.#pool.invalidate()
            throw this.#error(
              'PROVIDER_UNAVAILABLE',
              `The PKCS#11 ${describeTarget(this.#target)} did not answer after one reconnect: ${ckrName(again)}.`,
              ref,
              again,
            )
          }
          throw this.#mapError(again, ref, what)
        }
      }
    })()
    this.#inflight.add(task)
    try {
      return await task
    } finally {
      this.#inflight.delete(task)
    }
  }

  /** The graphene module, once connected (each mechanism call awaits the connection). */
  async #graphene(): Promise<GrapheneModule> {
    return (await this.#connect()).shared.g
  }

  #connect(): Promise<Connection> {
    if (this.#connection === undefined) {
      const pending = (async () => {
        const shared = await acquirePkcs11Module(this.#target.module)
        try {
          const slot = findSlot(shared, this.#target)
          this.#checkMechanism(slot)
          return { shared, slot }
        } catch (error) {
          releasePkcs11Module(this.#target.module, shared)
          throw error
        }
      })()
      this.#connection = pending
      pending.catch(() => {
        if (this.#connection === pending) this.#connection = undefined
      })
    }
    return this.#connection
  }

  async #reconnect(cause: unknown): Promise<void> {
    const conn = await this.#connect()
    if (pkcs11Code(cause) === CKR.CRYPTOKI_NOT_INITIALIZED) {
      // Someone called C_Finalize: initialise again (graphene ignores CKR_CRYPTOKI_ALREADY_INITIALIZED).
      conn.shared.module.initialize({ flags: CKF_OS_LOCKING_OK })
    }
    // The token may have moved to another slot (removed and reinserted); look it up again.
    conn.slot = findSlot(conn.shared, this.#target)
  }

  #checkMechanism(slot: Graphene.Slot): void {
    const mechs = slot.getMechanisms()
    const want = this.#mechanism
    for (let i = 0; i < mechs.length; i++) if (mechs.items(i).name === want) return
    throw new KeyProviderError(
      'CONFIG_INVALID',
      `The PKCS#11 ${describeTarget(this.#target)} does not offer CKM_${want}; choose the other \`mechanism\`.`,
      { providerId: this.id },
    )
  }

  async #openSession(): Promise<Pooled> {
    const { shared, slot } = await this.#connect()
    let session: Graphene.Session
    try {
      session = slot.open(CKF_SERIAL_SESSION)
    } catch (error) {
      throw this.#sessionError(error)
    }
    try {
      this.#logins.login(session, shared, readPin(this.#pin), this.#target, this.id, this.#pin.pinEnv)
      const kek = findKek(session, shared.g, this.#keyLabel, this.#target, this.id, this.#kekSeen)
      this.#kekSeen = true
      return { session, kek }
    } catch (error) {
      try {
        session.close()
      } catch {
        // The session is unusable anyway.
      }
      throw this.#sessionError(error)
    }
  }

  /**
   * An error of opening a session, logging in or finding the KEK: typed ones, and a lost session
   * (reconnected by the caller), as they are; any other PKCS#11 failure there is the token not
   * answering (`PROVIDER_UNAVAILABLE`), never a refusal of a wrapping, which only a decryption can be.
   */
  #sessionError(error: unknown): unknown {
    if (error instanceof FieldEncryptionError || isSessionLost(error) || pkcs11Code(error) === undefined)
      return error
    return new KeyProviderError(
      'PROVIDER_UNAVAILABLE',
      `The PKCS#11 ${describeTarget(this.#target)} could not open a session: ${ckrName(error)}.`,
      { cause: error, providerId: this.id },
    )
  }

  #mapError(error: unknown, ref: KeyRef, what: 'wrap' | 'unwrap'): FieldEncryptionError {
    return mapPkcs11Error(error, ref, what, {
      providerId: this.id,
      keyLabel: this.#keyLabel,
      mechanism: this.#mechanism,
    })
  }

  #error(code: KeyProviderError['code'], message: string, ref: KeyRef, cause?: unknown): KeyProviderError {
    return new KeyProviderError(code, message, { cause, table: ref.logicalTable, providerId: this.id })
  }
}

/**
 * A {@link KeyProvider} whose KEK is an AES-256 key inside a PKCS#11 token (model B).
 *
 * Nothing is loaded until the first call: then the library is loaded (once per process), the
 * token found and up to `sessions` sessions opened and logged in.
 *
 * @param options Library path, token, PIN and KEK label; see {@link Pkcs11ProviderOptions}.
 * @returns The provider; call `close()` on shutdown.
 * @throws KeyProviderError `CONFIG_INVALID` at once for contradictory or missing options. Calls throw
 *   `CONFIG_INVALID` (no such key label, mechanism missing, graphene-pk11 not installed),
 *   `PROVIDER_ACCESS_DENIED` (PIN refused), `PROVIDER_UNAVAILABLE` (token gone after one reconnect, or
 *   provider closed), `PROVIDER_KEY_DISABLED` (the KEK may not encrypt/decrypt), `UNWRAP_FAILED`
 *   (wrong KeyRef or KEK, corrupted wrapping), `PROVIDER_INVALID_CIPHERTEXT` (not a wrapping of this provider).
 * @example
 * ```ts
 * const kek = pkcs11KeyProvider({
 *   module: '/usr/lib/softhsm/libsofthsm2.so',
 *   tokenLabel: 'app',
 *   pinEnv: 'HSM_PIN',
 *   keyLabel: 'kfe-kek-1',
 * })
 * ```
 */
export function pkcs11KeyProvider(options: Pkcs11ProviderOptions): Pkcs11KeyProvider {
  return new Pkcs11Provider(options)
}
