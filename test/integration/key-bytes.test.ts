/**
 * Key bytes never share Node's 8 KiB allocation pool (issue 13): every key and subkey has a
 * backing buffer of its own, and ciphertexts handed to callers are allocated outside the pool (in
 * slabs of ciphertexts only), so `structuredClone(ct)`, `postMessage(ct)` or `ct.buffer` cannot
 * carry key bytes or plaintext along.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hkdfSha256 } from '../../src/fields/hkdf.js'
import { KeyMaterial } from '../../src/index.js'
import { backends } from '../support/backends.js'
import { type EncryptedTestDb, encryptedTestDb } from '../support/encrypted-db.js'

/** True when `haystack` contains `needle` anywhere. */
function contains(haystack: ArrayBufferLike, needle: Uint8Array): boolean {
  return Buffer.from(haystack).indexOf(Buffer.from(needle)) !== -1
}

const pglite = backends().find((b) => b.name === 'pglite')

describe.runIf(pglite !== undefined)('key bytes live outside the shared Buffer pool', () => {
  let t: EncryptedTestDb
  beforeAll(async () => {
    t = await encryptedTestDb(pglite!)
  })
  afterAll(async () => {
    await t.destroy()
  })

  it("every data and index key's buffer is exactly its own length", async () => {
    const ring = t.encryption.keyRing()
    for (const purpose of ['data', 'index'] as const) {
      const key = await ring.activeKey(t.names.users, purpose)
      expect(key.bytes.length).toBe(32)
      expect(key.bytes.buffer.byteLength).toBe(32)
      expect(key.bytes.byteOffset).toBe(0)
    }
  })

  it('a KeyMaterial given pooled bytes moves them into a buffer of their own and zeroes the pooled copy', () => {
    const pooled = Buffer.from(randomBytes(32)) // Buffer.from(<32 bytes>) is a slice of the pool
    expect(pooled.buffer.byteLength).toBeGreaterThan(32)
    const copy = Buffer.from(pooled)
    const key = new KeyMaterial({ logicalTable: 't', purpose: 'data', version: 1 }, pooled)
    expect(key.bytes.buffer.byteLength).toBe(32)
    expect(key.bytes.equals(copy)).toBe(true)
    expect(pooled.every((b) => b === 0)).toBe(true)
    key.destroy()
  })

  it('a derived subkey shorter than a hash has its own buffer', () => {
    const out = hkdfSha256(randomBytes(32), Buffer.alloc(0), Buffer.from('info'), 16)
    expect(out.buffer.byteLength).toBe(16)
  })

  it("a ciphertext's backing buffer is a slab of ciphertexts only: no key bytes, no plaintext, not Buffer's pool", async () => {
    const ring = t.encryption.keyRing()
    const data = await ring.activeKey(t.names.users, 'data')
    const index = await ring.activeKey(t.names.users, 'index')
    // Pooled neighbours: were ciphertexts sliced from Buffer's pool, these would share their buffer.
    const pooled = [Buffer.from(data.bytes), Buffer.from(index.bytes), Buffer.from('x'.repeat(200))]
    for (const value of ['a@x.io', 'x'.repeat(200), 'y'.repeat(9000)]) {
      // ssn: no maxBytes (email's 320 would refuse the 9,000-byte value).
      const ct = await t.encryption.encrypt(t.names.users, 'ssn', value)
      for (const p of pooled) expect(ct.buffer).not.toBe(p.buffer)
      const cloned = structuredClone(ct)
      for (const bytes of [ct.buffer, cloned.buffer]) {
        expect(contains(bytes, data.bytes)).toBe(false)
        expect(contains(bytes, index.bytes)).toBe(false)
        expect(contains(bytes, Buffer.from(value))).toBe(false)
      }
      // One ciphertext alone, for a caller that sends it somewhere.
      expect(new Uint8Array(ct).buffer.byteLength).toBe(ct.length)
    }
    // A read through the plugin decrypts what it wrote.
    await t.db.insertInto(t.names.users).values({ name: 'k', email: 'k@x.io' }).execute()
    expect(
      await t.db.selectFrom(t.names.users).select('email').where('email', '=', 'k@x.io').execute(),
    ).toEqual([{ email: 'k@x.io' }])
  })
})
