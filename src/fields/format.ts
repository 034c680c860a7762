/**
 * Ciphertext format v1 of one encrypted field (docs/format.md describes every byte):
 *
 * ```
 * offset  size  field
 * 0       1     type byte: high nibble = format version (1), low nibble = codec tag (1..8)
 * 1       1..5  key version: unsigned LEB128 varint, minimal, 1..2^32-1
 * .       2     salt (selects the per-record subkey)
 * .       12    AES-GCM nonce
 * .       n     AES-256-GCM ciphertext of the codec-encoded plaintext
 * .       16    AES-GCM tag
 * ```
 *
 * The type byte's high nibble fixes every parameter (KDF, labels, algorithm, layout): a v1
 * ciphertext is read the same way forever.
 */
import { ConfigError, DecryptionError, type ErrorCode } from '../errors.js'
import { isWellFormedString } from './codecs.js'

/** The format version this module writes and reads (high nibble of the type byte). */
export const FORMAT_VERSION_1 = 1
/** Bytes of salt in a v1 header. */
export const SALT_LENGTH = 2
/** Bytes of AES-GCM nonce (96 bits: NIST SP 800-38D §8.2.2, the only length without GHASH of the IV). */
export const NONCE_LENGTH = 12
/** Bytes of AES-GCM tag (128 bits: NIST SP 800-38D §5.2.1.2, the full tag). */
export const TAG_LENGTH = 16
/** Largest key version a v1 header can carry (a 5-byte varint holds 32 bits). */
export const MAX_KEY_VERSION = 0xffff_ffff

/**
 * Bytes a v1 ciphertext adds to its encoded plaintext when the key version is below 128:
 * 1 (type) + 1 (key version) + 2 (salt) + 12 (nonce) + 16 (tag).
 */
export const FORMAT_V1_OVERHEAD = 32

/** HKDF `info` label of a column key. */
export const LABEL_COLUMN = Buffer.from('kfe/v1/column', 'utf8')
/** HKDF `info` of a record subkey. */
export const LABEL_RECORD = Buffer.from('kfe/v1/record', 'utf8')
/** Label between the header bytes and the names in the AAD. */
export const LABEL_AAD = Buffer.from('kfe/v1/aad', 'utf8')

/** The parsed fixed part of a ciphertext. */
export interface CiphertextHeader {
  /** High nibble of the type byte. Always 1 for what {@link readHeader} returns. */
  readonly formatVersion: number
  /** Low nibble of the type byte: the tag of the codec that encoded the plaintext. */
  readonly codecTag: number
  /** Version of the table data key that encrypted this value. */
  readonly keyVersion: number
  /**
   * Bytes of type byte + key version + salt: the header that the AAD authenticates. The nonce
   * starts at this offset.
   */
  readonly headerLength: number
}

/** Where a value is stored, for error messages. */
export interface FieldLocation {
  readonly table?: string | undefined
  readonly column?: string | undefined
}

/** Bytes of the unsigned LEB128 encoding of `n` (1..5 for 1..2^32-1). */
export function varintLength(n: number): number {
  let length = 1
  for (let v = n; v >= 0x80; v = Math.floor(v / 0x80)) length++
  return length
}

/** Writes `n` as unsigned LEB128 at `offset`; returns the offset after it. */
export function writeVarint(out: Buffer, offset: number, n: number): number {
  let v = n
  let at = offset
  while (v >= 0x80) {
    out[at++] = (v % 0x80) | 0x80
    v = Math.floor(v / 0x80)
  }
  out[at++] = v
  return at
}

/** True when `n` can be a key version: an integer in 1..2^32-1. */
export function isValidKeyVersion(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= MAX_KEY_VERSION
}

/** Bytes of the longest v1 header: type byte, a 5-byte key version varint, salt. */
export const MAX_HEADER_LENGTH = 1 + 5 + SALT_LENGTH

/** Why a header is rejected: preallocated, so the parser allocates nothing on any path. */
interface Failure {
  readonly code: ErrorCode
  readonly why: string
}

const fail = (code: ErrorCode, why: string): Failure => Object.freeze({ code, why })
const EMPTY = fail('FORMAT_TRUNCATED', 'it is empty')
// The version is not echoed: if the value is plaintext (during a migration) it would leak 4 bits.
const UNKNOWN_VERSION = fail(
  'FORMAT_UNKNOWN_VERSION',
  'its type byte names a format version this library does not read (it reads v1): a newer library wrote it, or it is not a ciphertext',
)
const NO_CODEC = fail('FORMAT_INVALID', 'its type byte names no codec')
const IN_VERSION = fail('FORMAT_TRUNCATED', 'it ends inside the key version')
const NOT_MINIMAL = fail('FORMAT_INVALID', 'its key version is not minimally encoded')
const TOO_LONG = fail('FORMAT_INVALID', 'its key version is longer than 5 bytes')
const VERSION_0 = fail('FORMAT_INVALID', 'its key version is 0')
const VERSION_TOO_BIG = fail('FORMAT_INVALID', 'its key version exceeds 2^32-1')
const SHORT = fail('FORMAT_TRUNCATED', 'it is shorter than a header, a nonce and a tag')

/**
 * Parses without throwing, so {@link looksLikeCiphertext} costs no exception, and without
 * allocating, so the decrypt path pays for no header object.
 *
 * @returns The header length (type byte + key version + salt), or why the bytes are rejected.
 */
function parse(ct: Uint8Array): number | Failure {
  if (ct.length === 0) return EMPTY
  const type = ct[0] as number
  if (type >> 4 !== FORMAT_VERSION_1) return UNKNOWN_VERSION
  const codecTag = type & 0x0f
  if (codecTag < 1 || codecTag > 8) return NO_CODEC
  // Unsigned LEB128, at most 5 bytes, minimal (a value has exactly one header).
  let keyVersion = 0
  let at = 1
  for (let shift = 1; ; shift *= 0x80) {
    if (at >= ct.length) return IN_VERSION
    const b = ct[at++] as number
    keyVersion += (b & 0x7f) * shift
    if (b < 0x80) {
      if (b === 0 && at > 2) return NOT_MINIMAL
      break
    }
    if (at - 1 >= 5) return TOO_LONG
  }
  if (keyVersion === 0) return VERSION_0
  if (keyVersion > MAX_KEY_VERSION) return VERSION_TOO_BIG
  const headerLength = at + SALT_LENGTH
  if (ct.length < headerLength + NONCE_LENGTH + TAG_LENGTH) return SHORT
  return headerLength
}

/**
 * The key version of a header {@link checkHeader} accepted (the varint at offset 1; no checks).
 *
 * @param ciphertext - Bytes whose header was already checked.
 * @returns The key version.
 */
export function headerKeyVersion(ciphertext: Uint8Array): number {
  let keyVersion = 0
  let at = 1
  for (let shift = 1; ; shift *= 0x80) {
    const b = ciphertext[at++] as number
    keyVersion += (b & 0x7f) * shift
    if (b < 0x80) return keyVersion
  }
}

/**
 * @internal The checks of {@link readHeader} without building a header object, for the decrypt
 * path: the codec tag is `ciphertext[0] & 0x0f` and the key version {@link headerKeyVersion}.
 *
 * @param ciphertext - The stored bytes.
 * @param table - Table, copied into a thrown error.
 * @param column - Column, copied into a thrown error.
 * @returns The header length (type byte + key version + salt); the nonce starts there.
 * @throws DecryptionError as {@link readHeader}.
 */
export function checkHeader(ciphertext: Uint8Array, table?: string, column?: string): number {
  const parsed = parse(ciphertext)
  if (typeof parsed === 'number') return parsed
  throw new DecryptionError(
    parsed.code,
    `Cannot read the encrypted value${describe({ table, column })}: ${parsed.why}.`,
    { table, column },
  )
}

/**
 * Reads and checks the header of a field ciphertext, without any key.
 *
 * @param ciphertext - The stored bytes.
 * @param where - Table and column, copied into a thrown error.
 * @returns The header. Only a structurally complete v1 ciphertext (header, nonce and tag present)
 *   gets one; it is not yet authenticated.
 * @throws DecryptionError `FORMAT_TRUNCATED` when it is shorter than header + nonce + tag;
 *   `FORMAT_UNKNOWN_VERSION` when the type byte's high nibble is not 1; `FORMAT_INVALID` for an
 *   unknown codec tag, a malformed or non-minimal key version varint, or key version 0.
 */
export function readHeader(ciphertext: Uint8Array, where: FieldLocation = {}): CiphertextHeader {
  const headerLength = checkHeader(ciphertext, where.table, where.column)
  return {
    formatVersion: FORMAT_VERSION_1,
    codecTag: (ciphertext[0] as number) & 0x0f,
    keyVersion: headerKeyVersion(ciphertext),
    headerLength,
  }
}

/**
 * A cheap structural test (no key, no crypto): could `value` be a v1 field ciphertext? For the
 * mixed period of a migration from plaintext. A `true` is not proof: a plaintext byte string
 * may look like one (it needs a first byte 0x11..0x18 and at least 32 bytes); only decryption
 * proves it. A `false` is certain.
 *
 * @param value - Stored bytes.
 * @returns Whether {@link readHeader} would accept it.
 */
export function looksLikeCiphertext(value: Uint8Array): boolean {
  return value instanceof Uint8Array && typeof parse(value) === 'number'
}

/**
 * Length of the v1 ciphertext of an encoded plaintext: plaintext + {@link FORMAT_V1_OVERHEAD},
 * plus one byte per 7 bits of key version beyond the first 7.
 *
 * @param plaintextLength - Bytes of codec-encoded plaintext.
 * @param keyVersion - Key version. @default 1
 * @returns The ciphertext length in bytes.
 * @throws ConfigError `CONFIG_INVALID` for a negative or fractional length, or a key version outside 1..2^32-1.
 */
export function ciphertextLength(plaintextLength: number, keyVersion = 1): number {
  if (!Number.isSafeInteger(plaintextLength) || plaintextLength < 0) {
    throw new ConfigError('CONFIG_INVALID', 'A plaintext length must be a non-negative integer.')
  }
  if (!isValidKeyVersion(keyVersion)) {
    throw new ConfigError('CONFIG_INVALID', 'A key version must be an integer in 1..2^32-1.')
  }
  return FORMAT_V1_OVERHEAD - 1 + varintLength(keyVersion) + plaintextLength
}

/** ` in table.column`, for messages. Names are configuration, not data, so they may appear. */
export function describe(where: FieldLocation): string {
  if (where.table === undefined && where.column === undefined) return ''
  return ` in ${where.table ?? '?'}.${where.column ?? '?'}`
}

/**
 * lp(s): 2-byte big-endian length ‖ UTF-8 bytes.
 *
 * @throws ConfigError `CONFIG_INVALID` when `s` is not a well-formed string or exceeds 65535 bytes.
 */
export function lengthPrefixed(s: string, what: string, where: FieldLocation): Buffer {
  if (typeof s !== 'string' || !isWellFormedString(s)) {
    throw new ConfigError('CONFIG_INVALID', `The ${what} must be a well-formed string${describe(where)}.`, {
      table: where.table,
      column: where.column,
    })
  }
  const length = Buffer.byteLength(s, 'utf8')
  if (length > 0xffff) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `The ${what} is longer than 65535 UTF-8 bytes${describe(where)}.`,
      {
        table: where.table,
        column: where.column,
      },
    )
  }
  const out = Buffer.allocUnsafe(2 + length)
  out.writeUInt16BE(length, 0)
  out.write(s, 2, 'utf8')
  return out
}

const NO_CONTEXT = Buffer.from([0, 0])

/**
 * The context part of the AAD: 2-byte big-endian count ‖ lp(each value).
 *
 * @throws ConfigError `CONFIG_INVALID` for more than 65535 values, or a value that is not a string
 *   lp() accepts.
 */
export function encodeContext(context: readonly string[] | undefined, where: FieldLocation): Buffer {
  if (context === undefined || context.length === 0) return NO_CONTEXT
  if (context.length > 0xffff) {
    throw new ConfigError('CONFIG_INVALID', `More than 65535 context values${describe(where)}.`, {
      table: where.table,
      column: where.column,
    })
  }
  const parts: Buffer[] = [Buffer.allocUnsafe(2)]
  ;(parts[0] as Buffer).writeUInt16BE(context.length, 0)
  for (const value of context) parts.push(lengthPrefixed(value, 'context value', where))
  return Buffer.concat(parts)
}
