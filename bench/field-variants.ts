/**
 * The per-field contenders, behind one small interface: ours, a hand-written node:crypto floor,
 * and the peer libraries (@47ng/cloak, ciphersweet-js, the AWS Encryption SDK). Peer libraries
 * are used by bench/ only.
 */

import { createCipheriv, createDecipheriv, createHmac, randomBytes, randomFillSync } from 'node:crypto'
import { createRequire } from 'node:module'
import { decryptStringSync, encryptStringSync, generateKey, parseKeySync } from '@47ng/cloak'
import {
  AlgorithmSuiteIdentifier,
  buildClient,
  CommitmentPolicy,
  getLocalCryptographicMaterialsCache,
  NodeCachingMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
} from '@aws-crypto/client-node'
import { blindIndex } from '../src/blindindex/blind-index.js'
import { computeBlindIndex, computeTextBlindIndex } from '../src/blindindex/compute-blind-index.js'
import { normalizeValue } from '../src/blindindex/normalizers.js'
import type { JsonValue } from '../src/fields/canonical-json.js'
import { type Codec, codecs } from '../src/fields/codecs.js'
import { decryptValue, encryptValue } from '../src/fields/field-cipher.js'
import { KeyMaterial } from '../src/keys/key-material.js'

// ciphersweet-js assigns its exports in a way Node's CJS named-export detection cannot see.
const { BlindIndex, CipherSweet, EncryptedField, FIPSCrypto, ModernCrypto, StringProvider } = createRequire(
  import.meta.url,
)('ciphersweet-js') as typeof import('ciphersweet-js')

/** A value to encrypt: a string, or a JSON value (which string-only libraries get stringified). */
export type Payload =
  | { readonly kind: 'text'; readonly value: string }
  | { readonly kind: 'json'; readonly value: JsonValue }

/** The text a string-only library is given for a payload. */
export function payloadText(p: Payload): string {
  return p.kind === 'text' ? p.value : JSON.stringify(p.value)
}

/** One library's field operations. Sync or async, as the library offers them. */
export interface FieldLibrary {
  readonly id: string
  /** Shown in tables. */
  readonly label: string
  /** How the ciphertext is stored: bytes, or text (base64 and a prefix). */
  readonly storage: 'binary' | 'text (base64url)' | 'text (base64url, prefixed)'
  /** What the blind index is, or undefined when the library has none. */
  readonly indexNote?: string
  /** Whether its operations return promises. */
  readonly async: boolean
  encrypt(p: Payload): unknown
  /** Decrypts what `encrypt` returned (awaited), back to the payload's value. */
  decrypt(p: Payload, stored: unknown): unknown
  index?(p: Payload): unknown
}

/** Bytes (or characters, for text storage) of a stored ciphertext. */
export function storedLength(stored: unknown): number {
  if (typeof stored === 'string') return Buffer.byteLength(stored, 'utf8')
  if (stored instanceof Uint8Array) return stored.byteLength
  throw new TypeError('unexpected ciphertext type')
}

/** Ours: `encryptValue`/`decryptValue` with a table data key; a unique blind index as the plugin's `indexValue` computes it. */
function ours(): FieldLibrary {
  const dataKey = new KeyMaterial({ logicalTable: 'users', purpose: 'data', version: 1 }, randomBytes(32))
  const indexKey = new KeyMaterial({ logicalTable: 'users', purpose: 'index', version: 1 }, randomBytes(32))
  const spec = blindIndex({ name: 'email_bidx' })
  const aad = { table: 'users', column: 'email' }
  const codec = (p: Payload) => (p.kind === 'text' ? codecs.text : codecs.json) as Codec<unknown>
  return {
    id: 'ours',
    label: 'kysely-field-encryption',
    storage: 'binary',
    indexNote: 'HMAC-SHA256, 256 bits (unique)',
    async: false,
    encrypt: (p) => encryptValue(codec(p), p.value, dataKey, aad),
    decrypt: (p, stored) => decryptValue(codec(p), stored as Buffer, dataKey, aad),
    // What the plugin's indexValue does: the text path for text and json.
    index: (p) => {
      const c = codec(p)
      const normalized = p.kind === 'text' ? normalizeValue(spec, p.value) : p.value
      return c.canonicalText === undefined
        ? computeBlindIndex(indexKey, 'users', spec, [c.encode(normalized)])
        : computeTextBlindIndex(indexKey, 'users', spec, c.canonicalText(normalized))
    },
  }
}

/**
 * The floor: what a careful application would write by hand with node:crypto. AES-256-GCM under
 * one fixed key, 12-byte nonces sliced from a pooled CSPRNG buffer, `nonce ‖ ct ‖ tag`; no AAD,
 * no key versions, no per-record subkeys. HMAC-SHA256 for the index.
 */
function floor(): FieldLibrary {
  return handWritten(undefined)
}

/**
 * The floor plus what binding a value to its table and column costs: the same AES-256-GCM code
 * with a `setAAD` of a constant 30-byte buffer, about the size of our AAD for `users.email`
 * (header 4 + `kfe/v1/aad` 10 + lp(table) 7 + lp(column) 7 + empty context 2). Not a target
 * reference (the targets compare against {@link floor}); it shows how much of our cost over the
 * floor is the AAD itself.
 */
function floorWithAad(): FieldLibrary {
  return handWritten(
    Buffer.concat([
      Buffer.from([0x11, 0x01, 0xab, 0xcd]),
      Buffer.from('kfe/v1/aad\0\x05users\0\x05email\0\0'),
    ]),
  )
}

/** The hand-written AES-256-GCM + HMAC code both floors share; `aad` set or not. */
function handWritten(aad: Buffer | undefined): FieldLibrary {
  const key = randomBytes(32)
  const macKey = randomBytes(32)
  const pool = Buffer.alloc(12 * 1024)
  let offset = pool.length
  const nonce = () => {
    if (offset + 12 > pool.length) {
      randomFillSync(pool)
      offset = 0
    }
    offset += 12
    return pool.subarray(offset - 12, offset)
  }
  return {
    id: aad === undefined ? 'floor' : 'floor-aad',
    label:
      aad === undefined
        ? 'node:crypto by hand (floor)'
        : 'node:crypto by hand + AAD (floor with table/column binding)',
    storage: 'binary',
    ...(aad === undefined ? { indexNote: 'HMAC-SHA256, 256 bits' } : {}),
    async: false,
    encrypt(p) {
      const iv = nonce()
      const cipher = createCipheriv('aes-256-gcm', key, iv)
      if (aad !== undefined) cipher.setAAD(aad)
      const body = cipher.update(payloadText(p), 'utf8')
      cipher.final()
      return Buffer.concat([iv, body, cipher.getAuthTag()])
    },
    decrypt(p, stored) {
      const ct = stored as Buffer
      const decipher = createDecipheriv('aes-256-gcm', key, ct.subarray(0, 12))
      if (aad !== undefined) decipher.setAAD(aad)
      decipher.setAuthTag(ct.subarray(ct.length - 16))
      const text = decipher.update(ct.subarray(12, ct.length - 16)).toString('utf8')
      decipher.final()
      return p.kind === 'text' ? text : JSON.parse(text)
    },
    ...(aad === undefined
      ? { index: (p: Payload) => createHmac('sha256', macKey).update(payloadText(p), 'utf8').digest() }
      : {}),
  }
}

/** @47ng/cloak, as prisma-field-encryption uses it: the sync API with a parsed key. No blind index. */
function cloak(): FieldLibrary {
  const key = parseKeySync(generateKey())
  return {
    id: 'cloak',
    label: '@47ng/cloak (sync)',
    storage: 'text (base64url, prefixed)',
    async: false,
    encrypt: (p) => encryptStringSync(payloadText(p), key),
    decrypt: (p, stored) => {
      const text = decryptStringSync(stored as string, key)
      return p.kind === 'text' ? text : JSON.parse(text)
    },
  }
}

/** ciphersweet-js EncryptedField with one fast (HMAC/BLAKE2b-based, not Argon2/PBKDF2) 256-bit index. */
function ciphersweet(backend: 'modern' | 'fips'): FieldLibrary {
  const engine = new CipherSweet(
    new StringProvider(randomBytes(32).toString('hex')),
    backend === 'modern' ? new ModernCrypto() : new FIPSCrypto(),
  )
  const field = new EncryptedField(engine, 'users', 'email')
  field.addBlindIndex(new BlindIndex('email_bidx', [], 256, true))
  return {
    id: `ciphersweet-${backend}`,
    label: `ciphersweet-js ${backend === 'modern' ? 'ModernCrypto' : 'FIPSCrypto'}`,
    storage: 'text (base64url, prefixed)',
    indexNote:
      backend === 'modern'
        ? 'fast index: BLAKE2b keyed hash, 256 bits, hex text'
        : 'fast index: PBKDF2-SHA384 with 1 iteration, 256 bits, hex text',
    async: true,
    encrypt: (p) => field.encryptValue(payloadText(p)),
    decrypt: async (p, stored) => {
      const text = (await field.decryptValue(stored as string)).toString('utf8')
      return p.kind === 'text' ? text : JSON.parse(text)
    },
    index: (p) => field.getBlindIndex(payloadText(p), 'email_bidx'),
  }
}

/**
 * AWS Encryption SDK for JavaScript, RawAesKeyringNode (a local AES-256 wrapping key), with or
 * without a caching materials manager. `signed`: the default suite under the default commitment
 * policy (AES-256-GCM, HKDF-SHA512, key commitment, ECDSA P-384 signature); otherwise the same
 * without the signature. No blind index.
 */
function awsEsdk(cached: boolean, signed: boolean): FieldLibrary {
  const { encrypt, decrypt } = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
  const keyring = new RawAesKeyringNode({
    keyName: 'bench',
    keyNamespace: 'bench',
    unencryptedMasterKey: randomBytes(32),
    wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
  })
  const cmm = cached
    ? new NodeCachingMaterialsManager({
        backingMaterials: keyring,
        cache: getLocalCryptographicMaterialsCache(100),
        maxAge: 5 * 60_000,
        maxMessagesEncrypted: 2 ** 32,
      })
    : keyring
  const suiteId = signed
    ? AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
    : AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY
  const encryptionContext = { table: 'users', column: 'email' }
  return {
    id: `aws-esdk${signed ? '-signed' : ''}${cached ? '-cached' : ''}`,
    label: `AWS Encryption SDK, raw AES keyring${signed ? ', default suite (ECDSA-signed)' : ', unsigned suite'}${cached ? ', caching CMM' : ''}`,
    storage: 'binary',
    async: true,
    encrypt: async (p) => (await encrypt(cmm, payloadText(p), { encryptionContext, suiteId })).result,
    decrypt: async (p, stored) => {
      const text = (await decrypt(cmm, stored as Buffer)).plaintext.toString('utf8')
      return p.kind === 'text' ? text : JSON.parse(text)
    },
  }
}

/** Every contender, ours first, then the floor and the floor with an AAD. */
export function fieldLibraries(): FieldLibrary[] {
  return [
    ours(),
    floor(),
    floorWithAad(),
    cloak(),
    ciphersweet('modern'),
    ciphersweet('fips'),
    awsEsdk(false, true),
    awsEsdk(true, true),
    awsEsdk(false, false),
    awsEsdk(true, false),
  ]
}
