/**
 * Model B of DESIGN.md §2: the key-encrypting key (KEK) is an AES-256 secret key object inside a
 * PKCS#11 token (SoftHSM2, AWS CloudHSM, Thales Luna, …), reached through graphene-pk11. The KEK
 * never leaves the token; data keys are generated here and encrypted under it on the token.
 *
 * Wire format of a wrapped data key (docs/providers.md, "PKCS#11"):
 *
 * - `0x01 | iv (12) | AES-256-GCM(KEK, iv, aad = canonical KeyRef)(dataKey) (32) | tag (16)`, 61 bytes;
 * - `0x02 | AES-KWP(KEK)(dataKey | SHA-256(canonical KeyRef)) (72)`, 73 bytes (RFC 5649).
 *
 * The first byte names the mechanism, so a provider reads both forms whatever it writes.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { inspect } from 'node:util'
import type * as Graphene from 'graphene-pk11'
import { FieldEncryptionError, KeyProviderError } from '../../errors.js'
import type { GeneratedKey, KeyProvider, KeyRef, RewrapSource, WrappedKey } from '../key-provider.js'
import { unwrapFailedCauses } from '../unwrap-failed.js'
import {
  CKF_OS_LOCKING_OK,
  CKF_RW_SESSION,
  CKF_SERIAL_SESSION,
  CKR,
  ckrName,
  isSessionLost,
  PIN_REFUSED,
  pkcs11Code,
  UNWRAP_REFUSED,
} from './pkcs11-errors.js'
import { SessionPool } from './pkcs11-session-pool.js'

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

/** A PKCS#11 key provider; `close()` releases its sessions and the module. */
export type Pkcs11KeyProvider = KeyProvider & { close(): Promise<void> }

const FORMAT_GCM = 0x01
const FORMAT_KWP = 0x02
const GCM_IV_BYTES = 12 // NIST SP 800-38D §8.2: 96-bit IVs
const GCM_TAG_BYTES = 16
const KEY_BYTES = 32
const GCM_WRAPPED_BYTES = 1 + GCM_IV_BYTES + KEY_BYTES + GCM_TAG_BYTES
const KWP_WRAPPED_BYTES = 1 + 72 // RFC 5649 §4.1: 64-byte input → 8-byte AIV + 64 bytes
const KEYREF_LABEL = Buffer.from('kysely-field-encryption/keyref/v1\0', 'utf8')

/**
 * The KeyRef as AAD: a fixed label, then length-prefixed fields, so no two refs encode alike.
 * @internal Exported for the tests (differential check against node:crypto); not public API.
 * @throws KeyProviderError `CONFIG_INVALID` for a malformed ref.
 */
export function encodeKeyRef(ref: KeyRef): Buffer {
  const table = Buffer.from(ref.logicalTable, 'utf8')
  const purpose = ref.purpose === 'data' ? 0 : ref.purpose === 'index' ? 1 : -1
  if (table.length === 0 || table.length > 0xffff || purpose < 0) {
    throw new KeyProviderError(
      'CONFIG_INVALID',
      'A KeyRef needs a non-empty logicalTable and purpose data|index.',
    )
  }
  if (!Number.isInteger(ref.version) || ref.version < 1 || ref.version > 0xffffffff) {
    throw new KeyProviderError('CONFIG_INVALID', `A KeyRef version must be an integer in 1..2^32-1.`, {
      table: ref.logicalTable,
    })
  }
  const out = Buffer.alloc(KEYREF_LABEL.length + 2 + table.length + 1 + 4)
  let at = KEYREF_LABEL.copy(out, 0)
  at = out.writeUInt16BE(table.length, at)
  at += table.copy(out, at)
  at = out.writeUInt8(purpose, at)
  out.writeUInt32BE(ref.version, at)
  return out
}

type GrapheneModule = typeof Graphene

/**
 * Any PKCS#11 failure leaves the session in a state we cannot see (an operation may still be
 * active: CKR_OPERATION_ACTIVE on the next init), so the pool closes it rather than reuse it.
 */
function discardAfter(error: unknown): boolean {
  return pkcs11Code(error) !== undefined
}

/**
 * `CK_GCM_PARAMS` as in PKCS#11 v2.40 (with `ulIvBits`). Built outside the call so the pkcs11js
 * `IParams` type accepts the extra fields.
 */
function gcmParams(g: GrapheneModule, iv: Buffer, aad: Buffer): { type: number } {
  const params = {
    type: g.MechParams.AesGCMv240,
    iv,
    ivBits: GCM_IV_BYTES * 8,
    aad,
    tagBits: GCM_TAG_BYTES * 8,
  }
  return params
}

async function loadGraphene(): Promise<GrapheneModule> {
  try {
    const mod = (await import('graphene-pk11')) as GrapheneModule & { default?: GrapheneModule }
    return mod.Module === undefined && mod.default !== undefined ? mod.default : mod
  } catch (error) {
    throw new KeyProviderError(
      'CONFIG_INVALID',
      'The PKCS#11 provider needs the optional peer dependency graphene-pk11: npm install graphene-pk11.',
      { cause: error },
    )
  }
}

interface SharedModule {
  readonly g: GrapheneModule
  readonly module: Graphene.Module
  refs: number
}

/**
 * One loaded, initialised module per library path per process: `C_Initialize`/`C_Finalize` are
 * process-wide (PKCS#11 v2.40 §5.4), so two providers on one library share it and the last
 * `release` finalises it.
 */
const sharedModules = new Map<string, Promise<SharedModule>>()

/**
 * Loads and initialises the PKCS#11 library at `path` (or takes another reference to it).
 * @internal Exported for test/support/softhsm.ts; not part of the public API.
 * @throws KeyProviderError `CONFIG_INVALID` when the library cannot be loaded.
 */
export async function acquirePkcs11Module(path: string): Promise<SharedModule> {
  let pending = sharedModules.get(path)
  if (pending === undefined) {
    pending = (async () => {
      const g = await loadGraphene()
      let module: Graphene.Module
      try {
        module = g.Module.load(path, 'kysely-field-encryption')
      } catch (error) {
        throw new KeyProviderError('CONFIG_INVALID', `Cannot load the PKCS#11 library ${path}.`, {
          cause: error,
        })
      }
      try {
        // OS locking: the HSM calls run on libuv worker threads (pkcs11js *Async), several at once.
        module.initialize({ flags: CKF_OS_LOCKING_OK })
      } catch (error) {
        throw new KeyProviderError(
          'PROVIDER_UNAVAILABLE',
          `C_Initialize failed for ${path}: ${ckrName(error)}.`,
          {
            cause: error,
          },
        )
      }
      return { g, module, refs: 0 }
    })()
    sharedModules.set(path, pending)
    pending.catch(() => sharedModules.delete(path))
  }
  const shared = await pending
  shared.refs += 1
  return shared
}

/**
 * Drops one reference taken by {@link acquirePkcs11Module}; the last one finalises the library.
 * @internal
 */
export function releasePkcs11Module(path: string, shared: SharedModule): void {
  shared.refs -= 1
  if (shared.refs > 0) return
  sharedModules.delete(path)
  try {
    shared.module.finalize()
  } catch {
    // Already finalised (or the device is gone): nothing left to release.
  }
}

interface Target {
  readonly module: string
  readonly slot?: number | undefined
  readonly tokenLabel?: string | undefined
}

function describeTarget(t: Target): string {
  return t.tokenLabel !== undefined ? `token "${t.tokenLabel}"` : `slot ${String(t.slot)}`
}

function slotId(handle: Buffer): number {
  return handle.length >= 8 ? Number(handle.readBigUInt64LE(0)) : handle.readUInt32LE(0)
}

function findSlot(shared: SharedModule, target: Target): Graphene.Slot {
  const slots = shared.module.getSlots(true)
  for (let i = 0; i < slots.length; i++) {
    const slot = slots.items(i)
    if (
      target.slot !== undefined
        ? slotId(slot.handle) === target.slot
        : slot.getToken().label === target.tokenLabel
    ) {
      return slot
    }
  }
  throw new KeyProviderError(
    'PROVIDER_UNAVAILABLE',
    `No PKCS#11 ${describeTarget(target)} with a token present in ${target.module}.`,
  )
}

function readPin(options: { pin?: string | undefined; pinEnv?: string | undefined }): string {
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

function login(session: Graphene.Session, g: GrapheneModule, pin: string, target: Target): void {
  try {
    session.login(pin, g.UserType.USER)
  } catch (error) {
    // Login state is per application and slot (PKCS#11 v2.40 §5.6): the second session is already in.
    if (pkcs11Code(error) === CKR.USER_ALREADY_LOGGED_IN) return
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

function validateOptions(o: Pkcs11ProviderOptions): void {
  const fail = (msg: string): never => {
    throw new KeyProviderError('CONFIG_INVALID', `pkcs11KeyProvider: ${msg}`)
  }
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

interface Pooled {
  readonly session: Graphene.Session
  readonly kek: Graphene.SecretKey
}

interface Connection {
  readonly shared: SharedModule
  slot: Graphene.Slot
}

class Pkcs11Provider implements Pkcs11KeyProvider {
  readonly id: string
  readonly #target: Target
  readonly #pin: { pin?: string | undefined; pinEnv?: string | undefined }
  readonly #keyLabel: string
  readonly #mechanism: 'AES_KEY_WRAP_PAD' | 'AES_GCM'
  readonly #sessions: number
  readonly #pool: SessionPool<Pooled>
  readonly #inflight = new Set<Promise<unknown>>()
  #connection: Promise<Connection> | undefined
  #closed = false

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
    return this.#run(ref, 'unwrap', (p) =>
      format === FORMAT_GCM ? this.#gcmOpen(p, bytes, aad) : this.#kwpOpen(p, bytes, aad),
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
          ? await this.#gcmSeal(p, plaintext, aad)
          : await this.#kwpSeal(p, plaintext, aad)
      // Read the wrapping back before anyone stores it: a token that silently ignored our IV
      // (and did not hand back its own) would otherwise leave a key nobody can unwrap. Wraps are
      // rare (new key versions, KEK rotation), so the extra HSM call is cheap insurance.
      const back =
        this.#mechanism === 'AES_GCM'
          ? await this.#gcmOpen(p, wrapped, aad)
          : await this.#kwpOpen(p, wrapped, aad)
      const same = timingSafeEqual(back, plaintext)
      back.fill(0)
      if (!same)
        throw new KeyProviderError('PROVIDER_ERROR', 'The token produced a wrapping that does not unwrap.')
      return { kekId: this.id, wrapped }
    })
  }

  async #gcmSeal({ session, kek }: Pooled, plaintext: Buffer, aad: Buffer): Promise<Buffer> {
    const { g } = (await this.#connect()).shared
    // A random 96-bit IV (NIST SP 800-38D §8.2.2): at most one wrap per (table, purpose, version)
    // and rewrap, so far below the 2^32 invocations that bound random IVs under one key.
    // CloudHSM ignores a caller's IV and writes its own into pIv, which pkcs11js points at this
    // very Buffer, so reading `iv` after C_Encrypt stores whichever IV was used.
    const iv = randomBytes(GCM_IV_BYTES)
    session.lib.C_EncryptInit(
      session.handle,
      {
        mechanism: g.MechanismEnum.AES_GCM,
        parameter: gcmParams(g, iv, aad),
      },
      kek.handle,
    )
    const sealed = await session.lib.C_EncryptAsync(
      session.handle,
      plaintext,
      Buffer.alloc(KEY_BYTES + GCM_TAG_BYTES),
    )
    return Buffer.concat([Buffer.of(FORMAT_GCM), iv, sealed])
  }

  async #gcmOpen({ session, kek }: Pooled, bytes: Buffer, aad: Buffer): Promise<Buffer> {
    const { g } = (await this.#connect()).shared
    const iv = bytes.subarray(1, 1 + GCM_IV_BYTES)
    session.lib.C_DecryptInit(
      session.handle,
      {
        mechanism: g.MechanismEnum.AES_GCM,
        parameter: gcmParams(g, iv, aad),
      },
      kek.handle,
    )
    const out = Buffer.alloc(KEY_BYTES + GCM_TAG_BYTES)
    const opened = await session.lib.C_DecryptAsync(session.handle, bytes.subarray(1 + GCM_IV_BYTES), out)
    try {
      if (opened.length !== KEY_BYTES)
        throw new KeyProviderError('UNWRAP_FAILED', 'The token returned a key of the wrong length.')
      return Buffer.from(opened)
    } finally {
      out.fill(0)
    }
  }

  async #kwpSeal({ session, kek }: Pooled, plaintext: Buffer, aad: Buffer): Promise<Buffer> {
    const { g } = (await this.#connect()).shared
    // RFC 5649 has no AAD: wrap the KeyRef's digest with the key, compare it on unwrap.
    const payload = Buffer.concat([plaintext, createHash('sha256').update(aad).digest()])
    let object: Graphene.SessionObject | undefined
    try {
      object = session.create({
        class: g.ObjectClass.SECRET_KEY,
        keyType: g.KeyType.GENERIC_SECRET,
        token: false,
        value: payload,
        sensitive: false,
        extractable: true,
      })
      const wrapped = await new Promise<Buffer>((resolve, reject) =>
        session.wrapKey(
          'AES_KEY_WRAP_PAD',
          kek,
          (object as Graphene.SessionObject).toType<Graphene.SecretKey>(),
          (e, r) => (e ? reject(e) : resolve(r as Buffer)),
        ),
      )
      return Buffer.concat([Buffer.of(FORMAT_KWP), wrapped])
    } finally {
      payload.fill(0)
      object?.destroy()
    }
  }

  async #kwpOpen({ session, kek }: Pooled, bytes: Buffer, aad: Buffer): Promise<Buffer> {
    const { g } = (await this.#connect()).shared
    const object = await new Promise<Graphene.Key>((resolve, reject) =>
      session.unwrapKey(
        'AES_KEY_WRAP_PAD',
        kek,
        bytes.subarray(1),
        {
          class: g.ObjectClass.SECRET_KEY,
          keyType: g.KeyType.GENERIC_SECRET,
          token: false,
          sensitive: false,
          extractable: true,
        },
        (e, r) => (e ? reject(e) : resolve(r as Graphene.Key)),
      ),
    )
    let payload: Buffer | undefined
    try {
      payload = object.getAttribute({ value: null }).value as Buffer
      const expected = createHash('sha256').update(aad).digest()
      const bound = payload.length === KEY_BYTES * 2 && timingSafeEqual(payload.subarray(KEY_BYTES), expected)
      if (!bound) throw new KeyProviderError('UNWRAP_FAILED', 'The wrapped key belongs to another KeyRef.')
      return Buffer.from(payload.subarray(0, KEY_BYTES))
    } finally {
      payload?.fill(0)
      object.destroy()
    }
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
    const session = slot.open(CKF_SERIAL_SESSION)
    try {
      login(session, shared.g, readPin(this.#pin), this.#target)
      const found = session.find({ class: shared.g.ObjectClass.SECRET_KEY, label: this.#keyLabel })
      if (found.length !== 1) {
        throw new KeyProviderError(
          'CONFIG_INVALID',
          found.length === 0
            ? `No secret key labelled "${this.#keyLabel}" on PKCS#11 ${describeTarget(this.#target)}; create it with generatePkcs11Kek.`
            : `${found.length} secret keys are labelled "${this.#keyLabel}" on PKCS#11 ${describeTarget(this.#target)}; labels must be unique.`,
          { providerId: this.id },
        )
      }
      const kek = found.items(0).toType<Graphene.SecretKey>()
      const attrs = kek.getAttribute({ keyType: null, valueLen: null })
      if (attrs.keyType !== shared.g.KeyType.AES || attrs.valueLen !== KEY_BYTES) {
        throw new KeyProviderError('CONFIG_INVALID', `The key "${this.#keyLabel}" is not an AES-256 key.`, {
          providerId: this.id,
        })
      }
      return { session, kek }
    } catch (error) {
      try {
        session.close()
      } catch {
        // The session is unusable anyway.
      }
      throw error
    }
  }

  #mapError(error: unknown, ref: KeyRef, what: 'wrap' | 'unwrap'): FieldEncryptionError {
    if (error instanceof KeyProviderError) {
      return error.providerId === undefined
        ? new KeyProviderError(error.code, error.message, {
            cause: error.cause,
            table: ref.logicalTable,
            providerId: this.id,
          })
        : error
    }
    if (error instanceof FieldEncryptionError) return error
    const code = pkcs11Code(error)
    const name = ckrName(error)
    if (code === undefined)
      return this.#error('PROVIDER_ERROR', `PKCS#11 ${what} failed: ${name}.`, ref, error)
    if (PIN_REFUSED.has(code))
      return this.#error('PROVIDER_ACCESS_DENIED', `PKCS#11 login refused: ${name}.`, ref, error)
    if (code === CKR.KEY_FUNCTION_NOT_PERMITTED) {
      return this.#error(
        'PROVIDER_KEY_DISABLED',
        `The key "${this.#keyLabel}" may not be used to ${what}: ${name}.`,
        ref,
        error,
      )
    }
    if (code === CKR.MECHANISM_INVALID || code === CKR.MECHANISM_PARAM_INVALID) {
      return this.#error(
        'CONFIG_INVALID',
        `The token refused the ${this.#mechanism} mechanism: ${name}.`,
        ref,
        error,
      )
    }
    if (code === CKR.DEVICE_ERROR || code === CKR.DEVICE_MEMORY) {
      return this.#error('PROVIDER_UNAVAILABLE', `The PKCS#11 device failed: ${name}.`, ref, error)
    }
    if (what === 'unwrap' && UNWRAP_REFUSED.has(code)) {
      return this.#error(
        'UNWRAP_FAILED',
        `The token could not unwrap this key for ${ref.logicalTable}/${ref.purpose}/v${ref.version} (${name}): wrong KeyRef, wrong KEK or corrupted. ${unwrapFailedCauses(this.id)}`,
        ref,
        error,
      )
    }
    return this.#error('PROVIDER_ERROR', `PKCS#11 ${what} failed: ${name}.`, ref, error)
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

/** Options of {@link generatePkcs11Kek}: where, and under which label, to create the KEK. */
export interface GeneratePkcs11KekOptions {
  readonly module: string
  readonly slot?: number
  readonly tokenLabel?: string
  readonly pin?: string
  readonly pinEnv?: string
  readonly keyLabel: string
}

/**
 * Creates the KEK on the token: `CKK_AES`, 32 bytes, `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`,
 * not `CKA_EXTRACTABLE`, allowed to encrypt, decrypt, wrap and unwrap. The key is generated by the
 * token (`CKM_AES_KEY_GEN`), so it never exists outside it.
 *
 * @param options Library, token, PIN and the label to give the key.
 * @throws KeyProviderError `CONFIG_INVALID` if a secret key with that label already exists (labels
 *   must name one key), `PROVIDER_ACCESS_DENIED` if the PIN is refused, `PROVIDER_UNAVAILABLE` if the
 *   token is missing, `PROVIDER_ERROR` for any other token failure.
 */
export async function generatePkcs11Kek(options: GeneratePkcs11KekOptions): Promise<void> {
  validateOptions({ ...options })
  const target: Target = { module: options.module, slot: options.slot, tokenLabel: options.tokenLabel }
  const shared = await acquirePkcs11Module(options.module)
  const { g } = shared
  let session: Graphene.Session | undefined
  try {
    session = findSlot(shared, target).open(CKF_SERIAL_SESSION | CKF_RW_SESSION)
    login(session, g, readPin(options), target)
    if (session.find({ class: g.ObjectClass.SECRET_KEY, label: options.keyLabel }).length > 0) {
      throw new KeyProviderError(
        'CONFIG_INVALID',
        `A secret key labelled "${options.keyLabel}" already exists.`,
      )
    }
    session.generateKey(g.KeyGenMechanism.AES, {
      class: g.ObjectClass.SECRET_KEY,
      keyType: g.KeyType.AES,
      valueLen: KEY_BYTES,
      label: options.keyLabel,
      token: true,
      private: true,
      sensitive: true,
      extractable: false,
      encrypt: true,
      decrypt: true,
      wrap: true,
      unwrap: true,
    })
  } catch (error) {
    if (error instanceof FieldEncryptionError) throw error
    throw new KeyProviderError(
      'PROVIDER_ERROR',
      `Creating the KEK "${options.keyLabel}" failed: ${ckrName(error)}.`,
      {
        cause: error,
      },
    )
  } finally {
    try {
      session?.close()
    } catch {
      // Nothing to release.
    }
    releasePkcs11Module(options.module, shared)
  }
}
