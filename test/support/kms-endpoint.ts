/**
 * A KMS endpoint for tests: an HTTP server on 127.0.0.1 speaking the AWS KMS JSON 1.1 protocol
 * (`POST /`, `X-Amz-Target: TrentService.<Op>`, `application/x-amz-json-1.1`, base64 blobs), so
 * the real `@aws-sdk/client-kms` is exercised end to end: signing, serialisation, error parsing,
 * retries and timeouts (DESIGN.md §7).
 *
 * Semantics follow KMS where the provider depends on them: KEKs are random AES-256 keys held in
 * memory; a CiphertextBlob names its key and is AES-256-GCM with the canonical EncryptionContext
 * as AAD, so a wrong or missing context fails with InvalidCiphertextException and Decrypt with
 * another KeyId fails with IncorrectKeyException, as KMS does. SigV4 signatures are not verified,
 * but an Authorization header is required.
 *
 * Errors are `{"__type":"<ExceptionName>","message":"…"}`: the SDK's AwsJson1_1 protocol takes the
 * error name from `__type` (then `code`, then the `x-amzn-errortype` header), which becomes the
 * exception's `name` (@smithy/core `loadJsonRpcErrorCode`).
 */
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export type KmsOperation =
  | 'CreateKey'
  | 'DescribeKey'
  | 'GenerateDataKey'
  | 'Encrypt'
  | 'Decrypt'
  | 'ReEncrypt'

const OPERATIONS: readonly KmsOperation[] = [
  'CreateKey',
  'DescribeKey',
  'GenerateDataKey',
  'Encrypt',
  'Decrypt',
  'ReEncrypt',
]

const REGION = 'local-1'
const ACCOUNT = '000000000000'
/** Blob layout: version(1) ‖ key uuid (36 ASCII) ‖ nonce(12) ‖ ciphertext ‖ tag(16). */
const BLOB_VERSION = 0x01
const UUID_LEN = 36
const HEADER_LEN = 1 + UUID_LEN
const NONCE_LEN = 12
const TAG_LEN = 16

/** The test handle on a running endpoint. */
export interface KmsEndpoint {
  /** `http://127.0.0.1:<port>`, for `new KMSClient({ endpoint })`. */
  readonly url: string
  /** Requests received per operation, including those answered with an injected fault. */
  readonly calls: Record<KmsOperation, number>
  /** Creates a new enabled KEK; returns its ARN `arn:aws:kms:local-1:000000000000:key/<uuid>`. */
  createKey(options?: { alias?: string }): string
  /** Delays every response by `ms`. */
  setLatency(ms: number): void
  /** The next `n` requests fail with ThrottlingException (HTTP 400). */
  throttleNext(n: number): void
  /** The next `n` requests fail with KMSInternalException and HTTP `status` (default 500). */
  failNext(n: number, status?: number): void
  /**
   * The next `n` requests get no answer: their connection is reset (TCP RST), as when a server
   * closes an idle keep-alive connection just as the client reuses it. The SDK sees ECONNRESET.
   */
  resetNext(n: number): void
  /** The next `n` answers that carry `Plaintext` carry it as a JSON number, not base64 bytes. */
  malformPlaintextNext(n: number): void
  /** Calls with this key fail with DisabledException until {@link enableKey}. */
  disableKey(keyId: string): void
  enableKey(keyId: string): void
  /** Puts the key in PendingDeletion: calls fail with KMSInvalidStateException. */
  scheduleKeyDeletion(keyId: string): void
  /** While `denied`, calls with this key fail with AccessDeniedException. */
  denyAccess(keyId: string, denied: boolean): void
  /** Clears faults, latency, counters, disabled/denied/pending states; keeps the keys. */
  reset(): void
  /** Stops listening and drops open connections; later calls see ECONNREFUSED. */
  close(): Promise<void>
}

interface KeyRecord {
  readonly uuid: string
  readonly arn: string
  readonly material: Buffer
  readonly created: number
  state: 'Enabled' | 'Disabled' | 'PendingDeletion'
  denied: boolean
}

/** A KMS-shaped failure, answered as `{"__type": name, "message": …}`. */
class KmsFault extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message)
  }
}

/** Starts an endpoint on 127.0.0.1 and a random port. */
export async function startKmsEndpoint(): Promise<KmsEndpoint> {
  const keys = new Map<string, KeyRecord>()
  const aliases = new Map<string, string>()
  const calls = Object.fromEntries(OPERATIONS.map((op) => [op, 0])) as Record<KmsOperation, number>
  let latencyMs = 0
  let throttles = 0
  let failures = 0
  let failStatus = 500
  let resets = 0
  let malformed = 0

  const resolveKey = (keyId: unknown, field = 'KeyId'): KeyRecord => {
    if (typeof keyId !== 'string' || keyId === '')
      throw new KmsFault('ValidationException', `${field} is required.`)
    let uuid = keyId
    if (keyId.startsWith('alias/')) uuid = aliases.get(keyId) ?? ''
    else if (keyId.startsWith('arn:')) {
      const resource = keyId.split(':').slice(5).join(':')
      uuid = resource.startsWith('alias/') ? (aliases.get(resource) ?? '') : resource.replace(/^key\//, '')
    }
    const key = keys.get(uuid)
    if (key === undefined) throw new KmsFault('NotFoundException', `Key '${keyId}' does not exist`)
    return key
  }

  const usable = (key: KeyRecord, op: KmsOperation): KeyRecord => {
    if (key.denied) {
      throw new KmsFault(
        'AccessDeniedException',
        `User: arn:aws:iam::${ACCOUNT}:user/test is not authorized to perform: kms:${op} on resource: ${key.arn}`,
      )
    }
    if (key.state === 'Disabled') throw new KmsFault('DisabledException', `${key.arn} is disabled.`)
    if (key.state === 'PendingDeletion')
      throw new KmsFault('KMSInvalidStateException', `${key.arn} is pending deletion.`)
    return key
  }

  const seal = (key: KeyRecord, plaintext: Buffer, context: unknown): string => {
    const header = Buffer.concat([Buffer.from([BLOB_VERSION]), Buffer.from(key.uuid, 'ascii')])
    const nonce = randomBytes(NONCE_LEN)
    const cipher = createCipheriv('aes-256-gcm', key.material, nonce)
    cipher.setAAD(Buffer.concat([header, canonicalContext(context)]))
    const ct = Buffer.concat([cipher.update(plaintext), cipher.final()])
    return Buffer.concat([header, nonce, ct, cipher.getAuthTag()]).toString('base64')
  }

  const blobKey = (blob: unknown): { key: KeyRecord; raw: Buffer } => {
    const raw = typeof blob === 'string' ? Buffer.from(blob, 'base64') : Buffer.alloc(0)
    if (raw.length < HEADER_LEN + NONCE_LEN + TAG_LEN || raw[0] !== BLOB_VERSION) {
      throw new KmsFault('InvalidCiphertextException', 'The ciphertext is invalid.')
    }
    const key = keys.get(raw.subarray(1, HEADER_LEN).toString('ascii'))
    if (key === undefined)
      throw new KmsFault('InvalidCiphertextException', 'The ciphertext refers to an unknown key.')
    return { key, raw }
  }

  const open = (key: KeyRecord, raw: Buffer, context: unknown): Buffer => {
    const aad = Buffer.concat([raw.subarray(0, HEADER_LEN), canonicalContext(context)])
    const nonce = raw.subarray(HEADER_LEN, HEADER_LEN + NONCE_LEN)
    const tag = raw.subarray(raw.length - TAG_LEN)
    try {
      const decipher = createDecipheriv('aes-256-gcm', key.material, nonce)
      decipher.setAAD(aad)
      decipher.setAuthTag(tag)
      return Buffer.concat([
        decipher.update(raw.subarray(HEADER_LEN + NONCE_LEN, raw.length - TAG_LEN)),
        decipher.final(),
      ])
    } catch {
      // Same answer as KMS for a wrong context or tampered bytes: no detail.
      throw new KmsFault('InvalidCiphertextException', 'The ciphertext is invalid.')
    }
  }

  /** Decrypt-side checks shared by Decrypt and ReEncrypt. */
  const decryptBlob = (op: KmsOperation, blob: unknown, keyId: unknown, context: unknown, field: string) => {
    const { key, raw } = blobKey(blob)
    if (keyId !== undefined) {
      const named = resolveKey(keyId, field)
      if (named.uuid !== key.uuid) {
        throw new KmsFault(
          'IncorrectKeyException',
          'The key ID in the request does not identify the key that encrypted the ciphertext.',
        )
      }
    }
    usable(key, op)
    return { key, plaintext: open(key, raw, context) }
  }

  const metadata = (key: KeyRecord) => ({
    AWSAccountId: ACCOUNT,
    KeyId: key.uuid,
    Arn: key.arn,
    CreationDate: key.created,
    Enabled: key.state === 'Enabled',
    Description: '',
    KeyUsage: 'ENCRYPT_DECRYPT',
    KeyState: key.state,
    Origin: 'AWS_KMS',
    KeyManager: 'CUSTOMER',
    CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT',
    KeySpec: 'SYMMETRIC_DEFAULT',
    EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
    MultiRegion: false,
  })

  const createKey = (options: { alias?: string } = {}): string => {
    const uuid = randomUUID()
    const arn = `arn:aws:kms:${REGION}:${ACCOUNT}:key/${uuid}`
    keys.set(uuid, {
      uuid,
      arn,
      material: randomBytes(32),
      created: Math.floor(Date.now() / 1000),
      state: 'Enabled',
      denied: false,
    })
    if (options.alias !== undefined)
      aliases.set(options.alias.startsWith('alias/') ? options.alias : `alias/${options.alias}`, uuid)
    return arn
  }

  const handlers: Record<KmsOperation, (body: Record<string, unknown>) => unknown> = {
    CreateKey: () => {
      const arn = createKey()
      return { KeyMetadata: metadata(resolveKey(arn)) }
    },
    DescribeKey: (b) => {
      const key = resolveKey(b.KeyId)
      if (key.denied) usable(key, 'DescribeKey')
      return { KeyMetadata: metadata(key) }
    },
    GenerateDataKey: (b) => {
      const key = usable(resolveKey(b.KeyId), 'GenerateDataKey')
      const length = b.KeySpec === 'AES_256' ? 32 : b.KeySpec === 'AES_128' ? 16 : b.NumberOfBytes
      if (typeof length !== 'number' || !Number.isInteger(length) || length < 1 || length > 1024) {
        throw new KmsFault('ValidationException', 'Specify either KeySpec or NumberOfBytes.')
      }
      const plaintext = randomBytes(length)
      return {
        KeyId: key.arn,
        Plaintext: plaintext.toString('base64'),
        CiphertextBlob: seal(key, plaintext, b.EncryptionContext),
      }
    },
    Encrypt: (b) => {
      const key = usable(resolveKey(b.KeyId), 'Encrypt')
      const plaintext = typeof b.Plaintext === 'string' ? Buffer.from(b.Plaintext, 'base64') : Buffer.alloc(0)
      if (plaintext.length < 1 || plaintext.length > 4096) {
        throw new KmsFault('ValidationException', 'Plaintext must be 1 to 4096 bytes.')
      }
      return {
        KeyId: key.arn,
        CiphertextBlob: seal(key, plaintext, b.EncryptionContext),
        EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      }
    },
    Decrypt: (b) => {
      const { key, plaintext } = decryptBlob(
        'Decrypt',
        b.CiphertextBlob,
        b.KeyId,
        b.EncryptionContext,
        'KeyId',
      )
      return {
        KeyId: key.arn,
        Plaintext: plaintext.toString('base64'),
        EncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      }
    },
    ReEncrypt: (b) => {
      const destination = usable(resolveKey(b.DestinationKeyId, 'DestinationKeyId'), 'ReEncrypt')
      const source = decryptBlob(
        'ReEncrypt',
        b.CiphertextBlob,
        b.SourceKeyId,
        b.SourceEncryptionContext,
        'SourceKeyId',
      )
      return {
        SourceKeyId: source.key.arn,
        KeyId: destination.arn,
        CiphertextBlob: seal(destination, source.plaintext, b.DestinationEncryptionContext),
        SourceEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
        DestinationEncryptionAlgorithm: 'SYMMETRIC_DEFAULT',
      }
    },
  }

  const answer = (res: ServerResponse, status: number, body: unknown): void => {
    const json = JSON.stringify(body)
    res.writeHead(status, {
      'content-type': 'application/x-amz-json-1.1',
      'content-length': Buffer.byteLength(json),
      'x-amzn-requestid': randomUUID(),
    })
    res.end(json)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const target = String(req.headers['x-amz-target'] ?? '')
    const op = target.startsWith('TrentService.') ? target.slice('TrentService.'.length) : ''
    if (OPERATIONS.includes(op as KmsOperation)) calls[op as KmsOperation] += 1
    if (resets > 0) {
      resets -= 1
      req.socket.resetAndDestroy()
      return
    }
    if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs))
    if (res.destroyed) return
    try {
      if (req.method !== 'POST' || req.url !== '/')
        throw new KmsFault('UnknownOperationException', 'POST / only.', 404)
      if (req.headers.authorization === undefined) {
        throw new KmsFault('MissingAuthenticationTokenException', 'Missing Authentication Token')
      }
      if (!String(req.headers['content-type'] ?? '').startsWith('application/x-amz-json-1.1')) {
        throw new KmsFault('SerializationException', 'Expected application/x-amz-json-1.1.')
      }
      if (!OPERATIONS.includes(op as KmsOperation))
        throw new KmsFault('UnknownOperationException', `Unknown: ${target}`)
      if (throttles > 0) {
        throttles -= 1
        throw new KmsFault('ThrottlingException', 'Rate exceeded')
      }
      if (failures > 0) {
        failures -= 1
        throw new KmsFault('KMSInternalException', 'An internal error occurred.', failStatus)
      }
      let body: unknown
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}')
      } catch {
        throw new KmsFault('SerializationException', 'Malformed JSON.')
      }
      if (typeof body !== 'object' || body === null)
        throw new KmsFault('SerializationException', 'Expected an object.')
      const out = handlers[op as KmsOperation](body as Record<string, unknown>) as Record<string, unknown>
      if (malformed > 0 && 'Plaintext' in out) {
        malformed -= 1
        out.Plaintext = 1
      }
      answer(res, 200, out)
    } catch (error) {
      const fault =
        error instanceof KmsFault ? error : new KmsFault('KMSInternalException', 'Internal error.', 500)
      answer(res, fault.status, { __type: fault.type, message: fault.message })
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy())
  })
  // Never close an idle keep-alive connection. Node's default (5 s) races the SDK's pooled
  // socket: Node 20's http.Agent ignores the server's `Keep-Alive: timeout=5` hint when the agent
  // has no timeout of its own, so after a pause of 5 s in the test process (a loaded machine, a
  // synchronous fast-check set-up) the next request goes out on the socket the server is closing
  // and fails with ECONNRESET, which a client with maxAttempts 1 does not retry. A test that
  // wants that reset asks for it with `resetNext`.
  server.keepAliveTimeout = 0
  // Loopback only, random port: never reachable from outside this machine.
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo

  const keyOf = (keyId: string): KeyRecord => resolveKey(keyId)

  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    createKey,
    setLatency: (ms) => {
      latencyMs = ms
    },
    throttleNext: (n) => {
      throttles = n
    },
    malformPlaintextNext: (n) => {
      malformed = n
    },
    failNext: (n, status = 500) => {
      failures = n
      failStatus = status
    },
    resetNext: (n) => {
      resets = n
    },
    disableKey: (keyId) => {
      keyOf(keyId).state = 'Disabled'
    },
    enableKey: (keyId) => {
      keyOf(keyId).state = 'Enabled'
    },
    scheduleKeyDeletion: (keyId) => {
      keyOf(keyId).state = 'PendingDeletion'
    },
    denyAccess: (keyId, denied) => {
      keyOf(keyId).denied = denied
    },
    reset: () => {
      latencyMs = 0
      throttles = 0
      failures = 0
      failStatus = 500
      resets = 0
      malformed = 0
      for (const op of OPERATIONS) calls[op] = 0
      for (const key of keys.values()) {
        key.state = 'Enabled'
        key.denied = false
      }
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()))
        server.closeAllConnections()
      }),
  }
}

/**
 * The AAD for an EncryptionContext: its pairs sorted by key, so `{a,b}` and `{b,a}` match as in
 * KMS, and an absent context differs from every non-empty one.
 */
function canonicalContext(context: unknown): Buffer {
  if (context === undefined || context === null) return Buffer.from('[]')
  if (typeof context !== 'object')
    throw new KmsFault('ValidationException', 'EncryptionContext must be a map.')
  const pairs = Object.entries(context as Record<string, unknown>)
  for (const [, v] of pairs) {
    if (typeof v !== 'string')
      throw new KmsFault('ValidationException', 'EncryptionContext values must be strings.')
  }
  pairs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return Buffer.from(JSON.stringify(pairs), 'utf8')
}
