import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KeyProviderError } from '../../src/errors.js'
import { isAvailabilityError } from '../../src/keys/key-cache-outage.js'
import { awsKmsKeyProvider } from '../../src/keys/providers/aws-kms-provider.js'
import { type KmsEndpoint, startKmsEndpoint } from '../support/kms-endpoint.js'

/**
 * The real `@aws-sdk/client-kms` with the SDK's default credentials, taken from a container
 * credential endpoint on loopback (as on ECS/EKS). When that endpoint fails, the SDK cannot sign
 * and KMS is never asked: nothing was refused, so the provider reports an outage
 * (`PROVIDER_UNAVAILABLE`), which the key cache serves a cached key through, not a refusal
 * (`PROVIDER_ACCESS_DENIED`), which would drop every cached key past its TTL.
 */
describe('AWS KMS provider: the credential endpoint fails', () => {
  const saved = { ...process.env }
  let kms: KmsEndpoint
  let creds: Server
  let mode: 'ok' | 'failing' = 'failing'
  beforeAll(async () => {
    kms = await startKmsEndpoint()
    creds = createServer((_req, res) => {
      if (mode === 'failing') {
        res.writeHead(503)
        res.end('Service Unavailable')
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(
        JSON.stringify({
          AccessKeyId: 'AKIDEXAMPLE',
          SecretAccessKey: 'x'.repeat(40),
          Token: 'session',
          Expiration: new Date(Date.now() + 3_600_000).toISOString(),
        }),
      )
    })
    await new Promise<void>((resolve) => creds.listen(0, '127.0.0.1', resolve))
    // Only the container endpoint may answer: no keys in the environment, no files, no IMDS.
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE'])
      delete process.env[k]
    for (const k of ['AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN']) delete process.env[k]
    process.env.AWS_CONFIG_FILE = '/nonexistent/kfe-test-config'
    process.env.AWS_SHARED_CREDENTIALS_FILE = '/nonexistent/kfe-test-credentials'
    process.env.AWS_EC2_METADATA_DISABLED = 'true'
    process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `http://127.0.0.1:${(creds.address() as AddressInfo).port}/creds`
  })
  afterAll(async () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k]
    Object.assign(process.env, saved)
    await new Promise((resolve) => creds?.close(resolve))
    await kms?.close()
  })

  it('is PROVIDER_UNAVAILABLE (an outage, KMS never called), and works once the endpoint answers', async () => {
    const keyId = kms.createKey()
    const ref = { logicalTable: 'users', purpose: 'data' as const, version: 1 }
    const failing = awsKmsKeyProvider({ keyId, endpoint: kms.url, region: 'local-1' })
    try {
      const error = await failing.generateDataKey(ref).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(KeyProviderError)
      expect(error).toMatchObject({ code: 'PROVIDER_UNAVAILABLE' })
      expect(isAvailabilityError(error)).toBe(true)
      expect((error as Error).message).toContain('could not load AWS credentials')
      expect((error as { cause?: { name?: string } }).cause?.name).toBe('CredentialsProviderError')
      expect(kms.calls.GenerateDataKey).toBe(0)
    } finally {
      await failing.close?.()
    }
    mode = 'ok'
    const working = awsKmsKeyProvider({ keyId, endpoint: kms.url, region: 'local-1' })
    try {
      const made = await working.generateDataKey(ref)
      expect(made.plaintext).toHaveLength(32)
      made.plaintext.fill(0)
      expect(kms.calls.GenerateDataKey).toBe(1)
    } finally {
      await working.close?.()
    }
  })
})
