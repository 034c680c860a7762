import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError, KeyProviderError } from '../../../src/errors.js'
import type { KeyRef } from '../../../src/keys/key-provider.js'
import { localKeyProvider } from '../../../src/keys/local-provider.js'

const ref: KeyRef = { logicalTable: 'users', purpose: 'data', version: 1 }
const kekHex = randomBytes(32).toString('hex')
const dir = mkdtempSync(join(tmpdir(), 'kfe-local-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

async function expectCode(p: Promise<unknown> | (() => unknown), code: string, cls: unknown): Promise<void> {
  try {
    if (typeof p === 'function') p()
    else await p
  } catch (error) {
    expect(error).toBeInstanceOf(cls)
    expect((error as { code: string }).code).toBe(code)
    return
  }
  expect.fail(`expected ${code}`)
}

describe('localKeyProvider', () => {
  it('round-trips a generated key', async () => {
    const kek = localKeyProvider({ key: kekHex })
    expect(kek.id).toBe('local:default')
    const { plaintext, wrapped } = await kek.generateDataKey(ref)
    expect(plaintext).toHaveLength(32)
    expect(wrapped.kekId).toBe('local:default')
    expect(wrapped.wrapped).toHaveLength(61)
    expect(wrapped.wrapped[0]).toBe(0x01)
    const back = await kek.unwrap(wrapped, ref)
    expect(back.equals(plaintext)).toBe(true)
  })

  it('round-trips any key and ref (property)', async () => {
    const kek = localKeyProvider({ id: 'local:prop', key: kekHex })
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.string({ minLength: 1, maxLength: 40 }),
        fc.constantFrom('data' as const, 'index' as const),
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        async (bytes, logicalTable, purpose, version) => {
          const r: KeyRef = { logicalTable, purpose, version }
          const wrapped = await kek.rewrap(
            { wrapped: { kekId: 'x', wrapped: new Uint8Array() }, plaintext: async () => Buffer.from(bytes) },
            r,
          )
          expect((await kek.unwrap(wrapped, r)).equals(Buffer.from(bytes))).toBe(true)
        },
      ),
      { numRuns: 50 },
    )
  })

  it('binds the wrapping to table, purpose, version and kek id: a wrong ref is UNWRAP_FAILED', async () => {
    const kek = localKeyProvider({ key: kekHex })
    const { wrapped } = await kek.generateDataKey(ref)
    for (const other of [
      { ...ref, logicalTable: 'orders' },
      { ...ref, purpose: 'index' as const },
      { ...ref, version: 2 },
    ]) {
      await expectCode(kek.unwrap(wrapped, other), 'UNWRAP_FAILED', KeyProviderError)
    }
    // Same key bytes under another id: the id is in the AAD.
    const renamed = localKeyProvider({ id: 'local:other', key: kekHex })
    await expectCode(
      renamed.unwrap({ ...wrapped, kekId: 'local:other' }, ref),
      'UNWRAP_FAILED',
      KeyProviderError,
    )
    // Another KEK.
    const otherKek = localKeyProvider({ key: randomBytes(32) })
    await expectCode(otherKek.unwrap(wrapped, ref), 'UNWRAP_FAILED', KeyProviderError)
  })

  it('refuses a tampered or truncated wrapping', async () => {
    const kek = localKeyProvider({ key: kekHex })
    const { wrapped } = await kek.generateDataKey(ref)
    const flipped = Uint8Array.from(wrapped.wrapped)
    flipped[20] = (flipped[20] ?? 0) ^ 1
    await expectCode(kek.unwrap({ ...wrapped, wrapped: flipped }, ref), 'UNWRAP_FAILED', KeyProviderError)
    await expectCode(
      kek.unwrap({ ...wrapped, wrapped: wrapped.wrapped.subarray(0, 40) }, ref),
      'PROVIDER_INVALID_CIPHERTEXT',
      KeyProviderError,
    )
  })

  it('uses a fresh nonce per wrap', async () => {
    const kek = localKeyProvider({ key: kekHex })
    const key = randomBytes(32)
    const a = await kek.rewrap(
      { wrapped: { kekId: 'x', wrapped: new Uint8Array() }, plaintext: async () => Buffer.from(key) },
      ref,
    )
    const b = await kek.rewrap(
      { wrapped: { kekId: 'x', wrapped: new Uint8Array() }, plaintext: async () => Buffer.from(key) },
      ref,
    )
    expect(Buffer.from(a.wrapped).equals(Buffer.from(b.wrapped))).toBe(false)
  })

  it('zeroes the plaintext it was handed by rewrap', async () => {
    const kek = localKeyProvider({ key: kekHex })
    const plaintext = randomBytes(32)
    const wrapped = await kek.rewrap(
      { wrapped: { kekId: 'x', wrapped: new Uint8Array() }, plaintext: async () => plaintext },
      ref,
    )
    expect(plaintext.every((b) => b === 0)).toBe(true)
    expect(wrapped.kekId).toBe('local:default')
  })

  it('refuses weak keys with WEAK_KEY', async () => {
    const patterned = Buffer.alloc(32)
    for (let i = 0; i < 32; i++) patterned[i] = [0xde, 0xad, 0xbe, 0xef][i % 4] ?? 0
    const halfRepeat = randomBytes(16)
    const twice = Buffer.concat([halfRepeat, halfRepeat])
    const sequence = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 7 + 3) % 256))
    for (const key of [
      Buffer.alloc(32), // all zeros
      Buffer.alloc(32, 0xff), // one repeated byte
      randomBytes(31), // 31 bytes
      randomBytes(33),
      patterned, // repeated pattern
      twice, // a 16-byte pattern twice
      sequence, // sequential bytes
      'ab'.repeat(32),
      randomBytes(16).toString('hex'), // 128-bit key in hex
    ]) {
      await expectCode(() => localKeyProvider({ key }), 'WEAK_KEY', ConfigError)
    }
  })

  it('refuses unparsable text and a bad id with CONFIG_INVALID', async () => {
    await expectCode(() => localKeyProvider({ key: 'not a key at all!' }), 'CONFIG_INVALID', ConfigError)
    await expectCode(() => localKeyProvider({ key: 'zz'.repeat(32) }), 'CONFIG_INVALID', ConfigError)
    await expectCode(() => localKeyProvider({ id: 'kms:x', key: kekHex }), 'CONFIG_INVALID', ConfigError)
    await expectCode(() => localKeyProvider({ id: 'local:', key: kekHex }), 'CONFIG_INVALID', ConfigError)
  })

  it('reads hex and base64 inline, from an environment variable and from a file', async () => {
    const raw = randomBytes(32)
    const hex = raw.toString('hex')
    const b64 = raw.toString('base64')
    expect(b64).toHaveLength(44)
    const sources = [
      localKeyProvider({ id: 'local:hex', key: hex }),
      localKeyProvider({ id: 'local:hex', key: hex.toUpperCase() }),
      localKeyProvider({ id: 'local:hex', key: b64 }),
      localKeyProvider({ id: 'local:hex', key: Uint8Array.from(raw) }),
    ]
    process.env.KFE_TEST_LOCAL_KEK = `${b64}\n`
    sources.push(localKeyProvider({ id: 'local:hex', env: 'KFE_TEST_LOCAL_KEK' }))
    const hexFile = join(dir, 'kek.hex')
    writeFileSync(hexFile, `${hex}\n`)
    sources.push(localKeyProvider({ id: 'local:hex', file: hexFile }))
    const rawFile = join(dir, 'kek.bin')
    writeFileSync(rawFile, raw)
    sources.push(localKeyProvider({ id: 'local:hex', file: rawFile }))
    delete process.env.KFE_TEST_LOCAL_KEK

    const { plaintext, wrapped } = await (sources[0] ?? expect.fail()).generateDataKey(ref)
    for (const source of sources) expect((await source.unwrap(wrapped, ref)).equals(plaintext)).toBe(true)
  })

  it('names a missing environment variable or file, never its content', async () => {
    delete process.env.KFE_TEST_MISSING
    try {
      localKeyProvider({ env: 'KFE_TEST_MISSING' })
      expect.fail('expected CONFIG_INVALID')
    } catch (error) {
      expect((error as ConfigError).code).toBe('CONFIG_INVALID')
      expect((error as Error).message).toContain('KFE_TEST_MISSING')
    }
    const missing = join(dir, 'nope.key')
    try {
      localKeyProvider({ file: missing })
      expect.fail('expected CONFIG_INVALID')
    } catch (error) {
      expect((error as ConfigError).code).toBe('CONFIG_INVALID')
      expect((error as Error).message).toContain(missing)
    }
    const secret = 'q'.repeat(50)
    process.env.KFE_TEST_BAD = secret
    try {
      localKeyProvider({ env: 'KFE_TEST_BAD' })
      expect.fail('expected CONFIG_INVALID')
    } catch (error) {
      expect((error as ConfigError).code).toBe('CONFIG_INVALID')
      expect((error as Error).message).not.toContain(secret)
    } finally {
      delete process.env.KFE_TEST_BAD
    }
  })

  it('never shows key bytes in JSON.stringify, inspect or String', async () => {
    const raw = randomBytes(32)
    const kek = localKeyProvider({ id: 'local:redact', key: Uint8Array.from(raw) })
    for (const shown of [JSON.stringify(kek), inspect(kek, { showHidden: true, depth: 10 }), String(kek)]) {
      expect(shown).toContain('local:redact')
      expect(shown).not.toContain(raw.toString('hex'))
      expect(shown).not.toContain(raw.toString('base64'))
      expect(shown).toContain('redacted')
    }
  })

  it('close() zeroes the KEK: later calls fail with PROVIDER_UNAVAILABLE', async () => {
    const kek = localKeyProvider({ key: kekHex })
    const { wrapped } = await kek.generateDataKey(ref)
    await kek.close()
    await expectCode(kek.unwrap(wrapped, ref), 'PROVIDER_UNAVAILABLE', KeyProviderError)
    await expectCode(kek.generateDataKey(ref), 'PROVIDER_UNAVAILABLE', KeyProviderError)
  })

  it('several local KEKs coexist under different ids', async () => {
    const a = localKeyProvider({ id: 'local:2025', key: randomBytes(32) })
    const b = localKeyProvider({ id: 'local:2026', key: randomBytes(32) })
    const { plaintext, wrapped } = await a.generateDataKey(ref)
    const moved = await b.rewrap({ wrapped, plaintext: () => a.unwrap(wrapped, ref) }, ref)
    expect(moved.kekId).toBe('local:2026')
    expect((await b.unwrap(moved, ref)).equals(plaintext)).toBe(true)
    await expectCode(b.unwrap(wrapped, ref), 'UNWRAP_FAILED', KeyProviderError)
  })
})
