/**
 * The AWS KMS key provider (DESIGN.md §2, model C): the KEK is a symmetric KMS key that never
 * leaves KMS; data keys come from GenerateDataKey, are unwrapped with Decrypt and moved between
 * KMS keys with ReEncrypt, so during a KEK rotation the plaintext key never leaves KMS.
 *
 * This is the only module (with its subpath entry `kysely-field-encryption/aws-kms`) that
 * imports `@aws-sdk/client-kms`, an optional peer dependency: on its first call, so that a
 * missing SDK is a typed error with the install command, not a module-not-found at import.
 */
import type { KMSClient } from '@aws-sdk/client-kms'
import { ConfigError, KeyProviderError } from '../../errors.js'
import { optionKeys, refuseUnknownKeys } from '../../option-keys.js'
import type { GeneratedKey, KeyProvider, KeyRef, RewrapSource, WrappedKey } from '../key-provider.js'
import { unknownKekCauses } from '../unwrap-failed.js'
import { describeRef, mapKmsError } from './aws-kms-errors.js'
import { loadOptionalPeer } from './optional-peer.js'

/** The SDK's module, loaded on first use. */
type KmsSdk = typeof import('@aws-sdk/client-kms')

/** The SDK's load, once per process (again after a failed one). */
let sdkLoad: Promise<KmsSdk> | undefined

function loadSdk(): Promise<KmsSdk> {
  sdkLoad ??= loadOptionalPeer<KmsSdk>(
    '@aws-sdk/client-kms',
    'The AWS KMS provider',
    'KMSClient',
    () => import('@aws-sdk/client-kms'),
  ).catch((error: unknown) => {
    // Tried again by the next call: the package may be installed meanwhile.
    sdkLoad = undefined
    throw error
  })
  return sdkLoad
}

/** Prefix of every id this provider makes: `aws-kms:<keyId>`. */
export const AWS_KMS_ID_PREFIX = 'aws-kms:'

/** Data keys are AES-256 keys: 32 bytes. */
const DATA_KEY_BYTES = 32

/** Defaults for a client the provider builds itself; pass `client` to choose your own. */
const DEFAULT_MAX_ATTEMPTS = 3
const DEFAULT_CONNECTION_TIMEOUT_MS = 2_000
const DEFAULT_REQUEST_TIMEOUT_MS = 5_000

/** Options of {@link awsKmsKeyProvider}. */
export interface AwsKmsProviderOptions {
  /**
   * The KEK: a key ARN, an alias ARN, a key id or `alias/<name>`. The provider id, stored beside
   * every wrapped key, is `aws-kms:<keyId>`, exactly as written here: use the full key ARN so
   * every process and every region names the KEK the same way (an alias can be re-pointed, a bare
   * key id does not say which region or account).
   */
  readonly keyId: string
  /**
   * A configured client (preferred): you choose credentials, region, retries and timeouts, and you
   * own its lifetime (`close()` does not destroy it). When absent the provider builds one from
   * `region`/`endpoint` and the SDK's default credential chain, with `maxAttempts: 3`,
   * `retryMode: 'standard'`, a 2 s connection timeout and a 5 s request timeout, and destroys it
   * on `close()`.
   */
  readonly client?: KMSClient
  /**
   * Region of a client built by the provider. Ignored with `client`.
   * @default the region in `keyId` when it is an ARN, else the SDK's (AWS_REGION, profile).
   */
  readonly region?: string
  /** Endpoint of a client built by the provider (VPC endpoint, FIPS endpoint, LocalStack). Ignored with `client`. */
  readonly endpoint?: string
  /** Grant tokens sent with every call, for access granted by a grant not yet eventually consistent. */
  readonly grantTokens?: readonly string[]
}

/** What {@link AwsKmsKeyProvider.describeKey} reports. */
export interface AwsKmsKeyDescription {
  /** The key ARN KMS resolved `keyId` to. */
  readonly arn: string
  readonly enabled: boolean
  /** `Enabled`, `Disabled`, `PendingDeletion`, … */
  readonly keyState: string
  readonly multiRegion: boolean
}

/** A {@link KeyProvider} backed by one AWS KMS key. */
export interface AwsKmsKeyProvider extends KeyProvider {
  /** The `keyId` option, as given. */
  readonly keyId: string
  /**
   * Calls DescribeKey: a cheap check, at start-up or in `status`, that the key exists, is
   * enabled and that the credentials may see it.
   * @throws KeyProviderError with the codes of {@link awsKmsKeyProvider}.
   */
  describeKey(): Promise<AwsKmsKeyDescription>
}

/**
 * A key provider whose KEK is an AWS KMS key.
 *
 * Every wrapping is bound to its {@link KeyRef} by the KMS EncryptionContext
 * `{ 'kfe:table', 'kfe:purpose', 'kfe:version' }`: KMS refuses (InvalidCiphertextException) to
 * decrypt a wrapped key under any other context, and the context is written to CloudTrail with
 * every call, so the audit log says which table's key was unwrapped.
 *
 * @param options - see {@link AwsKmsProviderOptions}.
 * @returns the provider, with id `aws-kms:<keyId>`.
 * @throws ConfigError `CONFIG_INVALID` when `keyId` is empty, or `client` is given with `region`/`endpoint`.
 * @throws KeyProviderError from its operations: `PROVIDER_ACCESS_DENIED`, `PROVIDER_KEY_DISABLED`
 *   (disabled, pending deletion or not found), `PROVIDER_THROTTLED` (after the SDK's retries),
 *   `PROVIDER_INVALID_CIPHERTEXT` (wrong key or context, corrupt blob), `PROVIDER_UNAVAILABLE`
 *   (network, timeout, KMS 5xx), `UNWRAP_FAILED` (not this KEK's wrapping, or a bad plaintext length),
 *   `PROVIDER_ERROR` (anything else). The SDK error is kept as `cause`.
 * @example
 * ```ts
 * import { KMSClient } from '@aws-sdk/client-kms'
 * import { awsKmsKeyProvider } from 'kysely-field-encryption/aws-kms'
 *
 * const keyProvider = awsKmsKeyProvider({
 *   keyId: 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab',
 *   client: new KMSClient({ region: 'eu-west-1', maxAttempts: 3 }),
 * })
 * ```
 */
export function awsKmsKeyProvider(options: AwsKmsProviderOptions): AwsKmsKeyProvider {
  refuseUnknownKeys(
    options,
    optionKeys<AwsKmsProviderOptions>()(['keyId', 'client', 'region', 'endpoint', 'grantTokens']),
    'awsKmsKeyProvider',
  )
  const keyId = options.keyId
  if (typeof keyId !== 'string' || keyId.trim() === '' || keyId !== keyId.trim()) {
    throw new ConfigError(
      'CONFIG_INVALID',
      'awsKmsKeyProvider: keyId must be a non-empty key ARN, alias ARN or alias/… name.',
    )
  }
  if (options.client !== undefined && (options.region !== undefined || options.endpoint !== undefined)) {
    throw new ConfigError(
      'CONFIG_INVALID',
      'awsKmsKeyProvider: pass either `client` or `region`/`endpoint`, not both; configure the region and endpoint on your KMSClient.',
    )
  }
  const id = `${AWS_KMS_ID_PREFIX}${keyId}`
  const ownsClient = options.client === undefined
  // Built with the first call, once the SDK is loaded (see loadSdk).
  let client: KMSClient | undefined = options.client
  const clientOptions = {
    region: options.region ?? arnRegion(keyId),
    endpoint: options.endpoint,
    maxAttempts: DEFAULT_MAX_ATTEMPTS,
    retryMode: 'standard',
    requestHandler: {
      connectionTimeout: DEFAULT_CONNECTION_TIMEOUT_MS,
      requestTimeout: DEFAULT_REQUEST_TIMEOUT_MS,
      // Recent @smithy/node-http-handler only logs a breached requestTimeout unless told to
      // throw; older versions ignore this flag (their requestTimeout already throws).
      throwOnRequestTimeout: true,
    },
  }
  const grantTokens = options.grantTokens === undefined ? undefined : [...options.grantTokens]
  let closed = false

  const fail = (operation: string, ref: KeyRef | undefined, error: unknown): KeyProviderError =>
    mapKmsError(error, { operation, keyId, providerId: id, ref })

  const refuseClosed = (operation: string, ref: KeyRef | undefined): void => {
    if (closed) {
      throw new KeyProviderError(
        'PROVIDER_UNAVAILABLE',
        `KMS ${operation} on ${keyId}: this provider was closed.`,
        {
          providerId: id,
          table: ref?.logicalTable,
        },
      )
    }
  }

  /** Runs one KMS call (`call`, given the SDK's module for its command classes, and the client). */
  const send = async <T>(
    operation: string,
    ref: KeyRef | undefined,
    call: (sdk: KmsSdk, client: KMSClient) => Promise<T>,
  ): Promise<T> => {
    refuseClosed(operation, ref)
    // A missing SDK is its own typed error (CONFIG_INVALID), not a KMS failure.
    const sdk = await loadSdk()
    // Closed while the SDK loaded: no client is built after close().
    refuseClosed(operation, ref)
    client ??= new sdk.KMSClient(clientOptions)
    try {
      return await call(sdk, client)
    } catch (error) {
      throw fail(operation, ref, error)
    }
  }

  const provider: AwsKmsKeyProvider = {
    id,
    keyId,

    async generateDataKey(ref: KeyRef): Promise<GeneratedKey> {
      const out = await send('GenerateDataKey', ref, (sdk, kms) =>
        kms.send(
          new sdk.GenerateDataKeyCommand({
            KeyId: keyId,
            KeySpec: 'AES_256',
            EncryptionContext: encryptionContext(ref),
            GrantTokens: grantTokens,
          }),
        ),
      )
      const plaintext = takePlaintext(out.Plaintext, 'GenerateDataKey', keyId, id, ref)
      const blob = out.CiphertextBlob
      if (blob === undefined || blob.length === 0) {
        plaintext.fill(0)
        throw new KeyProviderError(
          'PROVIDER_ERROR',
          `KMS GenerateDataKey on ${keyId} ${describeRef(ref)} returned no ciphertext.`,
          {
            providerId: id,
            table: ref.logicalTable,
          },
        )
      }
      return { plaintext, wrapped: { kekId: id, wrapped: Uint8Array.from(blob) } }
    },

    async unwrap(wrapped: WrappedKey, ref: KeyRef): Promise<Buffer> {
      if (wrapped.kekId !== id) {
        // Decrypt is always pinned to this provider's KeyId, so a key wrapped elsewhere could
        // never decrypt here: say so instead of spending a KMS call on an IncorrectKeyException.
        throw new KeyProviderError(
          'UNWRAP_FAILED',
          `KMS Decrypt on ${keyId} ${describeRef(ref)}: the key is wrapped under ${wrapped.kekId}, not ${id}. ${unknownKekCauses(wrapped.kekId)}`,
          { providerId: id, table: ref.logicalTable },
        )
      }
      const out = await send('Decrypt', ref, (sdk, kms) =>
        kms.send(
          new sdk.DecryptCommand({
            CiphertextBlob: wrapped.wrapped,
            // Always pin the KEK: without KeyId, KMS decrypts under whatever key the blob names,
            // so a swapped blob could be decrypted under a key this application never chose.
            KeyId: keyId,
            EncryptionContext: encryptionContext(ref),
            GrantTokens: grantTokens,
          }),
        ),
      )
      return takePlaintext(out.Plaintext, 'Decrypt', keyId, id, ref)
    },

    async rewrap(source: RewrapSource, ref: KeyRef): Promise<WrappedKey> {
      const sourceKeyId = kmsKeyIdOf(source.wrapped.kekId)
      let blob: Uint8Array | undefined
      if (sourceKeyId !== undefined && !regionsDiffer(sourceKeyId, keyId)) {
        // ReEncrypt decrypts and encrypts inside KMS: the data key never leaves it.
        const out = await send('ReEncrypt', ref, (sdk, kms) =>
          kms.send(
            new sdk.ReEncryptCommand({
              CiphertextBlob: source.wrapped.wrapped,
              SourceKeyId: sourceKeyId,
              DestinationKeyId: keyId,
              SourceEncryptionContext: encryptionContext(ref),
              DestinationEncryptionContext: encryptionContext(ref),
              GrantTokens: grantTokens,
            }),
          ),
        )
        blob = out.CiphertextBlob
      } else {
        // A local or HSM wrapping, or a KMS key in another region (ReEncrypt works within one
        // region only): unwrap through the source's provider, then Encrypt here.
        const plaintext = await source.plaintext()
        try {
          if (plaintext.length !== DATA_KEY_BYTES) {
            throw new KeyProviderError(
              'UNWRAP_FAILED',
              `Rewrap to ${keyId} ${describeRef(ref)}: the source key is ${plaintext.length} bytes, expected ${DATA_KEY_BYTES}.`,
              { providerId: id, table: ref.logicalTable },
            )
          }
          const out = await send('Encrypt', ref, (sdk, kms) =>
            kms.send(
              new sdk.EncryptCommand({
                KeyId: keyId,
                Plaintext: plaintext,
                EncryptionContext: encryptionContext(ref),
                GrantTokens: grantTokens,
              }),
            ),
          )
          blob = out.CiphertextBlob
        } finally {
          plaintext.fill(0)
        }
      }
      if (blob === undefined || blob.length === 0) {
        throw new KeyProviderError(
          'PROVIDER_ERROR',
          `KMS rewrap to ${keyId} ${describeRef(ref)} returned no ciphertext.`,
          {
            providerId: id,
            table: ref.logicalTable,
          },
        )
      }
      return { kekId: id, wrapped: Uint8Array.from(blob) }
    },

    async describeKey(): Promise<AwsKmsKeyDescription> {
      const out = await send('DescribeKey', undefined, (sdk, kms) =>
        kms.send(new sdk.DescribeKeyCommand({ KeyId: keyId, GrantTokens: grantTokens })),
      )
      const meta = out.KeyMetadata
      return {
        arn: meta?.Arn ?? keyId,
        enabled: meta?.Enabled === true,
        keyState: meta?.KeyState ?? 'Unknown',
        multiRegion: meta?.MultiRegion === true,
      }
    },

    async close(): Promise<void> {
      if (closed) return
      closed = true
      if (ownsClient) client?.destroy()
    },
  }
  return Object.freeze(provider)
}

/**
 * The EncryptionContext that binds a wrapped key to its {@link KeyRef}. KMS authenticates it as
 * additional data, so Decrypt with any other table, purpose or version fails; it is not secret
 * and appears in CloudTrail, hence only logical names and numbers go in it.
 */
export function encryptionContext(ref: KeyRef): Record<string, string> {
  return { 'kfe:table': ref.logicalTable, 'kfe:purpose': ref.purpose, 'kfe:version': String(ref.version) }
}

/** The KMS key id inside an `aws-kms:` provider id, or undefined for any other provider. */
function kmsKeyIdOf(kekId: string): string | undefined {
  return kekId.startsWith(AWS_KMS_ID_PREFIX) ? kekId.slice(AWS_KMS_ID_PREFIX.length) : undefined
}

/** `arn:aws:kms:<region>:<account>:key/…` → region; undefined for an alias name or bare key id. */
function arnRegion(keyId: string): string | undefined {
  const parts = keyId.split(':')
  return parts[0] === 'arn' && parts.length >= 6 && parts[3] !== '' ? parts[3] : undefined
}

function regionsDiffer(a: string, b: string): boolean {
  const ra = arnRegion(a)
  const rb = arnRegion(b)
  return ra !== undefined && rb !== undefined && ra !== rb
}

/** Copies the SDK's plaintext into a Buffer the caller owns, then zeroes the SDK's copy. */
function takePlaintext(
  plaintext: Uint8Array | undefined,
  operation: string,
  keyId: string,
  providerId: string,
  ref: KeyRef,
): Buffer {
  try {
    // A malformed reply may hold anything there (the SDK passes a JSON number through).
    if (!(plaintext instanceof Uint8Array) || plaintext.length !== DATA_KEY_BYTES) {
      throw new KeyProviderError(
        'UNWRAP_FAILED',
        `KMS ${operation} on ${keyId} ${describeRef(ref)} returned ${plaintext instanceof Uint8Array ? plaintext.length : 0} plaintext bytes, expected ${DATA_KEY_BYTES}.`,
        { providerId, table: ref.logicalTable },
      )
    }
    // Buffer.alloc is never carved from the shared pool, so zeroing it later wipes only this key.
    const out = Buffer.alloc(DATA_KEY_BYTES)
    out.set(plaintext)
    return out
  } finally {
    if (plaintext instanceof Uint8Array) plaintext.fill(0)
  }
}
