import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { inspect } from 'node:util'
import { ConfigError, KeyProviderError } from '../errors.js'
import { ownKeyBuffer } from '../fields/key-bytes.js'
import { optionKeys, refuseUnknownKeys } from '../option-keys.js'
import type { GeneratedKey, KeyProvider, KeyRef, RewrapSource, WrappedKey } from './key-provider.js'
import { unknownKekCauses, unwrapFailedCauses } from './unwrap-failed.js'

/** Options of {@link localKeyProvider}: the KEK given inline, or read from an environment variable or a file. */
export type LocalKeyProviderOptions =
  | {
      /**
       * KEK id stored beside each wrapping, `local:<name>`. Use one id per key (`local:2025`,
       * `local:2026`) so several local KEKs can coexist during a rotation.
       * @default 'local:default'
       */
      readonly id?: string
      /**
       * The 256-bit KEK: 32 bytes, 64 hex characters or 44 base64 characters. A `Uint8Array` is
       * copied; the caller should zero its own copy. A string cannot be zeroed by anyone, which is
       * why `env`/`file` are preferable in production.
       */
      readonly key: Uint8Array | string
    }
  | {
      /** @default 'local:default' */
      readonly id?: string
      /** Name of an environment variable holding the KEK as hex or base64. */
      readonly env: string
    }
  | {
      /** @default 'local:default' */
      readonly id?: string
      /** Path of a file holding the KEK as 32 raw bytes, or as hex or base64 text (surrounding whitespace ignored). */
      readonly file: string
    }

/** First byte of every local wrapping; a new wrap format gets a new byte, old ones stay readable. */
const WRAP_FORMAT_V1 = 0x01
const NONCE_BYTES = 12 // NIST SP 800-38D §8.2.2: random 96-bit IV
const TAG_BYTES = 16
const KEY_BYTES = 32
const WRAPPED_BYTES = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES
const AAD_LABEL = 'kysely-field-encryption/local-wrap/v1'
const ID_PATTERN = /^local:[A-Za-z0-9._-]{1,128}$/

/**
 * Creates a {@link KeyProvider} whose KEK is a 256-bit key held in this process (DESIGN.md §2,
 * model A: you run the whole key management yourself). Meant for development, tests and small
 * deployments; the key must come from a secret store, never from source code.
 *
 * Each data key is wrapped with AES-256-GCM under the KEK, a random 96-bit nonce and, as AAD, a
 * canonical encoding of the key's {@link KeyRef} and the KEK id, so a wrapped key cannot be moved
 * to another table, purpose or version. Wrapped form: `0x01 ‖ nonce(12) ‖ ciphertext(32) ‖ tag(16)`.
 * Random nonces are safe here: a KEK wraps a handful of keys per table and version, far below the
 * 2^32 invocations NIST SP 800-38D §8.3 allows under one key.
 *
 * @param options - the KEK (inline, `env` or `file`) and the provider id.
 * @returns a provider; call `close()` to zero the KEK when done.
 * @throws ConfigError `WEAK_KEY` when the key is not 32 bytes, is one repeated byte, has fewer
 *   than 16 distinct byte values, is a short repeated pattern or a sequence.
 * @throws ConfigError `CONFIG_INVALID` when the id is not `local:<name>`, the text is neither hex
 *   nor base64, or the environment variable / file is missing (named, its content never shown).
 * @example
 * ```ts
 * const kek = localKeyProvider({ id: 'local:2026', env: 'KFE_LOCAL_KEK' })
 * ```
 */
export function localKeyProvider(options: LocalKeyProviderOptions): KeyProvider & {
  close(): Promise<void>
} {
  refuseUnknownKeys(
    options,
    optionKeys<LocalKeyProviderOptions>()(['id', 'key', 'env', 'file']),
    'localKeyProvider',
  )
  const id = options.id ?? 'local:default'
  if (!ID_PATTERN.test(id)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `A local key provider id must look like 'local:<name>', got '${id}'.`,
    )
  }
  return new LocalKeyProvider(id, readKey(options))
}

function readKey(options: LocalKeyProviderOptions): Buffer {
  const given = (['key', 'env', 'file'] as const).filter(
    (source) => (options as Partial<Record<typeof source, unknown>>)[source] !== undefined,
  )
  // Two sources would leave one unread without a word: the KEK in use would not be the one meant.
  if (given.length > 1)
    throw new ConfigError(
      'CONFIG_INVALID',
      `localKeyProvider takes one of \`key\`, \`env\` or \`file\`, but was given ${given.join(' and ')}.`,
    )
  if ('key' in options && options.key !== undefined) {
    if (typeof options.key === 'string') return checkKey(parseText(options.key.trim(), 'the key option'))
    return checkKey(ownKeyBuffer(options.key))
  }
  if ('env' in options && options.env !== undefined) {
    const value = process.env[options.env]
    if (value === undefined || value.trim() === '') {
      throw new ConfigError(
        'CONFIG_INVALID',
        `Environment variable ${options.env} (local KEK) is not set or empty.`,
      )
    }
    return checkKey(parseText(value.trim(), `environment variable ${options.env}`))
  }
  if ('file' in options && options.file !== undefined) {
    let content: Buffer
    try {
      content = readFileSync(options.file)
    } catch (error) {
      throw new ConfigError('CONFIG_INVALID', `Cannot read the local KEK file ${options.file}.`, {
        cause: error,
      })
    }
    // Exactly 32 bytes is a raw key: neither hex (64) nor base64 (44) text can be that long.
    if (content.length === KEY_BYTES) return checkKey(ownKeyBuffer(content, true))
    const text = content.toString('utf8').trim()
    content.fill(0)
    return checkKey(parseText(text, `file ${options.file}`))
  }
  throw new ConfigError('CONFIG_INVALID', 'localKeyProvider needs one of `key`, `env` or `file`.')
}

/** Decodes hex or base64; never echoes the text in an error. */
function parseText(text: string, source: string): Buffer {
  // Decoded into the shared pool, then moved into a buffer of the KEK's own (and the pool copy zeroed).
  if (text.length % 2 === 0 && /^[0-9a-fA-F]+$/.test(text))
    return ownKeyBuffer(Buffer.from(text, 'hex'), true)
  // 64 characters is the hex length of a 256-bit key: do not reinterpret a typo'd hex key as base64.
  if (text.length !== 64 && text.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(text))
    return ownKeyBuffer(Buffer.from(text, 'base64'), true)
  throw new ConfigError(
    'CONFIG_INVALID',
    `The local KEK in ${source} is neither hex (64 characters) nor base64 (44 characters).`,
  )
}

/** Refuses keys that are the wrong size or obviously not random. Zeroes the buffer before throwing. */
function checkKey(key: Buffer): Buffer {
  const weak = weakness(key)
  if (weak !== undefined) {
    key.fill(0)
    throw new ConfigError(
      'WEAK_KEY',
      `The local KEK is refused: ${weak}. Generate one with \`openssl rand -hex 32\`.`,
    )
  }
  return key
}

function weakness(key: Buffer): string | undefined {
  if (key.length !== KEY_BYTES) return `it is ${key.length} bytes, a 256-bit key is 32 bytes`
  // A uniformly random 32-byte key has ~30 distinct byte values; fewer than 16 has probability < 2^-54.
  if (new Set(key).size < 16)
    return 'it has too few distinct byte values (a repeated byte or a short pattern)'
  for (let period = 1; period <= KEY_BYTES / 2; period++) {
    let repeats = true
    for (let i = period; i < KEY_BYTES && repeats; i++) repeats = key[i] === key[i - period]
    if (repeats) return 'it is a repeated pattern'
  }
  const step = ((key[1] ?? 0) - (key[0] ?? 0) + 256) % 256
  let sequential = true
  for (let i = 2; i < KEY_BYTES && sequential; i++)
    sequential = ((key[i] ?? 0) - (key[i - 1] ?? 0) + 256) % 256 === step
  if (sequential) return 'it is a sequence of bytes'
  return undefined
}

/** Canonical, unambiguous AAD: length-prefixed fields, so no two (ref, kekId) share an encoding. */
function aadFor(ref: KeyRef, kekId: string): Buffer {
  const parts = [AAD_LABEL, ref.logicalTable, ref.purpose, String(ref.version), kekId].map((s) =>
    Buffer.from(s, 'utf8'),
  )
  const out: Buffer[] = []
  for (const part of parts) {
    const len = Buffer.alloc(4)
    len.writeUInt32BE(part.length)
    out.push(len, part)
  }
  return Buffer.concat(out)
}

class LocalKeyProvider implements KeyProvider {
  readonly id: string
  #kek: Buffer
  #closed = false

  constructor(id: string, kek: Buffer) {
    this.id = id
    this.#kek = kek
  }

  async generateDataKey(ref: KeyRef): Promise<GeneratedKey> {
    const plaintext = randomBytes(KEY_BYTES)
    try {
      return { plaintext, wrapped: this.#wrap(plaintext, ref) }
    } catch (error) {
      plaintext.fill(0)
      throw error
    }
  }

  async unwrap(wrapped: WrappedKey, ref: KeyRef): Promise<Buffer> {
    const kek = this.#liveKek()
    const where = `${ref.logicalTable}/${ref.purpose}/v${ref.version}`
    if (wrapped.kekId !== this.id) {
      throw new KeyProviderError(
        'UNWRAP_FAILED',
        `Key ${where} is wrapped by ${wrapped.kekId}, not by ${this.id}. ${unknownKekCauses(wrapped.kekId)}`,
        {
          providerId: this.id,
          table: ref.logicalTable,
        },
      )
    }
    const bytes = wrapped.wrapped
    if (bytes.length !== WRAPPED_BYTES || bytes[0] !== WRAP_FORMAT_V1) {
      throw new KeyProviderError(
        'PROVIDER_INVALID_CIPHERTEXT',
        `Key ${where}: the wrapping is not a version-1 local wrapping of ${WRAPPED_BYTES} bytes.`,
        { providerId: this.id, table: ref.logicalTable },
      )
    }
    const nonce = bytes.subarray(1, 1 + NONCE_BYTES)
    const ct = bytes.subarray(1 + NONCE_BYTES, 1 + NONCE_BYTES + KEY_BYTES)
    const tag = bytes.subarray(1 + NONCE_BYTES + KEY_BYTES)
    const decipher = createDecipheriv('aes-256-gcm', kek, nonce, { authTagLength: TAG_BYTES })
    decipher.setAAD(aadFor(ref, this.id))
    decipher.setAuthTag(tag)
    const first = decipher.update(ct)
    try {
      const last = decipher.final()
      // Not Buffer.concat: its result is a slice of the shared pool.
      const out = Buffer.allocUnsafeSlow(first.length + last.length)
      out.set(first)
      out.set(last, first.length)
      first.fill(0)
      last.fill(0)
      return out
    } catch (error) {
      throw new KeyProviderError(
        'UNWRAP_FAILED',
        `Key ${where} does not unwrap under ${this.id}: wrong KEK, or the wrapping belongs to another table, purpose or version. ${unwrapFailedCauses(this.id)}`,
        { providerId: this.id, table: ref.logicalTable, cause: error },
      )
    } finally {
      first.fill(0)
    }
  }

  async rewrap(source: RewrapSource, ref: KeyRef): Promise<WrappedKey> {
    this.#liveKek()
    const plaintext = await source.plaintext()
    try {
      return this.#wrap(plaintext, ref)
    } finally {
      plaintext.fill(0)
    }
  }

  /** Zeroes the KEK. Every later call throws `PROVIDER_UNAVAILABLE`. */
  async close(): Promise<void> {
    this.#closed = true
    this.#kek.fill(0)
  }

  #wrap(plaintext: Buffer, ref: KeyRef): WrappedKey {
    const kek = this.#liveKek()
    if (plaintext.length !== KEY_BYTES) {
      throw new KeyProviderError(
        'PROVIDER_ERROR',
        `A data key must be ${KEY_BYTES} bytes, got ${plaintext.length}.`,
        {
          providerId: this.id,
          table: ref.logicalTable,
        },
      )
    }
    const nonce = randomBytes(NONCE_BYTES)
    const cipher = createCipheriv('aes-256-gcm', kek, nonce, { authTagLength: TAG_BYTES })
    cipher.setAAD(aadFor(ref, this.id))
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()])
    const wrapped = Buffer.concat([Buffer.of(WRAP_FORMAT_V1), nonce, ct, cipher.getAuthTag()])
    return { kekId: this.id, wrapped: new Uint8Array(wrapped) }
  }

  #liveKek(): Buffer {
    if (this.#closed) {
      throw new KeyProviderError('PROVIDER_UNAVAILABLE', `Key provider ${this.id} was closed.`, {
        providerId: this.id,
      })
    }
    return this.#kek
  }

  toJSON(): unknown {
    return { type: 'local', id: this.id, key: '[redacted]' }
  }

  toString(): string {
    return `LocalKeyProvider(${this.id}, [redacted])`
  }

  [inspect.custom](): string {
    return this.toString()
  }
}
