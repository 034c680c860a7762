import { createCipheriv, createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import type * as Graphene from 'graphene-pk11'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { FieldEncryptionError, KeyProviderError } from '../../src/errors.js'
import type { KeyRef } from '../../src/keys/key-provider.js'
import {
  acquirePkcs11Module,
  encodeKeyRef,
  generatePkcs11Kek,
  type Pkcs11KeyProvider,
  type Pkcs11ProviderOptions,
  pkcs11KeyProvider,
  releasePkcs11Module,
} from '../../src/keys/providers/pkcs11-provider.js'
import { createSoftHsmToken, type SoftHsmToken, softHsmAvailable } from '../support/softhsm.js'

const KEK = 'kfe-kek-main'
const users: KeyRef = { logicalTable: 'users', purpose: 'data', version: 1 }
const orders: KeyRef = { logicalTable: 'orders', purpose: 'data', version: 1 }

describe.runIf(softHsmAvailable)('pkcs11KeyProvider on SoftHSM2', () => {
  let token: SoftHsmToken
  const open: Pkcs11KeyProvider[] = []
  /** Every error seen, checked at the end for leaked PINs or key bytes. */
  const seen: unknown[] = []
  const secrets: string[] = []

  const provider = (extra: Partial<Pkcs11ProviderOptions> = {}): Pkcs11KeyProvider => {
    const p = pkcs11KeyProvider({
      module: token.module,
      tokenLabel: token.tokenLabel,
      pin: token.pin,
      keyLabel: KEK,
      ...extra,
    })
    open.push(p)
    return p
  }

  async function expectCode(promise: Promise<unknown>, code: string): Promise<KeyProviderError> {
    const error = await promise.then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(KeyProviderError)
    expect((error as KeyProviderError).code).toBe(code)
    seen.push(error)
    return error as KeyProviderError
  }

  /** Runs `fn` with the test's own session on the token (the library is shared, refcounted). */
  async function withSession<T>(fn: (s: Graphene.Session, g: typeof Graphene) => T | Promise<T>): Promise<T> {
    const shared = await acquirePkcs11Module(token.module)
    const slots = shared.module.getSlots(true)
    let slot: Graphene.Slot | undefined
    for (let i = 0; i < slots.length; i++) {
      if (slots.items(i).getToken().label === token.tokenLabel) slot = slots.items(i)
    }
    const session = (slot as Graphene.Slot).open(
      shared.g.SessionFlag.SERIAL_SESSION | shared.g.SessionFlag.RW_SESSION,
    )
    try {
      try {
        session.login(token.pin)
      } catch (e) {
        if (!String(e).includes('CKR_USER_ALREADY_LOGGED_IN')) throw e
      }
      return await fn(session, shared.g)
    } finally {
      try {
        session.close()
      } catch {
        // closeAll() in `fn` already closed it.
      }
      releasePkcs11Module(token.module, shared)
    }
  }

  beforeAll(async () => {
    token = await createSoftHsmToken()
    secrets.push(token.pin, token.soPin)
    await generatePkcs11Kek({
      module: token.module,
      tokenLabel: token.tokenLabel,
      pin: token.pin,
      keyLabel: KEK,
    })
  })

  afterEach(async () => {
    for (const p of open.splice(0)) await p.close()
  })

  afterAll(() => {
    token?.cleanup()
  })

  it('round-trips a data key with AES-GCM (default) and binds the default id to token and label', async () => {
    const p = provider()
    expect(p.id).toBe(`pkcs11:${token.tokenLabel}/${KEK}`)
    const { plaintext, wrapped } = await p.generateDataKey(users)
    secrets.push(plaintext.toString('hex'))
    expect(plaintext).toHaveLength(32)
    expect(wrapped.kekId).toBe(p.id)
    expect(wrapped.wrapped).toHaveLength(61)
    expect(wrapped.wrapped[0]).toBe(0x01)
    expect((await p.unwrap(wrapped, users)).equals(plaintext)).toBe(true)
    // Two wrappings of keys never share an IV (random 96-bit IVs).
    const again = await p.generateDataKey(users)
    expect(
      Buffer.from(again.wrapped.wrapped.subarray(1, 13)).equals(Buffer.from(wrapped.wrapped.subarray(1, 13))),
    ).toBe(false)
  })

  it('round-trips with AES_KEY_WRAP_PAD, and either mechanism reads the other one’s wrappings', async () => {
    const kwp = provider({ mechanism: 'AES_KEY_WRAP_PAD' })
    const gcm = provider({ sessions: 1 })
    const a = await kwp.generateDataKey(users)
    secrets.push(a.plaintext.toString('hex'))
    expect(a.wrapped.wrapped).toHaveLength(73)
    expect(a.wrapped.wrapped[0]).toBe(0x02)
    expect((await kwp.unwrap(a.wrapped, users)).equals(a.plaintext)).toBe(true)
    expect((await gcm.unwrap(a.wrapped, users)).equals(a.plaintext)).toBe(true)
    const b = await gcm.generateDataKey(orders)
    expect((await kwp.unwrap(b.wrapped, orders)).equals(b.plaintext)).toBe(true)
  })

  it('refuses to unwrap under another KeyRef, a tampered wrapping, a short one or another KEK id', async () => {
    for (const mechanism of ['AES_GCM', 'AES_KEY_WRAP_PAD'] as const) {
      const p = provider({ mechanism })
      const { wrapped } = await p.generateDataKey(users)
      await expectCode(p.unwrap(wrapped, orders), 'UNWRAP_FAILED')
      await expectCode(p.unwrap(wrapped, { ...users, purpose: 'index' }), 'UNWRAP_FAILED')
      await expectCode(p.unwrap(wrapped, { ...users, version: 2 }), 'UNWRAP_FAILED')
      const tampered = Uint8Array.from(wrapped.wrapped)
      tampered[20] = (tampered[20] ?? 0) ^ 1
      const error = await expectCode(p.unwrap({ ...wrapped, wrapped: tampered }, users), 'UNWRAP_FAILED')
      expect(error.providerId).toBe(p.id)
      expect(error.table).toBe('users')
      await expectCode(
        p.unwrap({ ...wrapped, wrapped: wrapped.wrapped.subarray(0, 40) }, users),
        'PROVIDER_INVALID_CIPHERTEXT',
      )
      await expectCode(
        p.unwrap({ ...wrapped, kekId: 'pkcs11:other/kek' }, users),
        'PROVIDER_INVALID_CIPHERTEXT',
      )
    }
  })

  it('rewraps from another source and zeroes the plaintext copy it was given', async () => {
    const p = provider()
    const original = randomBytes(32)
    const copy = Buffer.from(original)
    const wrapped = await p.rewrap(
      { wrapped: { kekId: 'local:old', wrapped: new Uint8Array(1) }, plaintext: async () => copy },
      users,
    )
    expect(copy.equals(Buffer.alloc(32))).toBe(true)
    expect((await p.unwrap(wrapped, users)).equals(original)).toBe(true)
  })

  it('creates the KEK as a sensitive, non-extractable AES-256 token key', async () => {
    await withSession((s, g) => {
      const found = s.find({ class: g.ObjectClass.SECRET_KEY, label: KEK })
      expect(found.length).toBe(1)
      const key = found.items(0).toType<Graphene.SecretKey>()
      const attrs = key.getAttribute({
        keyType: null,
        valueLen: null,
        token: null,
        private: null,
        sensitive: null,
        extractable: null,
        alwaysSensitive: null,
        neverExtractable: null,
        encrypt: null,
        decrypt: null,
        wrap: null,
        unwrap: null,
      })
      expect(attrs).toEqual({
        keyType: g.KeyType.AES,
        valueLen: 32,
        token: true,
        private: true,
        sensitive: true,
        extractable: false,
        alwaysSensitive: true,
        neverExtractable: true,
        encrypt: true,
        decrypt: true,
        wrap: true,
        unwrap: true,
      })
      // The token refuses to reveal the value (CKR_ATTRIBUTE_SENSITIVE).
      expect(() => key.getAttribute({ value: null })).toThrow(/CKR_ATTRIBUTE_SENSITIVE/)
    })
    await expectCode(
      generatePkcs11Kek({
        module: token.module,
        tokenLabel: token.tokenLabel,
        pin: token.pin,
        keyLabel: KEK,
      }),
      'CONFIG_INVALID',
    )
  })

  it('names the missing key label in a CONFIG_INVALID error', async () => {
    const p = provider({ keyLabel: 'no-such-kek' })
    const error = await expectCode(p.generateDataKey(users), 'CONFIG_INVALID')
    expect(error.message).toContain('"no-such-kek"')
  })

  it('maps a wrong PIN to PROVIDER_ACCESS_DENIED (nothing else logged in)', async () => {
    const p = provider({ pin: 'wrong-pin' })
    const error = await expectCode(p.generateDataKey(users), 'PROVIDER_ACCESS_DENIED')
    expect(error.message).toContain('CKR_PIN_INCORRECT')
    expect(error.message).not.toContain('wrong-pin')
  })

  it('a PIN the token found incorrect is not tried again for a minute unless it changes (a token locks its user after a few)', async () => {
    process.env.KFE_TEST_HSM_PIN_LOCK = 'wrong-pin'
    const p = provider({ pin: undefined, pinEnv: 'KFE_TEST_HSM_PIN_LOCK' })
    const first = await expectCode(p.generateDataKey(users), 'PROVIDER_ACCESS_DENIED')
    expect(first.message).toContain('CKR_PIN_INCORRECT')
    // Concurrent and later calls with the same PIN: refused without a login.
    const again = await Promise.all(
      [1, 2, 3].map(() => expectCode(p.generateDataKey(users), 'PROVIDER_ACCESS_DENIED')),
    )
    for (const e of again) {
      expect(e.message).toContain('found this PIN incorrect less than a minute ago')
      expect(e.message).not.toContain('wrong-pin')
    }
    // The PIN corrected: the next call logs in.
    process.env.KFE_TEST_HSM_PIN_LOCK = token.pin
    const { plaintext, wrapped } = await p.generateDataKey(users)
    expect((await p.unwrap(wrapped, users)).equals(plaintext)).toBe(true)
    delete process.env.KFE_TEST_HSM_PIN_LOCK
  })

  it('a second provider on the token this process is logged in to is refused with another PIN, which the token would not check', async () => {
    const good = provider()
    // Logs the token in; its session stays in the provider's pool.
    const { plaintext, wrapped } = await good.generateDataKey(users)
    const wrong = provider({ pin: 'wrong-pin' })
    const error = await expectCode(wrong.unwrap(wrapped, users), 'PROVIDER_ACCESS_DENIED')
    expect(error.message).toContain('with another PIN')
    expect(error.providerId).toBe(wrong.id)
    expect(error.message).not.toContain('wrong-pin')
    // The right PIN shares the login.
    expect((await provider().unwrap(wrapped, users)).equals(plaintext)).toBe(true)
  })

  it('reads the PIN from pinEnv and finds the token by slot ID', async () => {
    const slot = await withSession((s) => {
      const h = s.slot.handle
      return Number(h.readBigUInt64LE(0))
    })
    process.env.KFE_TEST_HSM_PIN = token.pin
    const p = provider({ tokenLabel: undefined, slot, pin: undefined, pinEnv: 'KFE_TEST_HSM_PIN' })
    expect(p.id).toBe(`pkcs11:${slot}/${KEK}`)
    const { plaintext, wrapped } = await p.generateDataKey(users)
    expect((await p.unwrap(wrapped, users)).equals(plaintext)).toBe(true)
    expect(JSON.stringify(p)).toContain('[from $KFE_TEST_HSM_PIN]')
    delete process.env.KFE_TEST_HSM_PIN
  })

  it('rejects contradictory options at once', () => {
    const base = { module: '/x.so', keyLabel: 'k', pin: '1' }
    for (const bad of [
      { ...base },
      { ...base, slot: 1, tokenLabel: 't' },
      { ...base, tokenLabel: 't', pinEnv: 'P' },
      { ...base, tokenLabel: 't', sessions: 0 },
      { ...base, tokenLabel: 't', keyLabel: '' },
      { ...base, tokenLabel: 't', mechanism: 'AES_CBC' as 'AES_GCM' },
    ]) {
      expect(() => pkcs11KeyProvider(bad)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }))
    }
  })

  it('serves 50 concurrent unwraps on a pool of 2 sessions', async () => {
    const p = provider({ sessions: 2 })
    const keys = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        p.generateDataKey({ logicalTable: `t${i}`, purpose: 'data', version: 1 }),
      ),
    )
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => {
        const k = i % 10
        return p.unwrap((keys[k] as (typeof keys)[number]).wrapped, {
          logicalTable: `t${k}`,
          purpose: 'data',
          version: 1,
        })
      }),
    )
    results.forEach((r, i) => {
      expect(r.equals((keys[i % 10] as (typeof keys)[number]).plaintext)).toBe(true)
    })
  })

  it('reopens and logs in again after its sessions were closed behind its back (C_CloseAllSessions)', async () => {
    const p = provider({ sessions: 2 })
    const { plaintext, wrapped } = await p.generateDataKey(users)
    await withSession((s) => s.slot.closeAll())
    expect((await p.unwrap(wrapped, users)).equals(plaintext)).toBe(true)
    // Concurrent callers on the dead pool all recover too.
    await withSession((s) => s.slot.closeAll())
    const many = await Promise.all(Array.from({ length: 8 }, () => p.unwrap(wrapped, users)))
    for (const k of many) expect(k.equals(plaintext)).toBe(true)
  })

  it('logs in again after a logout behind its back (CKR_USER_NOT_LOGGED_IN)', async () => {
    const p = provider({ sessions: 1 })
    const { plaintext, wrapped } = await p.generateDataKey(users)
    await withSession((s) => s.logout())
    expect((await p.unwrap(wrapped, users)).equals(plaintext)).toBe(true)
  })

  it('initialises the library again after a C_Finalize behind its back', async () => {
    const p = provider()
    const { plaintext, wrapped } = await p.generateDataKey(users)
    const shared = await acquirePkcs11Module(token.module)
    try {
      shared.module.finalize()
      expect((await p.unwrap(wrapped, users)).equals(plaintext)).toBe(true)
    } finally {
      releasePkcs11Module(token.module, shared)
    }
  })

  it('fails with PROVIDER_UNAVAILABLE while the token is gone, and recovers when it is back', async () => {
    const p = provider()
    const { plaintext, wrapped } = await p.generateDataKey(users)
    const shared = await acquirePkcs11Module(token.module)
    const emptyDir = mkdtempSync(join(tmpdir(), 'kfe-softhsm-empty-'))
    const emptyConf = join(emptyDir, 'softhsm2.conf')
    writeFileSync(
      emptyConf,
      `directories.tokendir = ${emptyDir}\nobjectstore.backend = file\nlog.level = ERROR\n`,
    )
    try {
      // SoftHSM2 reads SOFTHSM2_CONF at C_Initialize: after this the token has "disappeared".
      process.env.SOFTHSM2_CONF = emptyConf
      shared.module.finalize()
      const error = await expectCode(p.unwrap(wrapped, users), 'PROVIDER_UNAVAILABLE')
      expect(error.message).toContain(token.tokenLabel)
      await expectCode(p.unwrap(wrapped, users), 'PROVIDER_UNAVAILABLE')
    } finally {
      process.env.SOFTHSM2_CONF = token.conf
      shared.module.finalize()
      releasePkcs11Module(token.module, shared)
      rmSync(emptyDir, { recursive: true, force: true })
    }
    expect((await p.unwrap(wrapped, users)).equals(plaintext)).toBe(true)
  })

  it('a KEK deleted after the provider used it is PROVIDER_KEY_DISABLED (a revocation, as a deleted KMS key), not a setup error', async () => {
    await generatePkcs11Kek({
      module: token.module,
      tokenLabel: token.tokenLabel,
      pin: token.pin,
      keyLabel: 'kfe-kek-deleted',
    })
    const p = provider({ keyLabel: 'kfe-kek-deleted', sessions: 1 })
    const { wrapped, plaintext } = await p.generateDataKey(users)
    plaintext.fill(0)
    await withSession((s, g) => {
      const found = s.find({ class: g.ObjectClass.SECRET_KEY, label: 'kfe-kek-deleted' })
      for (let i = 0; i < found.length; i++) found.items(i).destroy()
      // Its pooled session (and KEK handle) go too: the next call opens a session and looks again.
      s.slot.closeAll()
    })
    await expectCode(p.unwrap(wrapped, users), 'PROVIDER_KEY_DISABLED')
    // A provider that never found it: a setup error, as before.
    await expectCode(provider({ keyLabel: 'kfe-kek-deleted' }).generateDataKey(users), 'CONFIG_INVALID')
  })

  it('maps a KEK that may not encrypt to PROVIDER_KEY_DISABLED', async () => {
    await withSession((s, g) => {
      s.generateKey(g.KeyGenMechanism.AES, {
        class: g.ObjectClass.SECRET_KEY,
        keyType: g.KeyType.AES,
        valueLen: 32,
        label: 'kfe-kek-no-encrypt',
        token: true,
        private: true,
        sensitive: true,
        extractable: false,
        encrypt: false,
        decrypt: false,
      })
    })
    const p = provider({ keyLabel: 'kfe-kek-no-encrypt' })
    const error = await expectCode(p.generateDataKey(users), 'PROVIDER_KEY_DISABLED')
    expect(error.message).toContain('kfe-kek-no-encrypt')
  })

  it('throws PROVIDER_UNAVAILABLE after close(), and close() is idempotent', async () => {
    const p = provider()
    const { wrapped } = await p.generateDataKey(users)
    await p.close()
    await p.close()
    await expectCode(p.unwrap(wrapped, users), 'PROVIDER_UNAVAILABLE')
    await expectCode(p.generateDataKey(users), 'PROVIDER_UNAVAILABLE')
  })

  it('matches node:crypto byte for byte under a known test KEK (GCM and RFC 5649)', async () => {
    const known = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex')
    // A session object: it lives as long as this test's session and never touches the token store.
    const shared = await acquirePkcs11Module(token.module)
    const slots = shared.module.getSlots(true)
    let slot: Graphene.Slot | undefined
    for (let i = 0; i < slots.length; i++) {
      if (slots.items(i).getToken().label === token.tokenLabel) slot = slots.items(i)
    }
    const session = (slot as Graphene.Slot).open(shared.g.SessionFlag.SERIAL_SESSION)
    try {
      session.login(token.pin)
      session.create({
        class: shared.g.ObjectClass.SECRET_KEY,
        keyType: shared.g.KeyType.AES,
        token: false,
        label: 'kfe-known-test-kek',
        value: known,
        sensitive: true,
        extractable: false,
        encrypt: true,
        decrypt: true,
        wrap: true,
        unwrap: true,
      })
      const aad = encodeKeyRef(users)

      const gcm = provider({ keyLabel: 'kfe-known-test-kek' })
      const g = await gcm.generateDataKey(users)
      const bytes = Buffer.from(g.wrapped.wrapped)
      const iv = bytes.subarray(1, 13)
      const cipher = createCipheriv('aes-256-gcm', known, iv).setAAD(aad)
      const expected = Buffer.concat([cipher.update(g.plaintext), cipher.final(), cipher.getAuthTag()])
      expect(bytes.subarray(13).equals(expected)).toBe(true)

      const kwp = provider({ keyLabel: 'kfe-known-test-kek', mechanism: 'AES_KEY_WRAP_PAD' })
      const k = await kwp.generateDataKey(users)
      const payload = Buffer.concat([k.plaintext, createHash('sha256').update(aad).digest()])
      // RFC 5649 §3: the alternative IV A65959A6 || MLI is implied by node's 4-byte IV.
      const wrap = createCipheriv('id-aes256-wrap-pad', known, Buffer.from('A65959A6', 'hex'))
      const node = Buffer.concat([wrap.update(payload), wrap.final()])
      expect(Buffer.from(k.wrapped.wrapped).subarray(1).equals(node)).toBe(true)
      for (const p of open.splice(0)) await p.close()
    } finally {
      session.close()
      releasePkcs11Module(token.module, shared)
    }
  })

  it('keeps PINs and key bytes out of messages, causes, JSON and inspect', async () => {
    const p = provider()
    const texts = [JSON.stringify(p), inspect(p), String(p), inspect(p, { showHidden: true, depth: 5 })]
    expect(JSON.parse(JSON.stringify(p)).pin).toBe('[redacted]')
    for (const e of seen) {
      texts.push(String(e), inspect(e, { depth: 5 }), JSON.stringify(e))
      expect(e).toBeInstanceOf(FieldEncryptionError)
    }
    expect(seen.length).toBeGreaterThan(10)
    for (const text of texts) {
      for (const secret of secrets) expect(text).not.toContain(secret)
    }
  })
})
