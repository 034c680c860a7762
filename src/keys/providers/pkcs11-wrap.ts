/**
 * The wrap and unwrap mechanisms of the PKCS#11 provider, run on a logged-in session with the KEK.
 * Wire format of a wrapped data key (docs/providers.md, "PKCS#11"):
 *
 * - `0x01 | iv (12) | AES-256-GCM(KEK, iv, aad = canonical KeyRef)(dataKey) (32) | tag (16)`, 61 bytes;
 * - `0x02 | AES-KWP(KEK)(dataKey | SHA-256(canonical KeyRef)) (72)`, 73 bytes (RFC 5649).
 *
 * The first byte names the mechanism, so a provider reads both forms whatever it writes.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type * as Graphene from 'graphene-pk11'
import { KeyProviderError } from '../../errors.js'
import type { KeyRef } from '../key-provider.js'
import type { GrapheneModule } from './pkcs11-module.js'

/** First byte of an AES-GCM wrapping. */
export const FORMAT_GCM = 0x01
/** First byte of an AES-KWP wrapping. */
export const FORMAT_KWP = 0x02
const GCM_IV_BYTES = 12 // NIST SP 800-38D §8.2: 96-bit IVs
const GCM_TAG_BYTES = 16
/** Length of a data key. */
export const KEY_BYTES = 32
/** Length of an AES-GCM wrapping. */
export const GCM_WRAPPED_BYTES = 1 + GCM_IV_BYTES + KEY_BYTES + GCM_TAG_BYTES
/** Length of an AES-KWP wrapping. */
export const KWP_WRAPPED_BYTES = 1 + 72 // RFC 5649 §4.1: 64-byte input → 8-byte AIV + 64 bytes
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

/** A pooled, logged-in session and the KEK found on it. */
export interface Pooled {
  readonly session: Graphene.Session
  readonly kek: Graphene.SecretKey
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

/** Wraps a data key with CKM_AES_GCM under the KEK; the KeyRef is the AAD. */
export async function gcmSeal(
  g: GrapheneModule,
  { session, kek }: Pooled,
  plaintext: Buffer,
  aad: Buffer,
): Promise<Buffer> {
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

/** Unwraps an AES-GCM wrapping (format 0x01) under the KEK, with the KeyRef as AAD. */
export async function gcmOpen(
  g: GrapheneModule,
  { session, kek }: Pooled,
  bytes: Buffer,
  aad: Buffer,
): Promise<Buffer> {
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

/** Wraps a data key and its KeyRef's digest with CKM_AES_KEY_WRAP_PAD (RFC 5649) under the KEK. */
export async function kwpSeal(
  g: GrapheneModule,
  { session, kek }: Pooled,
  plaintext: Buffer,
  aad: Buffer,
): Promise<Buffer> {
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

/** Unwraps an AES-KWP wrapping (format 0x02) under the KEK, and checks it was made for this KeyRef. */
export async function kwpOpen(
  g: GrapheneModule,
  { session, kek }: Pooled,
  bytes: Buffer,
  aad: Buffer,
): Promise<Buffer> {
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
  let key: Buffer | undefined
  try {
    payload = object.getAttribute({ value: null }).value as Buffer
    const expected = createHash('sha256').update(aad).digest()
    const bound = payload.length === KEY_BYTES * 2 && timingSafeEqual(payload.subarray(KEY_BYTES), expected)
    if (!bound) throw new KeyProviderError('UNWRAP_FAILED', 'The wrapped key belongs to another KeyRef.')
    key = Buffer.from(payload.subarray(0, KEY_BYTES))
  } finally {
    payload?.fill(0)
    try {
      object.destroy()
    } catch (error) {
      // Not returned: the copy made for the caller is zeroed too.
      key?.fill(0)
      // biome-ignore lint/correctness/noUnsafeFinally: a failed destroy must not return the key.
      throw error
    }
  }
  return key
}
