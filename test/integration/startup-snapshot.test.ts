import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'

/**
 * Processes started from one V8 startup snapshot share the heap it saved. The snapshot's code
 * here encrypts once while it is built (a warm-up, under an unrelated key): before the fix the
 * random pool was saved with the bytes it had drawn, and every process started from the snapshot
 * drew the same salt and nonce, under the same data key loaded after start (AES-GCM nonce reuse).
 * Each process must draw its own.
 */
describe('processes started from one V8 startup snapshot', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kfe-snapshot-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('draw different salts and nonces under the same data key', () => {
    const src = resolve(__dirname, '../../src')
    const entry = join(dir, 'entry.ts')
    writeFileSync(
      entry,
      `import v8 from 'node:v8'
import { codecs } from ${JSON.stringify(join(src, 'fields/codecs.ts'))}
import { encryptValue } from ${JSON.stringify(join(src, 'fields/field-cipher.ts'))}
import { KeyMaterial } from ${JSON.stringify(join(src, 'keys/key-material.ts'))}
const key = (table: string, byte: number) =>
  new KeyMaterial({ logicalTable: table, purpose: 'data', version: 1 }, Buffer.alloc(32, byte))
encryptValue(codecs.text, 'warm-up', key('w', 9), { table: 'w', column: 'w' })
v8.startupSnapshot.setDeserializeMainFunction(() => {
  const ct = encryptValue(codecs.text, 'alice@example.com', key('users', 7), { table: 'users', column: 'email' })
  // header (type, key version, salt: 4 bytes) then the 12-byte nonce
  console.log(ct.subarray(2, 16).toString('hex'))
})
`,
    )
    const bundle = join(dir, 'entry.cjs')
    const esbuild = resolve(__dirname, '../../node_modules/.bin/esbuild')
    execFileSync(esbuild, [
      entry,
      '--bundle',
      '--platform=node',
      '--format=cjs',
      `--outfile=${bundle}`,
      '--log-level=warning',
    ])
    const blob = join(dir, 'snap.blob')
    execFileSync(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', bundle], { stdio: 'pipe' })
    const run = () =>
      execFileSync(process.execPath, ['--snapshot-blob', blob, bundle], { encoding: 'utf8' }).trim()
    const [a, b] = [run(), run()]
    expect(a).toMatch(/^[0-9a-f]{28}$/)
    expect(b).toMatch(/^[0-9a-f]{28}$/)
    expect(a).not.toBe(b)
  }, 60_000)
})
