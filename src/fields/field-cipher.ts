/**
 * AES-256-GCM encryption of one field value in ciphertext format v1 (see format.ts and
 * docs/format.md). Security limits: per column and data key version, at most 2^40 encryptions
 * keep the probability of any (subkey, nonce) collision ≤ 2^-32, the bound NIST SP 800-38D §8.3
 * sets for random IVs; the argument is in docs/security.md.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto'
import { CodecError, ConfigError, DecryptionError, KeyError } from '../errors.js'
import type { KeyMaterial } from '../keys/key-material.js'
import { type Codec, codecByTag } from './codecs.js'
import { type ColumnKeyStats, ColumnKeys } from './column-keys.js'
import {
  describe,
  encodeContext,
  type FieldLocation,
  FORMAT_VERSION_1,
  isValidKeyVersion,
  NONCE_LENGTH,
  readHeader,
  SALT_LENGTH,
  TAG_LENGTH,
  varintLength,
  writeVarint,
} from './format.js'
import { takeRandom } from './random-pool.js'

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

function where(aad: FieldAad): FieldLocation {
  return { table: aad.table, column: aad.column }
}

/**
 * table → column → ColumnKeys per data key: the hot path then builds no slot string. The key's
 * own `derived` slots still own these objects and destroy them with the key; this map only
 * finds them faster, and is consulted only while the key is alive.
 */
const columnCache = new WeakMap<KeyMaterial, Map<string, Map<string, ColumnKeys>>>()

function columnKeys(key: KeyMaterial, aad: FieldAad): ColumnKeys {
  const cached = columnCache.get(key)?.get(aad?.table)?.get(aad.column)
  if (cached !== undefined && !key.destroyed) return cached
  if (
    typeof aad?.table !== 'string' ||
    typeof aad.column !== 'string' ||
    aad.table === '' ||
    aad.column === ''
  ) {
    throw new ConfigError('CONFIG_INVALID', 'A field AAD needs a non-empty table and column name.')
  }
  const keys = key.derived(
    ColumnKeys.slot(aad.table, aad.column),
    (bytes) => new ColumnKeys(bytes, aad.table, aad.column),
  )
  let byTable = columnCache.get(key)
  if (byTable === undefined) {
    byTable = new Map()
    columnCache.set(key, byTable)
  }
  let byColumn = byTable.get(aad.table)
  if (byColumn === undefined) {
    byColumn = new Map()
    byTable.set(aad.table, byColumn)
  }
  byColumn.set(aad.column, keys)
  return keys
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

function buildAad(header: Uint8Array, keys: ColumnKeys, aad: FieldAad): Buffer {
  const context = encodeContext(aad.context, where(aad))
  return Buffer.concat(
    [header, keys.aadNames, context],
    header.length + keys.aadNames.length + context.length,
  )
}

/** @internal Test seam: a fixed salt and nonce, for known-answer vectors. Not exported by the package. */
export interface Fixed {
  readonly salt: Buffer
  readonly nonce: Buffer
}

function seal(key: KeyMaterial, codecTag: number, plaintext: Buffer, aad: FieldAad, fixed?: Fixed): Buffer {
  assertDataKey(key, aad, false)
  if (codecByTag(codecTag) === undefined) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `Unknown codec tag${describe(where(aad))}: expected 1..7.`,
      where(aad),
    )
  }
  const keys = columnKeys(key, aad)
  const version = key.ref.version
  let salt: Buffer
  let subkey: Buffer
  let nonce: Buffer
  if (fixed === undefined) {
    // Salt first (it may take 2 pool bytes and copies them), then the nonce view, used at once.
    ;({ salt, subkey } = keys.nextWriter())
    nonce = takeRandom(NONCE_LENGTH) // a view: copied into the output and into the cipher below
  } else {
    salt = fixed.salt
    subkey = keys.subkeyFor(salt)
    nonce = fixed.nonce
  }
  const headerLength = 1 + varintLength(version) + SALT_LENGTH
  // One allocation for the whole ciphertext: header, nonce, body and tag are written in place.
  // GCM is a stream mode: the body is exactly as long as the plaintext.
  const bodyAt = headerLength + NONCE_LENGTH
  const out = Buffer.allocUnsafe(bodyAt + plaintext.length + TAG_LENGTH)
  out[0] = (FORMAT_VERSION_1 << 4) | codecTag
  salt.copy(out, writeVarint(out, 1, version))
  nonce.copy(out, headerLength)

  const cipher = createCipheriv('aes-256-gcm', subkey, nonce, { authTagLength: TAG_LENGTH })
  cipher.setAAD(buildAad(out.subarray(0, headerLength), keys, aad))
  const body = cipher.update(plaintext)
  const final = cipher.final() // empty for GCM
  const tag = cipher.getAuthTag()
  if (body.length + final.length !== plaintext.length) {
    // Not reachable with GCM; never leave unwritten bytes of allocUnsafe in a ciphertext.
    return Buffer.concat([out.subarray(0, bodyAt), body, final, tag])
  }
  body.copy(out, bodyAt)
  final.copy(out, bodyAt + body.length)
  tag.copy(out, bodyAt + plaintext.length)
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
 * @param codecTag - Tag of the codec that encoded `plaintext` (1..7), stored in the type byte.
 * @param plaintext - The codec-encoded value.
 * @param aad - Table, column and context the ciphertext is bound to.
 * @returns A fresh buffer of `ciphertextLength(plaintext.length, key.ref.version)` bytes.
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
 */
export function encryptFieldWithFixedNonceForVectors(
  key: KeyMaterial,
  codecTag: number,
  plaintext: Buffer,
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
  const loc = where(aad)
  if (!(ciphertext instanceof Uint8Array)) {
    throw new DecryptionError(
      'NOT_CIPHERTEXT',
      `Expected ciphertext bytes${describe(loc)}, got ${typeof ciphertext}.`,
      loc,
    )
  }
  const header = readHeader(ciphertext, loc)
  if (header.codecTag !== expectedCodecTag) {
    throw new DecryptionError(
      'CODEC_MISMATCH',
      `The stored value${describe(loc)} was encoded as ${codecName(header.codecTag)}, but the column is declared ${codecName(expectedCodecTag)}.`,
      loc,
    )
  }
  if (header.keyVersion !== key.ref.version) {
    throw new DecryptionError(
      'WRONG_KEY',
      `The stored value${describe(loc)} was encrypted under data key version ${header.keyVersion}, not ${key.ref.version}.`,
      loc,
    )
  }
  const keys = columnKeys(key, aad)
  const ct = Buffer.from(ciphertext.buffer, ciphertext.byteOffset, ciphertext.byteLength) // a view, no copy
  const h = header.headerLength
  const subkey = keys.subkeyFor(ct.subarray(h - SALT_LENGTH, h))
  const decipher = createDecipheriv('aes-256-gcm', subkey, ct.subarray(h, h + NONCE_LENGTH), {
    authTagLength: TAG_LENGTH,
  })
  decipher.setAAD(buildAad(ct.subarray(0, h), keys, aad))
  decipher.setAuthTag(ct.subarray(ct.length - TAG_LENGTH))
  // GCM's update() returns plaintext before the tag is checked: it must never leave this function
  // unless final() succeeds.
  const body = decipher.update(ct.subarray(h + NONCE_LENGTH, ct.length - TAG_LENGTH))
  try {
    decipher.final()
  } catch (cause) {
    body.fill(0)
    throw new DecryptionError(
      'DECRYPT_AUTH_FAILED',
      `The encrypted value${describe(loc)} failed authentication: the ciphertext was modified, or belongs to another table/column/row context.`,
      { ...loc, cause },
    )
  }
  return body
}

/**
 * Encodes `value` with `codec` and encrypts it (see {@link encryptField}). The encoded plaintext
 * is zeroed afterwards.
 *
 * @throws CodecError `CODEC_INVALID_VALUE` when `value` is not of the codec's type.
 * @throws KeyError / ConfigError as {@link encryptField}.
 */
export function encryptValue<T>(codec: Codec<T>, value: T, key: KeyMaterial, aad: FieldAad): Buffer {
  const plaintext = codec.encode(value)
  try {
    return encryptField(key, codec.tag, plaintext, aad)
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
  return columnKeys(key, aad).stats()
}

/** @internal The key buffers one column holds now, for the zeroization test. */
export function columnKeyBuffers(key: KeyMaterial, aad: FieldAad): Buffer[] {
  return columnKeys(key, aad).heldKeyBuffers()
}
