import { createHash } from 'node:crypto'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { kwpOpen } from '../../../src/keys/providers/pkcs11-wrap.js'

/**
 * The AES_KEY_WRAP_PAD unwrap copies the key out of a session object, then destroys the object.
 * A destroy that fails is thrown, and the copy made for the caller, never returned, is zeroed
 * with the rest (before, it was left in memory). The HSM's session object here is a stand-in:
 * SoftHSM2 does not fail a destroy on demand; the real unwrap runs in pkcs11-provider.test.ts.
 */
describe('kwpOpen: a session object whose destroy fails', () => {
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('throws the destroy error and zeroes the key copy and the payload', async () => {
    const aad = Buffer.from('kfe aad')
    const key = Buffer.alloc(32, 0xab)
    const payload = Buffer.concat([key, createHash('sha256').update(aad).digest()])
    const object = {
      getAttribute: () => ({ value: payload }),
      destroy: () => {
        throw new Error('CKR_DEVICE_ERROR')
      },
    }
    const session = {
      unwrapKey: (
        _m: unknown,
        _k: unknown,
        _d: unknown,
        _t: unknown,
        done: (e: unknown, r: unknown) => void,
      ) => done(null, object),
    }
    const g = { ObjectClass: { SECRET_KEY: 4 }, KeyType: { GENERIC_SECRET: 16 } }
    const copies: Buffer[] = []
    const from = Buffer.from.bind(Buffer)
    vi.spyOn(Buffer, 'from').mockImplementation(((...args: Parameters<typeof Buffer.from>) => {
      const made = (from as (...a: unknown[]) => Buffer)(...args)
      copies.push(made)
      return made
    }) as typeof Buffer.from)
    const error = await kwpOpen(
      g as never,
      { session, kek: {} } as never,
      Buffer.concat([Buffer.from([1]), Buffer.alloc(40)]),
      aad,
    ).catch((e: unknown) => e)
    expect(error).toMatchObject({ message: 'CKR_DEVICE_ERROR' })
    const keyCopies = copies.filter((c) => c.length === 32)
    expect(keyCopies.length).toBe(1)
    expect(keyCopies[0]!.every((b) => b === 0)).toBe(true)
    expect(payload.every((b) => b === 0)).toBe(true)
  })
})
