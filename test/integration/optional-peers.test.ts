import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..')

/**
 * `@aws-sdk/client-kms` and `graphene-pk11` are optional peer dependencies: an application that
 * installed neither imports `kysely-field-encryption/aws-kms` and `/pkcs11` without an error, and
 * the provider's first call fails with a typed CONFIG_INVALID naming the package to install (not
 * a module-not-found at import). In a child process whose module hook resolves both as missing.
 */
describe('optional peer dependencies not installed', () => {
  /** Each provider's first call in a child process whose hook hides the peers (`mode`). */
  const firstCalls = (mode: 'missing' | 'broken') => {
    const script = `
      const { awsKmsKeyProvider } = await import(${JSON.stringify(join(ROOT, 'src/aws-kms.ts'))})
      const { pkcs11KeyProvider } = await import(${JSON.stringify(join(ROOT, 'src/pkcs11.ts'))})
      const { KeyProviderError } = await import(${JSON.stringify(join(ROOT, 'src/index.ts'))})
      const ref = { logicalTable: 'users', purpose: 'data', version: 1 }
      const out = {}
      // A loopback endpoint: nothing is sent anywhere (the SDK never loads).
      const kms = awsKmsKeyProvider({ keyId: 'alias/kfe', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9' })
      const hsm = pkcs11KeyProvider({ module: '/nonexistent/libpkcs11.so', tokenLabel: 'kfe', pin: '1', keyLabel: 'kek' })
      for (const [name, provider] of [['kms', kms], ['hsm', hsm]]) {
        const e = await provider.generateDataKey(ref).then(() => undefined, (x) => x)
        out[name] = { typed: e instanceof KeyProviderError, code: e?.code, message: e?.message }
        await provider.close()
      }
      console.log(JSON.stringify(out))
    `
    const stdout = execFileSync(
      process.execPath,
      [
        '--import',
        'tsx',
        '--import',
        join(ROOT, 'test/support/hide-optional-peers.mjs'),
        '--input-type=module',
        '-e',
        script,
      ],
      { cwd: ROOT, encoding: 'utf8', env: { ...process.env, KFE_TEST_PEERS: mode } },
    )
    return JSON.parse(stdout.trim().split('\n').at(-1) as string)
  }

  it('each provider subpath imports, and its first call says which package to install', () => {
    const out = firstCalls('missing')
    expect(out.kms).toEqual({
      typed: true,
      code: 'CONFIG_INVALID',
      message:
        'The AWS KMS provider needs the optional peer dependency @aws-sdk/client-kms: npm install @aws-sdk/client-kms.',
    })
    expect(out.hsm).toEqual({
      typed: true,
      code: 'CONFIG_INVALID',
      message:
        'The PKCS#11 provider needs the optional peer dependency graphene-pk11: npm install graphene-pk11.',
    })
  }, 60_000)

  it('a package that is installed but fails to load (a dependency of its own missing) is not called missing', () => {
    const out = firstCalls('broken')
    expect(out.kms).toEqual({
      typed: true,
      code: 'CONFIG_INVALID',
      message: 'The AWS KMS provider could not load @aws-sdk/client-kms, which is installed (see the cause).',
    })
    expect(out.hsm.message).toBe(
      'The PKCS#11 provider could not load graphene-pk11, which is installed (see the cause).',
    )
  }, 60_000)
})
