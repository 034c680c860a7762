/**
 * The one interface through which this library reaches a key-encrypting key (KEK): a local key,
 * an AWS KMS key or an HSM key. Nothing else in the code talks to a key keeper (DESIGN.md §2).
 *
 * Providers see only 32-byte data keys and their wrapped form; they never see field plaintext.
 */

/** What a data key is for. Data keys encrypt fields; index keys compute blind indexes. */
export type KeyPurpose = 'data' | 'index'

/**
 * Names one key version in the key store. Providers bind wrapped keys to it (KMS
 * EncryptionContext, AAD of a local or HSM wrap) so a wrapped key cannot be swapped for another.
 */
export interface KeyRef {
  /** Logical table the key belongs to (not necessarily the physical table name). */
  readonly logicalTable: string
  readonly purpose: KeyPurpose
  /** Key version, 1, 2, … per (logicalTable, purpose). */
  readonly version: number
}

/** A data key wrapped under one KEK. */
export interface WrappedKey {
  /** Id of the provider/KEK that can unwrap it, e.g. `local:main`, `aws-kms:arn:…`, `pkcs11:token/label`. */
  readonly kekId: string
  /** Opaque wrapped bytes, as the provider produced them. */
  readonly wrapped: Uint8Array
}

/** A freshly generated data key: plaintext for immediate use, and its wrapped form for the key store. */
export interface GeneratedKey {
  /** 32 bytes. The caller zeroes it when done (`fill(0)`). */
  readonly plaintext: Buffer
  readonly wrapped: WrappedKey
}

/** The source of a rewrap: the existing wrapping, and a way to get the plaintext if the provider needs it. */
export interface RewrapSource {
  readonly wrapped: WrappedKey
  /**
   * Unwraps the key through whichever provider owns `wrapped`. A provider that can re-encrypt
   * server-side (KMS ReEncrypt under its own keys) does not call it, so the plaintext never leaves
   * the keeper.
   */
  readonly plaintext: () => Promise<Buffer>
}

/**
 * A key-encrypting key. Three operations, one id.
 *
 * Implementations must: bind every wrapping to its {@link KeyRef}; throw a `KeyProviderError`
 * with a stable code on failure; never log or put key bytes in an error.
 */
export interface KeyProvider {
  /**
   * Stable id of this KEK, stored beside each wrapping it makes. Must not contain secrets: 1 to
   * 2,048 characters without control characters or line separators (refused otherwise, since it is
   * named in errors).
   */
  readonly id: string
  /** Generates a 256-bit data key; returns it in plaintext and wrapped under this KEK. */
  generateDataKey(ref: KeyRef): Promise<GeneratedKey>
  /**
   * Unwraps a key this provider wrapped (`wrapped.kekId === this.id`).
   * @returns 32 plaintext bytes; the caller owns (and zeroes) the buffer.
   */
  unwrap(wrapped: WrappedKey, ref: KeyRef): Promise<Buffer>
  /** Wraps an existing key under this KEK: adds a wrapping, or moves a key to this KEK (KEK rotation). */
  rewrap(source: RewrapSource, ref: KeyRef): Promise<WrappedKey>
  /** Optional: release sessions/sockets. */
  close?(): Promise<void>
}

/** One provider call, as reported to the user's audit callback. Never carries key bytes. */
export interface AuditEvent {
  readonly operation: 'generateDataKey' | 'unwrap' | 'rewrap'
  readonly kekId: string
  readonly logicalTable: string
  readonly purpose: KeyPurpose
  readonly version: number
  /** When the call started. */
  readonly time: Date
  readonly durationMs: number
  readonly outcome: 'success' | 'failure'
  /** The error code on failure. */
  readonly errorCode?: string
}

/** Receives audit events. Must not throw; an exception from it is swallowed. */
export type AuditSink = (event: AuditEvent) => void
