import { randomBytes } from 'node:crypto'
import { KeyMaterial } from '../../../src/keys/key-material.js'
import type { KeyPurpose } from '../../../src/keys/key-provider.js'

/** An in-memory key for blind-index tests: random bytes unless given. */
export function testKey(
  options: { version?: number; purpose?: KeyPurpose; table?: string; bytes?: Buffer } = {},
): KeyMaterial {
  return new KeyMaterial(
    {
      logicalTable: options.table ?? 'users',
      purpose: options.purpose ?? 'index',
      version: options.version ?? 1,
    },
    options.bytes === undefined ? randomBytes(32) : Buffer.from(options.bytes),
  )
}
