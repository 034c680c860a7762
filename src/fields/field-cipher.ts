/**
 * AES-256-GCM encryption of one field value in ciphertext format v1 (see format.ts and
 * docs/format.md). Security limits: per column and data key version, at most 2^40 encryptions
 * keep the probability of any (subkey, nonce) collision ≤ 2^-32, the bound NIST SP 800-38D §8.3
 * sets for random IVs; the argument is in docs/security.md.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto'
import { CodecError, ConfigError, DecryptionError, KeyError } from '../errors.js'
import type { KeyMaterial } from '../keys/key-material.js'
import { takeCiphertextBuffer } from './ciphertext-slab.js'
import { type Codec, codecByTag } from './codecs.js'
import { type ColumnKeyStats, type ColumnKeys, columnKeysOf } from './column-keys.js'
import {
  checkHeader,
  describe,
  encodeContext,
  type FieldLocation,
  FORMAT_VERSION_1,
  headerKeyVersion,
  isValidKeyVersion,
  MAX_HEADER_LENGTH,
  NONCE_LENGTH,
  SALT_LENGTH,
  TAG_LENGTH,
  writeVarint,
} from './format.js'
import { takeRandom } from './random-pool.js'

/** The cipher options of every AES-256-GCM call: one frozen object; node:crypto only reads it. */
const GCM = Object.freeze({ authTagLength: TAG_LENGTH })

/**
 * What a ciphertext is bound to (its additional authenticated data). It comes from the query's
 * context, never from the stored value: a ciphertext copied to another table, column or context
 * fails to decrypt with `DECRYPT_AUTH_FAILED`.
 */
export interface FieldAad {
  /** Logical table name (not necessarily the physical one; renaming a table must not change it). */
  readonly table: string
  /** Logical column name. */
  readonly column: string
  /**
   * Extra values to bind, in order, e.g. a tenant id or the row's primary key. Only with a row
   * identity here is a ciphertext bound to its row; without, it can be moved between rows of the
   * same column. `[]` and `undefined` are the same AAD.
   */
  readonly context?: readonly string[]
}

/**
 * The likely causes of a failed GCM tag check, for the message. A row context is mentioned only
 * when one is bound: without one, no row binding can be the cause.
 */
function authFailureCauses(aad: FieldAad): string {
  const moved =
    aad.context === undefined || aad.context.length === 0
      ? 'it was copied from another table or column'
      : 'it was copied from another table, column or row context (the bound context values differ)'
  return `the ciphertext was modified, ${moved}, or the data key under its version is not the one that encrypted it (a key table replaced or restored from another environment).`
}

/** Built only on a throwing path: the success path allocates no location object. */
function where(aad: FieldAad): FieldLocation {
  return { table: aad.table, column: aad.column }
}

function assertDataKey(key: KeyMaterial, aad: FieldAad, decrypting: boolean): void {
  const ErrorClass = decrypting ? DecryptionError : KeyError
  if (key.ref.purpose !== 'data') {
    throw new ErrorClass(
      'WRONG_KEY',
      `An index key cannot encrypt or decrypt fields${describe(where(aad))}.`,
      where(aad),
    )
  }
  if (!isValidKeyVersion(key.ref.version)) {
    throw new ErrorClass(
      'WRONG_KEY',
      `A data key version must be an integer in 1..2^32-1${describe(where(aad))}.`,
      where(aad),
    )
  }
}

/**
 * The encoded context values of `aad`, or undefined without any. Computed before a seal takes its
 * subkey, nonce and header scratch: `aad.context` is the caller's array, whose getters or iterator
 * could run another encryption, and none may run while those are held.
 */
function contextBytes(aad: FieldAad): Buffer | undefined {
  const context = aad.context
  if (context === undefined || context.length === 0) return undefined
  // `aad` is a FieldLocation too: encodeContext copies only its table and column into an error.
  return encodeContext(context, aad)
}

/**
 * The AAD: `header ‖ "kfe/v1/aad" ‖ lp(table) ‖ lp(column) ‖ context` (docs/format.md). Without
 * context (the common case) it is a view of the column's scratch buffer: no allocation; the
 * caller passes it to `setAAD` at once.
 *
 * @param source - Bytes starting with the `headerLength` header bytes.
 * @param context - {@link contextBytes} of the value's AAD.
 */
function buildAad(
  source: Uint8Array,
  headerLength: number,
  keys: ColumnKeys,
  context: Buffer | undefined,
): Buffer {
  if (context === undefined) return keys.aadWithoutContext(source, headerLength)
  return Buffer.concat(
    [source.subarray(0, headerLength), keys.aadNames, context],
    headerLength + keys.aadNames.length + context.length,
  )
}

/** @internal Test seam: a fixed salt and nonce, for known-answer vectors. Not exported by the package. */
export interface Fixed {
  readonly salt: Buffer
  readonly nonce: Buffer
}

/**
 * Where the header is written before the AAD is set: the ciphertext buffer is allocated only
 * once its body length is known. Not secret (it is stored); rewritten by every call.
 */
const HEADER = Buffer.alloc(MAX_HEADER_LENGTH)

/**
 * @param plaintext - The encoded bytes, or a well-formed string whose UTF-8 bytes are the
 *   plaintext (text and json codecs): node:crypto encodes it into its own temporary buffer, so no
 *   JavaScript buffer ever holds those bytes.
 */
function seal(
  key: KeyMaterial,
  codecTag: number,
  plaintext: Buffer | string,
  aad: FieldAad,
  fixed?: Fixed,
): Buffer {
  assertDataKey(key, aad, false)
  // Same test as `codecByTag(codecTag) === undefined`: an integer 1..8.
  if (!(Number.isInteger(codecTag) && codecTag >= 1 && codecTag <= 8)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `Unknown codec tag${describe(where(aad))}: expected 1..8.`,
      where(aad),
    )
  }
  const keys = columnKeysOf(key, aad)
  const context = contextBytes(aad) // first: it may run caller code (see contextBytes)
  const version = key.ref.version
  let salt: Buffer
  let subkey: Buffer
  let nonce: Buffer
  if (fixed === undefined) {
    // Salt first (it may take 2 pool bytes and copies them), then the nonce view: nothing takes
    // from the random pool again before it is copied into the cipher and the output below.
    ;({ salt, subkey } = keys.nextWriter())
    nonce = takeRandom(NONCE_LENGTH)
  } else {
    salt = fixed.salt
    subkey = keys.subkeyFor(salt)
    nonce = fixed.nonce
  }
  HEADER[0] = (FORMAT_VERSION_1 << 4) | codecTag
  const saltAt = writeVarint(HEADER, 1, version)
  HEADER[saltAt] = salt[0] as number
  HEADER[saltAt + 1] = salt[1] as number
  const headerLength = saltAt + SALT_LENGTH

  const cipher = createCipheriv('aes-256-gcm', subkey, nonce, GCM)
  cipher.setAAD(buildAad(HEADER, headerLength, keys, context))
  const body = typeof plaintext === 'string' ? cipher.update(plaintext, 'utf8') : cipher.update(plaintext)
  const final = cipher.final() // empty for GCM: a stream mode, the body is as long as the plaintext
  const tag = cipher.getAuthTag()
  // One buffer per ciphertext, from a slab of ciphertexts only (ciphertext-slab.ts), never
  // Buffer's shared pool: a ciphertext handed to the caller (structuredClone, postMessage,
  // `.buffer`) must not carry the pool's other contents, which may include key bytes. Every byte
  // is written below.
  const bodyAt = headerLength + NONCE_LENGTH
  const bodyLength = body.length + final.length
  const out = takeCiphertextBuffer(bodyAt + bodyLength + TAG_LENGTH)
  for (let i = 0; i < headerLength; i++) out[i] = HEADER[i] as number
  out.set(nonce, headerLength) // TypedArray#set: no Buffer#copy argument handling per call
  out.set(body, bodyAt)
  if (final.length !== 0) out.set(final, bodyAt + body.length)
  out.set(tag, bodyAt + bodyLength)
  return out
}

/**
 * Encrypts already-encoded plaintext bytes into a v1 ciphertext. One AES-GCM call: the subkey
 * comes from the column's current epoch and the nonce from a pooled CSPRNG buffer.
 *
 * Security limit: at most 2^40 encryptions per (column, data key version) keep the probability of
 * a (subkey, nonce) collision ≤ 2^-32 (NIST SP 800-38D §8.3); rotate the data key before that.
 * Each subkey serves ≤ 2^16 encryptions per epoch. See docs/security.md.
 *
 * @param key - The table's data key (purpose `'data'`); its version goes into the header.
 * @param codecTag - Tag of the codec that encoded `plaintext` (1..8), stored in the type byte.
 * @param plaintext - The codec-encoded value.
 * @param aad - Table, column and context the ciphertext is bound to.
 * @returns `ciphertextLength(plaintext.length, key.ref.version)` bytes: a slice of a slab of
 *   ciphertexts (ciphertext-slab.ts), or a buffer of its own past 8 KiB; never Buffer's pool.
 * @throws KeyError `WRONG_KEY` for an index key or an invalid key version; `KEY_NOT_FOUND` for a
 *   destroyed key.
 * @throws ConfigError `CONFIG_INVALID` for an unknown codec tag or invalid names/context values.
 */
export function encryptField(key: KeyMaterial, codecTag: number, plaintext: Buffer, aad: FieldAad): Buffer {
  return seal(key, codecTag, plaintext, aad)
}

/**
 * @internal Encrypts with a FIXED salt and nonce, for frozen known-answer vectors only. Reusing
 * a (salt, nonce) pair under one column key breaks AES-GCM; it is not exported by the package.
 * `plaintext` may be a string, as `encryptValue` hands text and JSON to the cipher.
 */
export function encryptFieldWithFixedNonceForVectors(
  key: KeyMaterial,
  codecTag: number,
  plaintext: Buffer | string,
  aad: FieldAad,
  fixed: Fixed,
): Buffer {
  if (fixed.salt.length !== SALT_LENGTH || fixed.nonce.length !== NONCE_LENGTH) {
    throw new RangeError('A fixed salt is 2 bytes and a fixed nonce 12 bytes.')
  }
  return seal(key, codecTag, plaintext, aad, fixed)
}

function codecName(tag: number): string {
  return codecByTag(tag)?.kind ?? `tag ${tag}`
}

/**
 * Authenticates and decrypts a v1 ciphertext into the codec-encoded plaintext bytes.
 *
 * @param key - The data key of the version named in the header (`readHeader(ct).keyVersion`).
 * @param ciphertext - The stored bytes.
 * @param aad - The table, column and context the value must belong to.
 * @param expectedCodecTag - The column's codec tag.
 * @returns The plaintext, in a fresh buffer the caller may zero. Nothing is returned unless the
 *   GCM tag verified.
 * @throws DecryptionError `NOT_CIPHERTEXT` when `ciphertext` is not a Uint8Array; `FORMAT_TRUNCATED`, `FORMAT_UNKNOWN_VERSION`, `FORMAT_INVALID` (see
 *   {@link readHeader}); `CODEC_MISMATCH` when the header's codec is not the expected one;
 *   `WRONG_KEY` when the header's key version is not `key.ref.version` or the key is not a data
 *   key; `DECRYPT_AUTH_FAILED` when the tag does not verify.
 * @throws KeyError `KEY_NOT_FOUND` for a destroyed key.
 */
export function decryptField(
  key: KeyMaterial,
  ciphertext: Uint8Array,
  aad: FieldAad,
  expectedCodecTag: number,
): Buffer {
  assertDataKey(key, aad, true)
  if (!(ciphertext instanceof Uint8Array)) {
    const loc = where(aad)
    throw new DecryptionError(
      'NOT_CIPHERTEXT',
      `Expected ciphertext bytes${describe(loc)}, got ${typeof ciphertext}.`,
      loc,
    )
  }
  // One parse, no header object: the codec tag and key version are read from the checked bytes.
  const h = checkHeader(ciphertext, aad.table, aad.column)
  const codecTag = (ciphertext[0] as number) & 0x0f
  if (codecTag !== expectedCodecTag) {
    const loc = where(aad)
    throw new DecryptionError(
      'CODEC_MISMATCH',
      `The stored value${describe(loc)} was encoded as ${codecName(codecTag)}, but the column is declared ${codecName(expectedCodecTag)}.`,
      loc,
    )
  }
  const keyVersion = h === 4 ? (ciphertext[1] as number) : headerKeyVersion(ciphertext)
  if (keyVersion !== key.ref.version) {
    const loc = where(aad)
    throw new DecryptionError(
      'WRONG_KEY',
      `The stored value${describe(loc)} was encrypted under data key version ${keyVersion}, not ${key.ref.version}.`,
      loc,
    )
  }
  const keys = columnKeysOf(key, aad)
  const subkey = keys.subkeyAt(ciphertext, h - SALT_LENGTH)
  // Plain Uint8Array views (no copy): cheaper to make than Buffer#subarray, and node:crypto takes
  // any ArrayBufferView.
  const { buffer, byteOffset, byteLength } = ciphertext
  const decipher = createDecipheriv(
    'aes-256-gcm',
    subkey,
    new Uint8Array(buffer, byteOffset + h, NONCE_LENGTH),
    GCM,
  )
  decipher.setAAD(buildAad(ciphertext, h, keys, contextBytes(aad)))
  decipher.setAuthTag(new Uint8Array(buffer, byteOffset + byteLength - TAG_LENGTH, TAG_LENGTH))
  // GCM's update() returns plaintext before the tag is checked: it must never leave this function
  // unless final() succeeds.
  const bodyAt = h + NONCE_LENGTH
  const body = decipher.update(new Uint8Array(buffer, byteOffset + bodyAt, byteLength - bodyAt - TAG_LENGTH))
  try {
    decipher.final()
  } catch (cause) {
    body.fill(0)
    const loc = where(aad)
    throw new DecryptionError(
      'DECRYPT_AUTH_FAILED',
      `The encrypted value${describe(loc)} failed authentication: ${authFailureCauses(aad)}`,
      { ...loc, cause },
    )
  }
  return body
}

/**
 * Encodes `value` with `codec` and encrypts it (see {@link encryptField}). A codec with a text
 * form ({@link Codec.ciphertextText}) hands its text to node:crypto as a string, which encodes
 * it to UTF-8 in a temporary buffer of its own: no JavaScript buffer holds the plaintext bytes.
 * Any other codec {@link Codec.encode}s into a fresh buffer, zeroed afterwards.
 *
 * @throws CodecError `CODEC_INVALID_VALUE` when `value` is not of the codec's type.
 * @throws KeyError / ConfigError as {@link encryptField}.
 */
export function encryptValue<T>(codec: Codec<T>, value: T, key: KeyMaterial, aad: FieldAad): Buffer {
  // Not always the canonical bytes (json keeps the value's key order): decode reads either.
  const text = codec.ciphertextText?.(value)
  if (text !== undefined) return seal(key, codec.tag, text, aad)
  const plaintext = codec.encode(value)
  try {
    return seal(key, codec.tag, plaintext, aad)
  } finally {
    plaintext.fill(0)
  }
}

/**
 * Decrypts (see {@link decryptField}) and decodes with `codec`. The decrypted bytes are zeroed
 * after decoding.
 *
 * @throws DecryptionError as {@link decryptField}.
 * @throws CodecError `CODEC_INVALID_VALUE` when authentic bytes are not a canonical encoding
 *   (a writer bug, never tampering: tampering fails authentication first).
 */
export function decryptValue<T>(codec: Codec<T>, ciphertext: Uint8Array, key: KeyMaterial, aad: FieldAad): T {
  const plaintext = decryptField(key, ciphertext, aad, codec.tag)
  try {
    return codec.decode(plaintext)
  } catch (cause) {
    if (!(cause instanceof CodecError)) throw cause
    throw new CodecError(cause.code, `${cause.message} (stored${describe(where(aad))})`, {
      ...where(aad),
      cause,
    })
  } finally {
    plaintext.fill(0)
  }
}

/** @internal Counters of one column's derived keys, for tests and benchmarks. */
export function columnKeyStats(key: KeyMaterial, aad: FieldAad): ColumnKeyStats {
  return columnKeysOf(key, aad).stats()
}

/** @internal The key buffers one column holds now, for the zeroization test. */
export function columnKeyBuffers(key: KeyMaterial, aad: FieldAad): Buffer[] {
  return columnKeysOf(key, aad).heldKeyBuffers()
}
