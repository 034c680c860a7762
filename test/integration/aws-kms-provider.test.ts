/**
 * The AWS KMS provider against the real `@aws-sdk/client-kms`: first the in-repo KMS endpoint
 * (always), then LocalStack (when a Docker engine answers) and real AWS KMS (when
 * `AWS_KMS_KEY_ID` and credentials are set). A block that cannot run says NOT RUN.
 */
import { KMSClient } from '@aws-sdk/client-kms'
import fc from 'fast-check'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { KeyProviderError } from '../../src/errors.js'
import type { KeyProvider, KeyRef, WrappedKey } from '../../src/keys/key-provider.js'
import { awsKmsKeyProvider } from '../../src/keys/providers/aws-kms-provider.js'
import { type KmsEndpoint, startKmsEndpoint } from '../support/kms-endpoint.js'

const REF: KeyRef = { logicalTable: 'users', purpose: 'data', version: 1 }
const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' }

function clientFor(endpoint: string, maxAttempts = 1, requestHandler?: Record<string, unknown>): KMSClient {
  return new KMSClient({ endpoint, region: 'local-1', credentials: CREDENTIALS, maxAttempts, requestHandler })
}

/** Awaits a rejection and returns it as a KeyProviderError (fails the test otherwise). */
async function providerError(promise: Promise<unknown>): Promise<KeyProviderError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(KeyProviderError)
  return error as KeyProviderError
}

/** A local stand-in for a non-KMS wrapping (the plaintext comes from `source.plaintext()`). */
function foreignSource(key: Buffer) {
  let handedOut: Buffer | undefined
  return {
    source: {
      wrapped: { kekId: 'local:main', wrapped: new Uint8Array([1, 2, 3]) } satisfies WrappedKey,
      plaintext: async () => {
        handedOut = Buffer.from(key)
        return handedOut
      },
    },
    handedOut: () => handedOut,
  }
}

describe('awsKmsKeyProvider against the in-repo KMS endpoint', () => {
  let kms: KmsEndpoint
  let keyArn: string
  let client: KMSClient
  let provider: KeyProvider

  beforeAll(async () => {
    kms = await startKmsEndpoint()
    keyArn = kms.createKey()
    client = clientFor(kms.url)
    provider = awsKmsKeyProvider({ keyId: keyArn, client })
  })
  afterEach(() => kms.reset())
  afterAll(async () => {
    client.destroy()
    await kms.close()
  })

  it('has the id aws-kms:<keyId>', () => {
    expect(provider.id).toBe(`aws-kms:${keyArn}`)
  })

  it('round trip: generateDataKey then unwrap gives the same 32 bytes', async () => {
    const generated = await provider.generateDataKey(REF)
    expect(generated.plaintext).toHaveLength(32)
    expect(generated.wrapped.kekId).toBe(provider.id)
    const unwrapped = await provider.unwrap(generated.wrapped, REF)
    expect(unwrapped.equals(generated.plaintext)).toBe(true)
    expect(kms.calls.GenerateDataKey).toBe(1)
    expect(kms.calls.Decrypt).toBe(1)
  })

  it('round trip holds for any table name, purpose and version (EncryptionContext canonicalisation)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ minLength: 1, maxLength: 40, unit: 'binary' }),
        fc.constantFrom('data' as const, 'index' as const),
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        async (logicalTable, purpose, version) => {
          const ref = { logicalTable, purpose, version }
          const generated = await provider.generateDataKey(ref)
          const unwrapped = await provider.unwrap(generated.wrapped, ref)
          expect(unwrapped.equals(generated.plaintext)).toBe(true)
        },
      ),
      { numRuns: 15 },
    )
  })

  it.each([
    ['another table', { ...REF, logicalTable: 'orders' }],
    ['another purpose', { ...REF, purpose: 'index' as const }],
    ['another version', { ...REF, version: 2 }],
  ])(
    'unwrap under %s fails with PROVIDER_INVALID_CIPHERTEXT (KMS checks the EncryptionContext)',
    async (_, ref) => {
      const generated = await provider.generateDataKey(REF)
      const error = await providerError(provider.unwrap(generated.wrapped, ref))
      expect(error.code).toBe('PROVIDER_INVALID_CIPHERTEXT')
      expect(error.table).toBe(ref.logicalTable)
      expect(error.providerId).toBe(provider.id)
      expect((error.cause as Error).name).toBe('InvalidCiphertextException')
    },
  )

  it('unwrap of a blob made under another KMS key fails with PROVIDER_INVALID_CIPHERTEXT (KeyId is pinned)', async () => {
    const other = awsKmsKeyProvider({ keyId: kms.createKey(), client })
    const generated = await other.generateDataKey(REF)
    // Relabel the wrapping as ours: KMS itself must refuse, because Decrypt names our KeyId.
    const relabelled = { kekId: provider.id, wrapped: generated.wrapped.wrapped }
    const error = await providerError(provider.unwrap(relabelled, REF))
    expect(error.code).toBe('PROVIDER_INVALID_CIPHERTEXT')
    expect((error.cause as Error).name).toBe('IncorrectKeyException')
  })

  it('unwrap of a wrapping that names another KEK id fails with UNWRAP_FAILED without calling KMS', async () => {
    const error = await providerError(
      provider.unwrap({ kekId: 'local:main', wrapped: new Uint8Array(40) }, REF),
    )
    expect(error.code).toBe('UNWRAP_FAILED')
    expect(kms.calls.Decrypt).toBe(0)
  })

  it('a corrupt blob fails with PROVIDER_INVALID_CIPHERTEXT', async () => {
    const generated = await provider.generateDataKey(REF)
    const bytes = Uint8Array.from(generated.wrapped.wrapped)
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 1
    const error = await providerError(provider.unwrap({ kekId: provider.id, wrapped: bytes }, REF))
    expect(error.code).toBe('PROVIDER_INVALID_CIPHERTEXT')
  })

  it('a reply whose Plaintext is not bytes fails with UNWRAP_FAILED (a typed error, nothing to zero)', async () => {
    const generated = await provider.generateDataKey(REF)
    kms.malformPlaintextNext(2)
    const unwrap = await providerError(provider.unwrap(generated.wrapped, REF))
    expect(unwrap.code).toBe('UNWRAP_FAILED')
    const generate = await providerError(provider.generateDataKey(REF))
    expect(generate.code).toBe('UNWRAP_FAILED')
  })

  it('a disabled key fails with PROVIDER_KEY_DISABLED, and works again once enabled', async () => {
    const generated = await provider.generateDataKey(REF)
    kms.disableKey(keyArn)
    const error = await providerError(provider.unwrap(generated.wrapped, REF))
    expect(error.code).toBe('PROVIDER_KEY_DISABLED')
    expect((error.cause as Error).name).toBe('DisabledException')
    expect((await providerError(provider.generateDataKey(REF))).code).toBe('PROVIDER_KEY_DISABLED')
    kms.enableKey(keyArn)
    expect((await provider.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
  })

  it('a key pending deletion fails with PROVIDER_KEY_DISABLED (KMSInvalidStateException)', async () => {
    const generated = await provider.generateDataKey(REF)
    kms.scheduleKeyDeletion(keyArn)
    const error = await providerError(provider.unwrap(generated.wrapped, REF))
    expect(error.code).toBe('PROVIDER_KEY_DISABLED')
    expect((error.cause as Error).name).toBe('KMSInvalidStateException')
  })

  it('a key that does not exist fails with PROVIDER_KEY_DISABLED and a "not found" message', async () => {
    const missing = awsKmsKeyProvider({
      keyId: 'arn:aws:kms:local-1:000000000000:key/00000000-0000-4000-8000-000000000000',
      client,
    })
    const error = await providerError(missing.generateDataKey(REF))
    expect(error.code).toBe('PROVIDER_KEY_DISABLED')
    expect(error.message).toMatch(/not found/)
    expect((error.cause as Error).name).toBe('NotFoundException')
  })

  it('access denied fails with PROVIDER_ACCESS_DENIED', async () => {
    const generated = await provider.generateDataKey(REF)
    kms.denyAccess(keyArn, true)
    const error = await providerError(provider.unwrap(generated.wrapped, REF))
    expect(error.code).toBe('PROVIDER_ACCESS_DENIED')
    expect((error.cause as Error).name).toBe('AccessDeniedException')
  })

  it('throttling with maxAttempts 1 fails with PROVIDER_THROTTLED', async () => {
    kms.throttleNext(1)
    const error = await providerError(provider.generateDataKey(REF))
    expect(error.code).toBe('PROVIDER_THROTTLED')
    expect(kms.calls.GenerateDataKey).toBe(1)
  })

  it('with SDK retries (maxAttempts 3) a single throttle is absorbed: 2 calls reach KMS', async () => {
    const retrying = clientFor(kms.url, 3)
    try {
      const p = awsKmsKeyProvider({ keyId: keyArn, client: retrying })
      kms.throttleNext(1)
      const generated = await p.generateDataKey(REF)
      expect(generated.plaintext).toHaveLength(32)
      expect(kms.calls.GenerateDataKey).toBe(2)
    } finally {
      retrying.destroy()
    }
  })

  it.each([500, 503])('HTTP %i fails with PROVIDER_UNAVAILABLE', async (status) => {
    kms.failNext(1, status)
    const error = await providerError(provider.generateDataKey(REF))
    expect(error.code).toBe('PROVIDER_UNAVAILABLE')
    expect((error.cause as Error).name).toBe('KMSInternalException')
  })

  it('a connection reset with maxAttempts 1 fails with PROVIDER_UNAVAILABLE naming ECONNRESET; the next call works', async () => {
    kms.resetNext(1)
    const error = await providerError(provider.generateDataKey(REF))
    expect(error.code).toBe('PROVIDER_UNAVAILABLE')
    expect(error.message).toMatch(/ECONNRESET/)
    expect(kms.calls.GenerateDataKey).toBe(1)
    const generated = await provider.generateDataKey(REF)
    expect((await provider.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
  })

  it('with SDK retries (maxAttempts 3) a connection reset is absorbed: the unwrap succeeds on the second attempt', async () => {
    const retrying = clientFor(kms.url, 3)
    try {
      const p = awsKmsKeyProvider({ keyId: keyArn, client: retrying })
      const generated = await p.generateDataKey(REF)
      kms.resetNext(1)
      expect((await p.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
      expect(kms.calls.Decrypt).toBe(2)
    } finally {
      retrying.destroy()
    }
  })

  it('a closed endpoint fails with PROVIDER_UNAVAILABLE', async () => {
    const gone = await startKmsEndpoint()
    const goneClient = clientFor(gone.url)
    try {
      const p = awsKmsKeyProvider({ keyId: gone.createKey(), client: goneClient })
      await p.generateDataKey(REF)
      await gone.close()
      const error = await providerError(p.generateDataKey(REF))
      expect(error.code).toBe('PROVIDER_UNAVAILABLE')
      // ECONNREFUSED on a new socket, ECONNRESET on the kept-alive one the server dropped.
      expect(error.message).toMatch(/ECONN(REFUSED|RESET)/)
    } finally {
      goneClient.destroy()
    }
  })

  it('injected latency delays the call by at least that much', async () => {
    kms.setLatency(150)
    const started = performance.now()
    await provider.generateDataKey(REF)
    expect(performance.now() - started).toBeGreaterThanOrEqual(150)
  })

  it('a request timeout shorter than the latency fails with PROVIDER_UNAVAILABLE', async () => {
    const impatient = clientFor(kms.url, 1, { requestTimeout: 100, throwOnRequestTimeout: true })
    try {
      const p = awsKmsKeyProvider({ keyId: keyArn, client: impatient })
      kms.setLatency(400)
      const error = await providerError(p.generateDataKey(REF))
      expect(error.code).toBe('PROVIDER_UNAVAILABLE')
    } finally {
      impatient.destroy()
    }
  })

  it('rewrap between two KMS keys uses ReEncrypt, and the result unwraps under the new key only', async () => {
    const generated = await provider.generateDataKey(REF)
    const target = awsKmsKeyProvider({ keyId: kms.createKey(), client })
    let plaintextAsked = false
    const rewrapped = await target.rewrap(
      {
        wrapped: generated.wrapped,
        plaintext: async () => {
          plaintextAsked = true
          return provider.unwrap(generated.wrapped, REF)
        },
      },
      REF,
    )
    expect(plaintextAsked).toBe(false)
    expect(kms.calls.ReEncrypt).toBe(1)
    expect(kms.calls.Encrypt).toBe(0)
    expect(kms.calls.Decrypt).toBe(0)
    expect(rewrapped.kekId).toBe(target.id)
    expect((await target.unwrap(rewrapped, REF)).equals(generated.plaintext)).toBe(true)
    const error = await providerError(target.unwrap(rewrapped, { ...REF, version: 9 }))
    expect(error.code).toBe('PROVIDER_INVALID_CIPHERTEXT')
  })

  it('rewrap from a non-KMS source uses Encrypt and zeroes the plaintext it was handed', async () => {
    const key = Buffer.alloc(32, 7)
    const { source, handedOut } = foreignSource(key)
    const rewrapped = await provider.rewrap(source, REF)
    expect(kms.calls.Encrypt).toBe(1)
    expect(kms.calls.ReEncrypt).toBe(0)
    expect(handedOut()?.equals(Buffer.alloc(32))).toBe(true)
    expect((await provider.unwrap(rewrapped, REF)).equals(key)).toBe(true)
  })

  it('rewrap from a non-KMS source refuses a plaintext that is not 32 bytes, and still zeroes it', async () => {
    const { source, handedOut } = foreignSource(Buffer.alloc(16, 9))
    const error = await providerError(provider.rewrap(source, REF))
    expect(error.code).toBe('UNWRAP_FAILED')
    expect(kms.calls.Encrypt).toBe(0)
    expect(handedOut()?.equals(Buffer.alloc(16))).toBe(true)
  })

  it('describeKey reports the ARN and state', async () => {
    const p = awsKmsKeyProvider({ keyId: keyArn, client })
    expect(await (p as ReturnType<typeof awsKmsKeyProvider>).describeKey()).toEqual({
      arn: keyArn,
      enabled: true,
      keyState: 'Enabled',
      multiRegion: false,
    })
  })

  it('an alias works as keyId', async () => {
    const arn = kms.createKey({ alias: 'kfe-test' })
    const p = awsKmsKeyProvider({ keyId: 'alias/kfe-test', client })
    expect(p.id).toBe('aws-kms:alias/kfe-test')
    const generated = await p.generateDataKey(REF)
    expect((await p.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
    expect((await p.describeKey()).arn).toBe(arn)
  })

  it('errors never contain key bytes or the wrapped blob', async () => {
    const generated = await provider.generateDataKey(REF)
    const secrets = [
      generated.plaintext.toString('hex'),
      generated.plaintext.toString('base64'),
      Buffer.from(generated.wrapped.wrapped).toString('base64'),
      Buffer.from(generated.wrapped.wrapped).toString('hex'),
    ]
    const errors: KeyProviderError[] = []
    errors.push(await providerError(provider.unwrap(generated.wrapped, { ...REF, version: 2 })))
    kms.disableKey(keyArn)
    errors.push(await providerError(provider.unwrap(generated.wrapped, REF)))
    kms.reset()
    kms.denyAccess(keyArn, true)
    errors.push(await providerError(provider.unwrap(generated.wrapped, REF)))
    kms.reset()
    kms.failNext(1)
    errors.push(await providerError(provider.unwrap(generated.wrapped, REF)))
    kms.throttleNext(1)
    errors.push(await providerError(provider.rewrap(foreignSource(generated.plaintext).source, REF)))
    for (const error of errors) {
      const texts = [
        error.message,
        String(error),
        JSON.stringify(error),
        String((error.cause as Error).message),
      ]
      for (const text of texts) for (const secret of secrets) expect(text).not.toContain(secret)
      expect(error.message).toContain(keyArn)
      expect(error.message).toContain('table users')
    }
  })

  describe('a client built by the provider', () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY }
    beforeAll(() => {
      process.env.AWS_ACCESS_KEY_ID = 'test'
      process.env.AWS_SECRET_ACCESS_KEY = 'test'
    })
    afterAll(() => {
      for (const [name, value] of [
        ['AWS_ACCESS_KEY_ID', saved.id],
        ['AWS_SECRET_ACCESS_KEY', saved.secret],
      ] as const) {
        if (value === undefined) delete process.env[name]
        else process.env[name] = value
      }
    })

    it('takes the region from the key ARN, retries a throttle by default, and close() destroys it', async () => {
      const p = awsKmsKeyProvider({ keyId: keyArn, endpoint: kms.url })
      kms.throttleNext(1)
      const generated = await p.generateDataKey(REF)
      expect(kms.calls.GenerateDataKey).toBe(2)
      expect((await p.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
      await p.close?.()
      const error = await providerError(p.unwrap(generated.wrapped, REF))
      expect(error.code).toBe('PROVIDER_UNAVAILABLE')
    })

    it('retries a connection reset by default (a pooled socket the server dropped)', async () => {
      const p = awsKmsKeyProvider({ keyId: keyArn, endpoint: kms.url })
      try {
        const generated = await p.generateDataKey(REF)
        kms.resetNext(1)
        expect((await p.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
        expect(kms.calls.Decrypt).toBe(2)
      } finally {
        await p.close?.()
      }
    })
  })

  it('rejects an empty keyId, and client together with region', () => {
    expect(() => awsKmsKeyProvider({ keyId: '' })).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID' }),
    )
    expect(() => awsKmsKeyProvider({ keyId: keyArn, client, region: 'eu-west-1' })).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID' }),
    )
  })
})

// --- LocalStack (testcontainers): only where a Docker engine answers -------------------------

const dockerUp = await (async () => {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers')
    await getContainerRuntimeClient()
    return true
  } catch {
    return false
  }
})()
if (!dockerUp) console.warn('LocalStack: NOT RUN (no Docker engine)')

describe.runIf(dockerUp)('awsKmsKeyProvider against LocalStack', () => {
  let stop: (() => Promise<unknown>) | undefined
  let client: KMSClient

  beforeAll(async () => {
    const { LocalstackContainer } = await import('@testcontainers/localstack')
    const container = await new LocalstackContainer('localstack/localstack:3').start()
    stop = () => container.stop()
    client = new KMSClient({
      endpoint: container.getConnectionUri(),
      region: 'us-east-1',
      credentials: CREDENTIALS,
    })
  })
  afterAll(async () => {
    client?.destroy()
    await stop?.()
  })

  it('round trip, EncryptionContext enforcement and ReEncrypt', async () => {
    const { CreateKeyCommand } = await import('@aws-sdk/client-kms')
    const newKey = async () => (await client.send(new CreateKeyCommand({}))).KeyMetadata?.Arn ?? ''
    const a = awsKmsKeyProvider({ keyId: await newKey(), client })
    const b = awsKmsKeyProvider({ keyId: await newKey(), client })
    const generated = await a.generateDataKey(REF)
    expect((await a.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
    expect((await providerError(a.unwrap(generated.wrapped, { ...REF, version: 2 }))).code).toBe(
      'PROVIDER_INVALID_CIPHERTEXT',
    )
    const moved = await b.rewrap(
      { wrapped: generated.wrapped, plaintext: () => a.unwrap(generated.wrapped, REF) },
      REF,
    )
    expect((await b.unwrap(moved, REF)).equals(generated.plaintext)).toBe(true)
  })
})

// --- Real AWS KMS: only with AWS_KMS_KEY_ID and credentials ---------------------------------

const realKeyId = process.env.AWS_KMS_KEY_ID
const awsCredentialsSet = Boolean(
  process.env.AWS_ACCESS_KEY_ID ||
    process.env.AWS_PROFILE ||
    process.env.AWS_WEB_IDENTITY_TOKEN_FILE ||
    process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI ||
    process.env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI,
)
const realAws = Boolean(realKeyId) && awsCredentialsSet
if (!realKeyId) console.warn('real AWS KMS: NOT RUN (AWS_KMS_KEY_ID not set)')
else if (!awsCredentialsSet)
  console.warn('real AWS KMS: NOT RUN (AWS_KMS_KEY_ID set but no AWS credentials in the environment)')

describe.runIf(realAws)('awsKmsKeyProvider against real AWS KMS (AWS_KMS_KEY_ID)', () => {
  it('round trip, and a wrong EncryptionContext is refused by KMS', async () => {
    const provider = awsKmsKeyProvider({ keyId: realKeyId ?? '' })
    try {
      const generated = await provider.generateDataKey(REF)
      expect((await provider.unwrap(generated.wrapped, REF)).equals(generated.plaintext)).toBe(true)
      const error = await providerError(provider.unwrap(generated.wrapped, { ...REF, logicalTable: 'other' }))
      expect(error.code).toBe('PROVIDER_INVALID_CIPHERTEXT')
    } finally {
      await provider.close?.()
    }
  })
})
